analyze onnx/mlp.onnx --dim batch=2 --dot "$TBP_TMP/g.dot" > /dev/null && head -n 3 "$TBP_TMP/g.dot"
