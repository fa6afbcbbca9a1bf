run onnx/mlp.onnx --dim batch=4096 --budget 80% --scratch measured --verify --format json
