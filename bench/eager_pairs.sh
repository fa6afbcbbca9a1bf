#!/usr/bin/env bash
# Store-all through tbp against PyTorch eager on the same exported model (issue 4's "within 5 %
# of PyTorch eager"), as interleaved pairs: each pair runs `tbp run` (store-all) and
# bench/pytorch_step.py back to back, alternating which goes first, and the figure is the median
# of the per-pair ratios tbp / eager. One process per side cannot be paired inside a process the
# way `tbp run --baseline` pairs its steps, and this machine's process-to-process noise (20-50 %
# on a shared 2-core VM) swamps a single comparison; interleaving puts both sides of a pair under
# the same machine load. Eager runs with tbp's malloc settings (MALLOC_MMAP_MAX_=0,
# MALLOC_TRIM_THRESHOLD_=1 GiB; runtime.md "What is measured"), so kernels are compared with
# kernels. Writes results/bench_eager_pairs.json.
#
#   bench/eager_pairs.sh [--pairs N] [--steps N] [--threads N] [--only NAME,...]
#     NAME: gpt2 resnet50 resnet50_b192 unet (the models and sizes of bench/run_bench.sh)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAIRS=5
STEPS=3
THREADS=1
ONLY=""
USAGE="usage: $0 [--pairs N] [--steps N] [--threads N] [--only NAME,...]"
source "$ROOT/bench/exported_cases.sh"
benchParseArgs "$@"
for n in "$PAIRS" "$STEPS" "$THREADS"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --pairs, --steps and --threads take a positive integer, not '$n'" >&2; exit 2; }
done
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "$0: /usr/bin/python3 cannot import torch (apt install python3-torch)" >&2; exit 2; }
benchPrepare
ERR="$(mktemp)"
trap 'rm -f "$ERR"' EXIT
tbpStep() { # FILE DIMS -> median step seconds of a store-all tbp run
  "$TBP" run "$MODELS/$1" $2 --steps "$STEPS" --warmup 1 --threads "$THREADS" --format json 2>"$ERR" |
    tr -d '\n ' | sed -nE 's/.*"step_time_s":([0-9.e+-]+).*/\1/p'
}
eagerStep() { # PYARGS -> median step seconds of PyTorch eager
  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 \
    /usr/bin/python3 "$ROOT/bench/pytorch_step.py" $1 --steps "$STEPS" --threads "$THREADS" 2>"$ERR" |
    sed -nE 's/.*"median_step_s": ([0-9.e+-]+).*/\1/p'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rows=()
printf '%-13s %5s %9s %9s %7s\n' model pair tbp_s eager_s ratio
for c in "${CASES[@]}"; do
  IFS='|' read -r name file dims pyargs <<<"$c"
  benchSelected "$name" || continue
  ratios=(); tbps=(); eagers=()
  for ((p = 1; p <= PAIRS; p++)); do
    if ((p % 2)); then t="$(tbpStep "$file" "$dims")"; e="$(eagerStep "$pyargs")"
    else e="$(eagerStep "$pyargs")"; t="$(tbpStep "$file" "$dims")"; fi
    if [ -z "$t" ] || [ -z "$e" ]; then
      echo "$name: pair $p failed: $(tail -n1 "$ERR")" >&2
      exit 1
    fi
    r="$(awk -v a="$t" -v b="$e" 'BEGIN { printf "%.4f", a / b }')"
    printf '%-13s %5d %9.3f %9.3f %6.3fx\n' "$name" "$p" "$t" "$e" "$r"
    ratios+=("$r"); tbps+=("$t"); eagers+=("$e")
  done
  med="$(printf '%s\n' "${ratios[@]}" | median)"
  lo="$(printf '%s\n' "${ratios[@]}" | sort -g | head -n1)"
  hi="$(printf '%s\n' "${ratios[@]}" | sort -g | tail -n1)"
  printf '%-13s median tbp/eager %.3fx over %d pairs (range %.3f-%.3f)\n' "$name" "$med" "$PAIRS" "$lo" "$hi"
  join() { local IFS=,; echo "$*"; }
  rows+=("{\"model\": \"$name\", \"pairs\": $PAIRS, \"steps\": $STEPS, \"threads\": $THREADS, \"tbp_store_all_step_s\": [$(join "${tbps[@]}")], \"eager_step_s\": [$(join "${eagers[@]}")], \"ratios\": [$(join "${ratios[@]}")], \"median_ratio\": $med}")
done
{ echo "["; (IFS=$'\n'; echo "${rows[*]}" | sed '$!s/$/,/'); echo "]"; } > "$ROOT/results/bench_eager_pairs.json.tmp"
mv "$ROOT/results/bench_eager_pairs.json.tmp" "$ROOT/results/bench_eager_pairs.json"
