analyze onnx/mlp.onnx --dim batch=2 --dim seq=4
