run onnx/mlp.onnx --dim batch=16 --input input=onnx/mlp.onnx
