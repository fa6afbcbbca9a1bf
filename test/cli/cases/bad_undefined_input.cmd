analyze bad/undefined_input.onnx
