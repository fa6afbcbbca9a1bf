#!/usr/bin/env bash
# Planner figures: plan time and peak RSS on synthetic graphs of 1k..1M nodes (chain,
# transformer-like, random DAG), and every planner on resnet50 and the GPT-2-style model at 30%,
# 50% and 70% of the store-all peak. Prints tables; writes results/bench_plan.json.
#
#   bench/plan_bench.sh [--sizes "1000 10000 100000 1000000"] [--models-dir DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZES="1000 10000 100000 1000000"
MODELS="$ROOT/build/model-zoo"
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES="$2"; shift ;;
    --models-dir) MODELS="$2"; shift ;;
    *) echo "usage: $0 [--sizes \"N ...\"] [--models-dir DIR]" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$ROOT/build/tools/tbp" ] || "$ROOT/run_full_test.sh" --skip-tests --quiet
cmake --build "$ROOT/build" --target tbp_bench_plan >/dev/null
TBP="$ROOT/build/tools/tbp"
mkdir -p "$MODELS" "$ROOT/results"
for m in resnet50 gpt2; do
  [ -f "$MODELS/${m}_op17_train.onnx" ] ||
    /usr/bin/python3 "$ROOT/models/export_models.py" --out "$MODELS" --only "$m" --opset 17 --mode train >/dev/null
done

scaling=()
echo "synthetic graphs (optimal planner at 50% of store-all, 64 stages)"
printf '%-12s %8s %10s %10s %10s %10s\n' graph nodes orders_s stages_s plan_s rss_MiB
for kind in chain transformer random; do
  for n in $SIZES; do
    line="$("$ROOT/build/bench/tbp_bench_plan" "$kind" "$n")"
    scaling+=("$line")
    get() { sed -E "s/.*\"$1\": ([^,}]*).*/\1/" <<<"$line"; }
    printf '%-12s %8s %10s %10s %10s %10s\n' "$kind" "$(get nodes)" "$(get orders_s)" "$(get stage_model_s)" "$(get plan_s)" \
      "$(( $(get peak_rss_bytes) / 1048576 ))"
  done
done

models=()
echo
echo "models: every planner at 70%, 50%, 30% of the store-all peak"
for spec in "resnet50_op17_train.onnx --dim batch=128" "gpt2_op17_train.onnx --dim batch=32 --dim seq=128"; do
  read -r file dims <<<"$spec"
  for pct in 70 50 30; do
    echo "== $file $dims at $pct%"
    "$TBP" plan "$MODELS/$file" $dims --budget "$pct%" --planner all | tail -n 6 || true
    json="$("$TBP" plan "$MODELS/$file" $dims --budget "$pct%" --planner all --format json 2>/dev/null || true)"
    models+=("{\"model\": \"$file\", \"args\": \"$dims\", \"budget_pct\": $pct, \"planners\": $(tr -d '\n' <<<"$json")}")
  done
done

{
  echo "{\"scaling\": ["
  (IFS=$'\n'; echo "${scaling[*]}" | sed '$!s/$/,/')
  echo "], \"models\": ["
  (IFS=$'\n'; echo "${models[*]}" | sed '$!s/$/,/')
  echo "]}"
} > "$ROOT/results/bench_plan.json.tmp"
mv "$ROOT/results/bench_plan.json.tmp" "$ROOT/results/bench_plan.json"
echo
echo "wrote results/bench_plan.json"
