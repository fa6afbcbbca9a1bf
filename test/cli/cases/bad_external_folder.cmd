analyze bad/external_folder/model.onnx
