compare onnx/mlp.onnx onnx/mlp.onnx
