analyze onnx/gpt2_tiny_op17_train.onnx --dim batch=2 --dim seq=64
