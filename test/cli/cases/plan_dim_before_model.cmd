plan --dim batch=64 --freeze fc1.bias onnx/mlp.onnx --budget 80% --format json | grep -E '"(predicted_peak_bytes|budget_bytes)"'
