analyze onnx/mlp.onnx --dim batch=4 --format json
