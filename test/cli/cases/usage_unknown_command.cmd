analyse onnx/mlp.onnx
