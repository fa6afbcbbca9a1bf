analyze bad/unsupported_ops.onnx
