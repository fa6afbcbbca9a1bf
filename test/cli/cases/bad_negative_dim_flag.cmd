analyze onnx/mlp.onnx --dim batch=-2
