plan onnx/mlp.onnx --dim batch=64
