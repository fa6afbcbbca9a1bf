analyze onnx/mlp.onnx --workload chain
