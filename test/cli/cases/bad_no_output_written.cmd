analyze bad/cycle.onnx --dot "$TBP_TMP/never.dot"; echo "exit $?"; ls "$TBP_TMP"
