analyze bad/cycle.onnx
