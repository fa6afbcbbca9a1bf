run onnx/mlp.onnx --dim batch=64 --scratch sometimes
