analyze bad/external_escape/model.onnx
