run onnx/mlp.onnx --dim batch=1024 --optimizer adam --lr 0.01 --steps 2 --format json --verify
