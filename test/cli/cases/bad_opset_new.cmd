analyze bad/opset_too_new.onnx
