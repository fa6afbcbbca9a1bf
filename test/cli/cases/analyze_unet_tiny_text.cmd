analyze onnx/unet_tiny_op17_train.onnx --dim batch=2 --order dfs
