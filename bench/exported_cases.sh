# Sourced by bench/run_bench.sh and bench/eager_pairs.sh: their shared option parsing, the
# exported models and sizes they run, and getting tbp and those models in place.
# Expects ROOT, USAGE, STEPS, THREADS, ONLY set (and PAIRS, when --pairs is an option).

# name  file  tbp dims  pytorch args
# The first four are the default set (a few seconds a step at one thread). At the GPT-2's and
# resnet50's sizes 30 % of the store-all peak is below the smallest feasible schedule
# (parameters, their gradients and the widest op's working set); the `_30` cases are the
# smallest sizes of those models where a 30 % schedule exists (smallest feasible peak /
# store-all peak, `tbp plan --budget min --max-stages 96`: GPT-2 b16 27 %, resnet50 b512 29 %).
# They take 3-12 s a step at one thread and run only when --only names them. The U-Net runs at
# batch 32 (smallest feasible 26 %), which has both: since its GroupNorms and SiLUs are fused
# and its 1x1 convolutions run on oneDNN (2026-12-05) a batch-12 step took 1.1 s, and at batch
# 8 50 % (smallest feasible 56 %) does not exist.
CASES=(
  "gpt2|gpt2_op17_train.onnx|--dim batch=8 --dim seq=128|gpt2 8 --seq 128"
  "resnet50|resnet50_op17_train.onnx|--dim batch=96|resnet50 96"
  "resnet50_b192|resnet50_op17_train.onnx|--dim batch=192|resnet50 192"
  "unet|unet_op17_train.onnx|--dim batch=32|unet 32"
  "gpt2_30|gpt2_op17_train.onnx|--dim batch=16 --dim seq=128|gpt2 16 --seq 128"
  "resnet50_30|resnet50_op17_train.onnx|--dim batch=512|resnet50 512"
)

# Whether case NAME runs: named by --only, or (without --only) one of the default set.
benchSelected() {
  if [ -n "$ONLY" ]; then [[ ",$ONLY," == *",$1,"* ]]; else [[ "$1" != *_30 ]]; fi
}

benchParseArgs() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --steps) STEPS="$2"; shift ;;
      --threads) THREADS="$2"; shift ;;
      --only) ONLY="$2"; shift ;;
      --pairs) [ -n "${PAIRS+set}" ] || { echo "$USAGE" >&2; exit 2; }; PAIRS="$2"; shift ;;
      *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
  done
}

# Builds tbp when missing and exports the models CASES names; sets TBP and MODELS.
benchPrepare() {
  [ -x "$ROOT/build/tools/tbp" ] || "$ROOT/run_full_test.sh" --skip-tests --quiet
  TBP="$ROOT/build/tools/tbp"
  MODELS="$ROOT/build/model-zoo"
  mkdir -p "$MODELS" "$ROOT/results"
  for m in gpt2 resnet50 unet; do
    [ -f "$MODELS/${m}_op17_train.onnx" ] ||
      /usr/bin/python3 "$ROOT/models/export_models.py" --out "$MODELS" --only "$m" --opset 17 --mode train >/dev/null
  done
}
