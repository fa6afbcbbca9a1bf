analyze bad/external_data/model.onnx --format json
