analyze bad/negative_dim.onnx
