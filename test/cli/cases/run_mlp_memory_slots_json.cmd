run onnx/mlp.onnx --dim batch=4096 --budget 75% --memory-slots 8 --verify --format json
