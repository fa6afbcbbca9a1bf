analyze bad/opset_out_of_range.onnx
