profile onnx/mlp.onnx --dim batch=64 --threads 1 --repeats 2 -o -
