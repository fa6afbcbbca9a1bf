analyze bad/truncated.onnx
