plan onnx/mlp.onnx --dim batch=64 --budget 80% --costs mesured
