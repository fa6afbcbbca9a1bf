analyze bad/no_such_model.onnx
