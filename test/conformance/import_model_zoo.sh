#!/usr/bin/env bash
# Exports the models/ zoo (torchvision resnet18, resnet50, mobilenet_v3_small, densenet121,
# efficientnet_b0, convnext_tiny, vit_b_16; GPT-2-style, BERT-style, U-Net) at opsets 13 and 17,
# in eval and training mode, into the build tree (once; reused while the export script is
# unchanged), then checks that `tbp analyze` imports every file and reports sane numbers.
#
#   import_model_zoo.sh TBP PYTHON SOURCE_DIR OUT_DIR
set -uo pipefail
TBP="$1"; PY="$2"; SRC="$3"; OUT="$4"
mkdir -p "$OUT"
stamp="$OUT/.exported-$(sha1sum "$SRC/models/export_models.py" "$SRC/models/archs.py" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  rm -f "$OUT"/*.onnx "$OUT"/.exported-*
  for opset in 13 17; do
    for mode in eval train; do
      "$PY" "$SRC/models/export_models.py" --out "$OUT" --opset "$opset" --mode "$mode" >/dev/null || {
        echo "FAIL: export at opset $opset, $mode mode"; exit 1; }
    done
  done
  touch "$stamp"
fi
pass=0; fail=0
for f in "$OUT"/*.onnx; do
  name="$(basename "$f")"
  case "$name" in
    gpt2*|bert*) dims=(--dim batch=2 --dim seq=16) ;;
    *) dims=(--dim batch=2) ;;
  esac
  if json="$("$TBP" analyze "$f" "${dims[@]}" --format json 2>&1)" &&
     grep -q '"store_all_peak_bytes"' <<<"$json" &&
     ! grep -q '"parameter_bytes": 0,' <<<"$json"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $name: $(head -c 400 <<<"$json")"
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ] && [ "$pass" -ge 40 ]
