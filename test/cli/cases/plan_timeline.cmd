plan onnx/gpt2_tiny_op17_train.onnx --dim batch=8 --dim seq=16 --budget 88% --timeline "$TBP_TMP/t.svg" >/dev/null && head -c 120 "$TBP_TMP/t.svg" && echo && grep -c '<rect' "$TBP_TMP/t.svg"
