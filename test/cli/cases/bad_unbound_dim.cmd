analyze bad/unbound_dim.onnx
