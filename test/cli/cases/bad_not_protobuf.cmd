analyze bad/not_protobuf.onnx
