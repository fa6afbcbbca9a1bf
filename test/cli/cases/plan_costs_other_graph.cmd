plan onnx/mlp.onnx --dim batch=32 --budget 80% --costs costs/mlp_b64.json
