analyze bad/overflow.onnx
