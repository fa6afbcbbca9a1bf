run onnx/mlp.onnx --dim batch=64 --budget 80% --baseline --steps 2 --format json
