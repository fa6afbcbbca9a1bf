plan onnx/gpt2_tiny_op17_train.onnx --dim batch=8 --dim seq=16 --budget min --planner all --format json
