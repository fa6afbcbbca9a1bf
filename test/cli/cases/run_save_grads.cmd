run onnx/mlp.onnx --dim batch=16 --budget 95% --save-grads "$TBP_TMP/g" > /dev/null; echo "exit $?"; ls "$TBP_TMP/g"; grep -c "\"name\"" "$TBP_TMP/g/manifest.json"
