analyze onnx/mlp.onnx --dim batch=4
