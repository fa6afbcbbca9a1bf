analyze onnx/mlp.onnx --frobnicate
