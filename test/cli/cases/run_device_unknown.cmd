run onnx/mlp.onnx --dim batch=64 --device tpu
