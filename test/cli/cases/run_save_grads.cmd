run onnx/mlp.onnx --dim batch=64 --budget 80% --save-grads "$TBP_TMP/g" > /dev/null; echo "exit $?"; ls "$TBP_TMP/g"; grep -c "\"name\"" "$TBP_TMP/g/manifest.json"
