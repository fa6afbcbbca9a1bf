plan onnx/mlp.onnx --dim batch=64 --budget 80% --costs costs/mlp_b64.json
