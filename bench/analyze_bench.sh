#!/usr/bin/env bash
# Wall time and peak RSS of `tbp analyze` on resnet50 and the GPT-2-style decoder, plus the
# text report of resnet18. Prints a table and writes results/bench_analyze.json.
#
#   bench/analyze_bench.sh [--trials N] [--models-dir DIR]
#
# Models are exported with models/export_models.py (Debian's /usr/bin/python3) into
# build/model-zoo unless they are there already.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRIALS=5
MODELS="$ROOT/build/model-zoo"
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) TRIALS="$2"; shift ;;
    --models-dir) MODELS="$2"; shift ;;
    *) echo "usage: $0 [--trials N] [--models-dir DIR]" >&2; exit 2 ;;
  esac
  shift
done
TBP="$ROOT/build/tools/tbp"
[ -x "$TBP" ] || "$ROOT/run_full_test.sh" --skip-tests --quiet
mkdir -p "$MODELS" "$ROOT/results"
for m in resnet18 resnet50 gpt2; do
  [ -f "$MODELS/${m}_op17_train.onnx" ] ||
    /usr/bin/python3 "$ROOT/models/export_models.py" --out "$MODELS" --only "$m" --opset 17 --mode train >/dev/null
done

# name  file  dims
CASES=(
  "resnet50_b32     resnet50_op17_train.onnx  --dim batch=32"
  "gpt2_b8_s128     gpt2_op17_train.onnx      --dim batch=8 --dim seq=128"
  "resnet18_b32     resnet18_op17_train.onnx  --dim batch=32"
)
entries=()
printf '%-14s %6s %12s %12s %10s %16s\n' model nodes median_s min_s rss_MiB store_all_peak
for c in "${CASES[@]}"; do
  read -r name file dims <<<"$c"
  times=(); rss=0
  for _ in $(seq "$TRIALS"); do
    out="$( { /usr/bin/time -f '%e %M' "$TBP" analyze "$MODELS/$file" $dims --format json >/tmp/tbp_bench_analyze.json; } 2>&1 | tail -n1)"
    times+=("${out% *}")
    r="${out#* }"; [ "$r" -gt "$rss" ] && rss="$r"
  done
  sorted=($(printf '%s\n' "${times[@]}" | sort -g))
  median="${sorted[$((TRIALS / 2))]}"
  nodes="$(grep -m1 '"nodes"' /tmp/tbp_bench_analyze.json | tr -dc 0-9)"
  peak="$(grep -m1 '"store_all_peak_bytes"' /tmp/tbp_bench_analyze.json | tr -dc 0-9)"
  printf '%-14s %6s %12s %12s %10s %16s\n' "$name" "$nodes" "$median" "${sorted[0]}" "$((rss / 1024))" "$peak"
  entries+=("{\"model\": \"$name\", \"file\": \"$file\", \"args\": \"$dims\", \"nodes\": $nodes, \"trials\": $TRIALS, \"median_wall_s\": $median, \"min_wall_s\": ${sorted[0]}, \"peak_rss_bytes\": $((rss * 1024)), \"store_all_peak_bytes\": $peak}")
done
{ echo "["; (IFS=,; echo "  ${entries[*]}" | sed 's/},{/},\n  {/g'); echo "]"; } > "$ROOT/results/bench_analyze.json.tmp" && mv "$ROOT/results/bench_analyze.json.tmp" "$ROOT/results/bench_analyze.json"
echo
echo "tbp analyze resnet18_op17_train.onnx --dim batch=32:"
"$TBP" analyze "$MODELS/resnet18_op17_train.onnx" --dim batch=32
