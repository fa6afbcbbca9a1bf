plan onnx/mlp.onnx --dim batch=64 --budget min --costs costs/mlp_b64_cuda_scratch.json
