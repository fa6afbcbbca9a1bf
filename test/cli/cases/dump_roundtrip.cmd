dump onnx/bert_tiny_op17_eval.onnx --dim batch=2 --dim seq=8 -o "$TBP_TMP/b.tbp" && "$TBP" dump "$TBP_TMP/b.tbp" > "$TBP_TMP/b2.tbp" && cmp "$TBP_TMP/b.tbp" "$TBP_TMP/b2.tbp" && echo identical
