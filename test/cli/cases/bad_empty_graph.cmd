analyze bad/empty_graph.onnx
