run onnx/mlp.onnx --dim batch=16 --input nope=x.npy
