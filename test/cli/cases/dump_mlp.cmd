dump onnx/mlp.onnx --dim batch=2
