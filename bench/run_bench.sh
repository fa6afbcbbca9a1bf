#!/usr/bin/env bash
# Runtime figures (issue 4): store-all, then sqrt and optimal at 50% and 30% of the store-all
# peak, for the GPT-2-style decoder, resnet50 (batch 96, and 192: the same parameters with twice
# the activations) and the U-Net, through `tbp run`; the optimal
# planner twice at 50 %: priced by the static estimate and by measured op times
# (`--costs measured`); and PyTorch eager's store-all step on the same model and threads.
# Step ratios are given for the median step and for the fastest one, both against the
# store-all run (another process), and as pair_r: `tbp run --baseline` times a store-all step
# next to each step in the same process and reports the median of the per-pair ratios, which
# this machine's process-to-process noise (20-50 %) does not reach. Writes results/bench_run.json,
# or results/bench_run_<names>.json with --only (so a partial run keeps the full one).
#
#   bench/run_bench.sh [--steps N] [--threads N] [--only NAME,...]
#     default set: gpt2 resnet50 resnet50_b192 unet (batch 32); with --only also gpt2_30 and
#     resnet50_30, the sizes where a 30 % schedule exists (bench/exported_cases.sh)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STEPS=3
THREADS="$(nproc)"
ONLY=""
USAGE="usage: $0 [--steps N] [--threads N] [--only NAME,...]"
source "$ROOT/bench/exported_cases.sh"
benchParseArgs "$@"
benchPrepare
rows=()
printf '%-13s %-17s %-7s %12s %12s %8s %9s %6s %6s %7s %8s %s\n' model planner budget measured predicted error step_s ratio min_r pair_r recomp grads
for c in "${CASES[@]}"; do
  IFS='|' read -r name file dims pyargs <<<"$c"
  benchSelected "$name" || continue
  eager="$(/usr/bin/python3 "$ROOT/bench/pytorch_step.py" $pyargs --steps "$STEPS" --threads "$THREADS" 2>/dev/null)"
  eagerS="$(sed -E 's/.*"median_step_s": ([0-9.e-]+).*/\1/' <<<"$eager")"
  base=""
  baseMin=""
  for run in "store-all||estimate" "sqrt|50%|estimate" "optimal|50%|estimate" "optimal|50%|measured" "sqrt|30%|estimate" "optimal|30%|estimate"; do
    IFS='|' read -r planner budget costs <<<"$run"
    # --baseline: a store-all step timed next to each step in the same process (pair_r).
    b=(); [ -n "$budget" ] && b=(--budget "$budget" --planner "$planner" --costs "$costs" --baseline)
    label="$planner"; [ "$costs" = measured ] && label="$planner-measured"
    # No --max-stages: the optimal planner keeps the cheapest of 64, 96 and 128 stages, as
    # a user's run does (until 2026-12-05 the bench fixed 96).
    json="$("$TBP" run "$MODELS/$file" $dims "${b[@]}" --steps "$STEPS" --warmup 1 --threads "$THREADS" --verify --format json 2>/tmp/tbp_bench_run.err)"
    if [ -z "$json" ]; then
      printf '%-13s %-17s %-7s %s\n' "$name" "$label" "${budget:-none}" "$(tail -n1 /tmp/tbp_bench_run.err | cut -c1-100)"
      rows+=("{\"model\": \"$name\", \"planner\": \"$planner\", \"costs\": \"$costs\", \"budget\": \"${budget:-none}\", \"error\": \"$(tail -n1 /tmp/tbp_bench_run.err | tr -d '"')\"}")
      continue
    fi
    get() { tr -d '\n ' <<<"$json" | sed -E "s/.*\"$1\":([^,}]*).*/\1/"; }
    step="$(get step_time_s)"
    stepMin="$(get step_time_min_s)"
    [ -z "$base" ] && base="$step" && baseMin="$stepMin"
    ratio="$(awk -v a="$step" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
    ratioMin="$(awk -v a="$stepMin" -v b="$baseMin" 'BEGIN { printf "%.2f", a / b }')"
    err="$(awk -v e="$(get prediction_error)" 'BEGIN { printf "%+.1f%%", 100 * e }')"
    pair="-"; [ -n "$budget" ] && pair="$(awk -v r="$(get step_time_ratio)" 'BEGIN { printf "%.2f", r }')"
    printf '%-13s %-17s %-7s %12s %12s %8s %9s %6s %6s %7s %8s %s\n' "$name" "$label" "${budget:-none}" "$(get measured_peak_bytes)" \
      "$(get predicted_peak_bytes)" "$err" "$step" "$ratio" "$ratioMin" "$pair" "$(get recompute_s)" "$(get passed)"
    rows+=("{\"model\": \"$name\", \"planner\": \"$planner\", \"costs\": \"$costs\", \"budget\": \"${budget:-none}\", \"tbp\": $(tr -d '\n' <<<"$json"), \"step_ratio_to_store_all\": $ratio, \"min_step_ratio_to_store_all\": $ratioMin}")
  done
  echo "$name: PyTorch eager store-all step $eagerS s; tbp store-all $base s ($(awk -v a="$base" -v b="$eagerS" 'BEGIN { printf "%.2f", a / b }')x)"
  rows+=("{\"model\": \"$name\", \"pytorch_eager\": $eager}")
done
out="results/bench_run.json"; [ -n "$ONLY" ] && out="results/bench_run_${ONLY//,/_}.json"
{ echo "["; (IFS=$'\n'; echo "${rows[*]}" | sed '$!s/$/,/'); echo "]"; } > "$ROOT/$out.tmp"
mv "$ROOT/$out.tmp" "$ROOT/$out"
echo "wrote $out"
