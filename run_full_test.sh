#!/usr/bin/env bash
# One-command verification: install what is missing, configure, build, run every test, smoke-run
# every tbp subcommand, benchmark the built-in workloads against memory and step-time thresholds,
# and write results/verification_summary_<UTC timestamp>.json. Exits non-zero on any failure.
#
#   ./run_full_test.sh [--skip-build] [--skip-tests] [--skip-benchmarks] [--setup-only] [--quiet]
#                      [--jobs N] [--build-type TYPE] [--build-dir DIR] [--results-dir DIR]
#                      [--benchmark-profile small|medium|large] [--trials N] [--targets a,b,...]
#                      [--memory-threshold F] [--time-threshold F]
#                      [--with-pytorch | --without-pytorch]
#
# Stages: setup, configure, build, tests (ctest), smoke (every tbp subcommand on the built-in
# chain workload), benchmarks (tbp bench; LibTorch builds only), thresholds (per target, the
# optimal plan at the tightest budget that ran ok must save at least F of the store-all
# activation memory, --memory-threshold, default 0.40; the fastest ok optimal row that saves
# that much must run at most F times store-all's step time, --time-threshold, default 1.30). Defaults: --benchmark-profile small, --trials 1,
# --targets transformer,gpt2,resnet,long_context,unet, and --with-pytorch when
# /usr/bin/python3 can import torch (adds PyTorch checkpoint baselines to the benchmarks).
# Benchmarks run with one intra-op thread on both sides: oneDNN's convolution backward keeps
# per-thread buffers, so measured peaks (and the budget checks) would depend on the machine.
# Each row measures at least 5 s of steps, and the time check compares the fastest steps; a
# check that fails is measured again with store-all and the row paired in one process
# (tbp run --baseline), and so, until one passes, is every other optimal row that saves as much.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SKIP_BUILD=0
SKIP_TESTS=0
SKIP_BENCHMARKS=0
SETUP_ONLY=0
JOBS="$(nproc 2>/dev/null || echo 2)"
BUILD_TYPE="RelWithDebInfo"
BUILD_DIR="$ROOT/build"
RESULTS_DIR="$ROOT/results"
QUIET=0
PROFILE="small"
TRIALS=1
TARGETS="transformer,gpt2,resnet,long_context,unet"
MEMORY_THRESHOLD="0.40"
TIME_THRESHOLD="1.30"
WITH_PYTORCH=""      # 1 | 0 | empty: detect after setup
WITH_PYTORCH_FROM="detected"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die_usage() { echo "run_full_test.sh: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value"; } # option value

while [ $# -gt 0 ]; do
  case "$1" in
    --skip-build) SKIP_BUILD=1 ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --skip-benchmarks) SKIP_BENCHMARKS=1 ;;
    --setup-only) SETUP_ONLY=1 ;;
    --quiet) QUIET=1 ;;
    --with-pytorch) WITH_PYTORCH=1; WITH_PYTORCH_FROM="flag" ;;
    --without-pytorch) WITH_PYTORCH=0; WITH_PYTORCH_FROM="flag" ;;
    --jobs) need "$@"; JOBS="$2"; shift ;;
    --jobs=*) JOBS="${1#*=}" ;;
    --build-type) need "$@"; BUILD_TYPE="$2"; shift ;;
    --build-type=*) BUILD_TYPE="${1#*=}" ;;
    --build-dir) need "$@"; BUILD_DIR="$(realpath -m "$2")"; shift ;;
    --build-dir=*) need "${1%%=*}" "${1#*=}"; BUILD_DIR="$(realpath -m "${1#*=}")" ;;
    --results-dir) need "$@"; RESULTS_DIR="$(realpath -m "$2")"; shift ;;
    --results-dir=*) need "${1%%=*}" "${1#*=}"; RESULTS_DIR="$(realpath -m "${1#*=}")" ;;
    --benchmark-profile) need "$@"; PROFILE="$2"; shift ;;
    --benchmark-profile=*) PROFILE="${1#*=}" ;;
    --trials) need "$@"; TRIALS="$2"; shift ;;
    --trials=*) TRIALS="${1#*=}" ;;
    --targets) need "$@"; TARGETS="$2"; shift ;;
    --targets=*) TARGETS="${1#*=}" ;;
    --memory-threshold) need "$@"; MEMORY_THRESHOLD="$2"; shift ;;
    --memory-threshold=*) MEMORY_THRESHOLD="${1#*=}" ;;
    --time-threshold) need "$@"; TIME_THRESHOLD="$2"; shift ;;
    --time-threshold=*) TIME_THRESHOLD="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_full_test.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$JOBS" in ''|*[!0-9]*) die_usage "--jobs needs a positive number" ;; esac
case "$PROFILE" in small|medium|large) ;; *) die_usage "--benchmark-profile must be small, medium or large, not '$PROFILE'" ;; esac
[[ "$TRIALS" =~ ^[1-9][0-9]*$ ]] || die_usage "--trials needs a positive whole number, not '$TRIALS'"
[[ "$TARGETS" =~ ^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*$ ]] \
  || die_usage "--targets needs a comma-separated list of workload names (e.g. gpt2,resnet), not '$TARGETS'"
is_number() { [[ "$1" =~ ^([0-9]+([.][0-9]*)?|[.][0-9]+)$ ]]; }
is_number "$MEMORY_THRESHOLD" && awk -v v="$MEMORY_THRESHOLD" 'BEGIN { exit !(v <= 1) }' \
  || die_usage "--memory-threshold needs a fraction between 0 and 1 (e.g. 0.40), not '$MEMORY_THRESHOLD'"
is_number "$TIME_THRESHOLD" && awk -v v="$TIME_THRESHOLD" 'BEGIN { exit !(v > 0) }' \
  || die_usage "--time-threshold needs a ratio above 0 (e.g. 1.30), not '$TIME_THRESHOLD'"

log() { [ "$QUIET" = 1 ] || echo "== $*" >&2; }

TBP="$BUILD_DIR/tools/tbp"
PY=""                 # Python for JSON (stdlib only); resolved after setup, which installs python3
SMOKE_DIR=""
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tbp-verify.XXXXXX")" || { echo "run_full_test.sh: mktemp failed" >&2; exit 1; }
cleanup() { rm -rf "$WORK"; [ -z "$SMOKE_DIR" ] || rm -rf "$SMOKE_DIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- stage bookkeeping
STAGES_JSON=""        # for the summary written without Python
STAGES_TSV="$WORK/stages.tsv"   # name, status, seconds, detail: for the summary written with Python
SMOKE_TSV="$WORK/smoke.tsv"     # name, status, exit code, command
OVERALL=0
: > "$STAGES_TSV"
: > "$SMOKE_TSV"
json_str() { local s="${1//\\/\\\\}"; printf '"%s"' "${s//\"/\\\"}"; }
one_line() { local s="${1//$'\t'/ }"; s="${s//$'\r'/}"; printf '%s' "${s//$'\n'/; }"; }
record() { # name status seconds detail
  local detail
  detail="$(one_line "$4")"
  STAGES_JSON="${STAGES_JSON:+$STAGES_JSON,}
    {\"name\": \"$1\", \"status\": \"$2\", \"seconds\": $3, \"detail\": $(json_str "$detail")}"
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$detail" >> "$STAGES_TSV"
  [ "$2" = "failed" ] && OVERALL=1
  return 0
}
STAGE_DETAIL=""       # a stage function may set it; otherwise a failure reads "exit status N"
run_stage() { # name command...
  local name="$1"; shift
  log "$name"
  local start end rc
  STAGE_DETAIL=""
  start=$(date +%s)
  "$@"
  rc=$?
  end=$(date +%s)
  if [ "$rc" = 0 ]; then record "$name" passed $((end - start)) "$STAGE_DETAIL"; return 0; fi
  record "$name" failed $((end - start)) "${STAGE_DETAIL:-exit status $rc}"
  return 1
}
skip_stages() { # reason name...
  local reason="$1"; shift
  for s in "$@"; do record "$s" skipped 0 "$reason"; done
}

# ---------------------------------------------------------------- stage 1: setup
# Debian packages tbp builds and tests with (DEVELOPERS.md); only missing ones are installed.
PACKAGES=(cmake ninja-build ccache g++ pkg-config
          libonnx-dev libprotobuf-dev protobuf-compiler libcli11-dev libspdlog-dev
          doctest-dev nlohmann-json3-dev libtorch-dev
          python3 python3-numpy python3-torch python3-torchvision python3-onnx)

setup() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "all ${#PACKAGES[@]} Debian packages present"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "run_full_test.sh: missing Debian packages; as root run:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# Python and PyTorch are looked for after setup, which installs them.
resolve_python() {
  if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3
  elif command -v python3 >/dev/null 2>&1; then PY="$(command -v python3)"; fi
  if [ -z "$WITH_PYTORCH" ]; then
    WITH_PYTORCH=0
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' >/dev/null 2>&1 && WITH_PYTORCH=1
  elif [ "$WITH_PYTORCH" = 1 ] && ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
    echo "run_full_test.sh: warning: --with-pytorch, but /usr/bin/python3 cannot import torch" >&2
  fi
  return 0
}

# ---------------------------------------------------------------- stages 1-2: build and tests
configure() {
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  if [ -f "$BUILD_DIR/CMakeCache.txt" ] && grep -q "^CMAKE_BUILD_TYPE:STRING=$BUILD_TYPE\$" "$BUILD_DIR/CMakeCache.txt"; then
    return 0 # configured already; the build step re-runs cmake when CMakeLists change
  fi
  cmake -S "$ROOT" -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" >&2
}

build() { cmake --build "$BUILD_DIR" -j "$JOBS" >&2; }

tests() { (cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" --timeout 1800); }

have_torch_runtime() { grep -q 'TBP_WITH_TORCH:BOOL=ON' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null; }

# ---------------------------------------------------------------- stage 3: smoke
SMOKE_TIMEOUT=900     # seconds per command
SMOKE_FAILED=0
SMOKE_DETAIL=""
smoke_note() { # name status exit-code command reason
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(one_line "$4")" >> "$SMOKE_TSV"
  SMOKE_DETAIL="${SMOKE_DETAIL:+$SMOKE_DETAIL; }$1: $2${5:+ ($5)}"
}
smoke_cmd() { # name allowed-exit-codes expected-output-file|- command...
  local name="$1" allowed="$2" expect="$3"; shift 3
  local shown="${*//"$TBP"/tbp}" out="$SMOKE_DIR/$name.log" rc ok=0 reason=""
  shown="${shown//"$SMOKE_DIR"/\$TMP}"
  timeout "$SMOKE_TIMEOUT" "$@" > "$out" 2>&1
  rc=$?
  for a in $allowed; do [ "$rc" = "$a" ] && ok=1; done
  if [ "$ok" = 0 ]; then
    reason="exit $rc"; [ "$rc" = 124 ] && reason="timed out after ${SMOKE_TIMEOUT}s"
  elif [ "$expect" != - ] && [ ! -s "$expect" ]; then
    ok=0; reason="exit $rc but no ${expect//"$SMOKE_DIR"/\$TMP}"
  fi
  if [ "$ok" = 1 ]; then
    log "  smoke $name: passed"
    smoke_note "$name" passed "$rc" "$shown" ""
  else
    echo "run_full_test.sh: smoke $name failed ($reason): $shown" >&2
    tail -n 15 "$out" | sed 's/^/    /' >&2
    SMOKE_FAILED=$((SMOKE_FAILED + 1))
    smoke_note "$name" failed "$rc" "$shown" "$reason"
  fi
}
smoke() {
  SMOKE_FAILED=0; SMOKE_DETAIL=""
  if [ ! -x "$TBP" ]; then STAGE_DETAIL="no tbp binary at $TBP"; return 1; fi
  mkdir -p "$RESULTS_DIR" && SMOKE_DIR="$(mktemp -d "$RESULTS_DIR/smoke.XXXXXX")" \
    || { STAGE_DETAIL="cannot make a temporary folder under $RESULTS_DIR"; return 1; }
  local T="$SMOKE_DIR" w=(--workload chain --profile small)
  smoke_cmd version 0 - "$TBP" --version
  smoke_cmd ops 0 - "$TBP" ops
  smoke_cmd analyze 0 - "$TBP" analyze "${w[@]}"
  smoke_cmd dump 0 "$T/chain.tbp" "$TBP" dump "${w[@]}" -o "$T/chain.tbp"
  smoke_cmd plan 0 "$T/a.json" "$TBP" plan "${w[@]}" --budget 60% -o "$T/a.json"
  smoke_cmd plan-sqrt 0 "$T/b.json" "$TBP" plan "${w[@]}" --budget 80% --planner sqrt -o "$T/b.json"
  smoke_cmd compare "0 1" - "$TBP" compare "$T/a.json" "$T/b.json"  # 1: a threshold was crossed
  smoke_cmd export-workload 0 "$T/chain.onnx" "$TBP" export-workload chain --profile small -o "$T/chain.onnx"
  smoke_cmd analyze-onnx 0 - "$TBP" analyze "$T/chain.onnx"
  # The exported model is the workload's graph: a schedule planned on one validates on the other.
  smoke_cmd validate 0 - "$TBP" validate "$T/chain.onnx" "$T/a.json"
  if have_torch_runtime; then
    smoke_cmd run 0 - "$TBP" run "${w[@]}" --budget 60% --verify
    smoke_cmd bench 0 "$T/bench/bench_chain_small.json" "$TBP" bench --profile small --targets chain \
      --modes store-all,optimal --budgets 50% --trials 1 --threads 1 --results-dir "$T/bench"
  else
    smoke_note run skipped "" "tbp run --workload chain --profile small --budget 60% --verify" "built without LibTorch"
    smoke_note bench skipped "" "tbp bench --profile small --targets chain ..." "built without LibTorch"
  fi
  rm -rf "$SMOKE_DIR"; SMOKE_DIR=""
  STAGE_DETAIL="$SMOKE_DETAIL"
  [ "$SMOKE_FAILED" = 0 ]
}

# ---------------------------------------------------------------- stage 4: benchmarks
BENCH_MARKER="$WORK/bench.start"  # bench JSON newer than this was written by this run
benchmarks() {
  if [ ! -x "$TBP" ]; then STAGE_DETAIL="no tbp binary at $TBP"; return 1; fi
  mkdir -p "$RESULTS_DIR" || { STAGE_DETAIL="cannot make $RESULTS_DIR"; return 1; }
  local cmd=("$TBP" bench --profile "$PROFILE" --targets "$TARGETS"
             --modes store-all,sqrt,interval-tree,optimal --budgets 70%,60%,50%,30% --trials "$TRIALS"
             --threads 1 --min-time 5
             --results-dir "$RESULTS_DIR")
  [ "$WITH_PYTORCH" = 1 ] && cmd+=(--with-pytorch)
  log "  ${cmd[*]}"
  touch "$BENCH_MARKER"
  "${cmd[@]}" >&2
  local rc=$? written=0 total=0 t
  for t in ${TARGETS//,/ }; do
    total=$((total + 1))
    [ "$RESULTS_DIR/bench_${t}_${PROFILE}.json" -nt "$BENCH_MARKER" ] && written=$((written + 1))
  done
  case "$rc" in
    0) STAGE_DETAIL="$written/$total bench JSON files written" ;;
    1) STAGE_DETAIL="tbp bench exit 1 (a row neither ok nor infeasible); $written/$total bench JSON files written" ;;
    *) STAGE_DETAIL="tbp bench failed (exit $rc); $written/$total bench JSON files written" ;;
  esac
  [ "$rc" = 0 ] && [ "$written" = "$total" ] && return 0
  [ "$rc" = 0 ] && STAGE_DETAIL="tbp bench exit 0 but only $written/$total bench JSON files written"
  return 1
}

# ---------------------------------------------------------------- stage 5: thresholds, summary
# Python (stdlib json only) reads the bench JSON and writes the summary.
#   py thresholds: writes $WORK/benchmarks.json and $WORK/thresholds.json, prints the stage
#                  detail, exits 0 when every check passed and 1 otherwise.
#   py summary:    writes $TBPV_SUMMARY atomically and prints the tables unless --quiet.
py() {
  TBPV_WORK="$WORK" TBPV_RESULTS_DIR="$RESULTS_DIR" TBPV_PROFILE="$PROFILE" TBPV_TARGETS="$TARGETS" \
  TBPV_MEMORY_THRESHOLD="$MEMORY_THRESHOLD" TBPV_TIME_THRESHOLD="$TIME_THRESHOLD" \
  TBPV_BENCH_MARKER="$BENCH_MARKER" TBPV_QUIET="$QUIET" TBPV_TBP="$TBP" \
  "$PY" - "$@" <<'PY'
import json, math, os, subprocess, sys

E = os.environ
WORK = E["TBPV_WORK"]

def num(x):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return x if math.isfinite(x) else None

def remeasure(target, budget):
    """A failing step-time check is measured again in one process: `tbp run --baseline` times
    a store-all step next to each step of the optimal row, alternating which goes first, for at
    least 10 s, and the median of the per-pair ratios decides (the bench runs the two rows
    minutes apart, in separate processes, and the same run varied by 24-50 % from one process
    to the next here)."""
    tbp = E.get("TBPV_TBP", "")
    cmd = [tbp, "run", "--workload", target, "--profile", E["TBPV_PROFILE"], "--format", "json",
           "--threads", "1", "--warmup", "1", "--steps", "3", "--min-time", "10", "-q",
           "--planner", "optimal", "--budget", budget, "--baseline"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        ratio = num(json.loads(out.stdout).get("step_time_ratio"))
        return round(ratio, 3) if ratio is not None else None
    except Exception:
        return None

def load(name, default):
    try:
        with open(os.path.join(WORK, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default

def tsv(name):
    try:
        with open(os.path.join(WORK, name)) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        return []

def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        return "%.3f" % x
    return str(x)

def thresholds():
    profile = E["TBPV_PROFILE"]
    targets = [t for t in E["TBPV_TARGETS"].split(",") if t]
    mem_t = float(E["TBPV_MEMORY_THRESHOLD"])
    time_t = float(E["TBPV_TIME_THRESHOLD"])
    marker = E.get("TBPV_BENCH_MARKER", "")
    marker_ns = os.stat(marker).st_mtime_ns if marker and os.path.exists(marker) else None
    benchmarks, checks, stale = {}, [], []
    for t in targets:
        path = os.path.join(E["TBPV_RESULTS_DIR"], "bench_%s_%s.json" % (t, profile))
        entry = {"profile": profile, "file": path, "written_this_run": False, "rows": []}
        benchmarks[t] = entry
        doc, err = None, None
        if not os.path.isfile(path):
            err = "no bench JSON (%s)" % os.path.basename(path)
        else:
            entry["written_this_run"] = marker_ns is not None and os.stat(path).st_mtime_ns >= marker_ns
            if not entry["written_this_run"]:
                stale.append(t)
            try:
                with open(path) as f:
                    doc = json.load(f)
            except (OSError, ValueError) as e:
                err = "unreadable bench JSON: %s" % e
            else:
                if not isinstance(doc, dict) or doc.get("format") != "tbp-bench":
                    err = "%s is not a tbp-bench file" % os.path.basename(path)
                elif not isinstance(doc.get("rows"), list):
                    err = "%s has no rows" % os.path.basename(path)
                elif doc.get("target", t) != t or doc.get("profile", profile) != profile:
                    err = "%s is for %s/%s" % (os.path.basename(path), doc.get("target"), doc.get("profile"))
        if err is not None:
            entry["error"] = err
        rows = []
        if err is None:
            for k in ("device", "threads", "trials"):
                if k in doc:
                    entry[k] = doc[k]
            rows = [r for r in doc["rows"] if isinstance(r, dict)]
            for r in rows:
                gc = r.get("grad_check")
                row = {"source": r.get("source"), "mode": r.get("mode"), "budget": r.get("budget"),
                       "status": r.get("status"),
                       "measured_peak_bytes": num(r.get("measured_peak_bytes")),
                       "step_ratio": num(r.get("step_ratio")),
                       "step_ratio_min": num(r.get("step_ratio_min")),
                       "activation_saved_fraction": num(r.get("activation_saved_fraction")),
                       "grad_check_passed": gc.get("passed") if isinstance(gc, dict) else None}
                if "segments" in r:
                    row["segments"] = r["segments"]
                entry["rows"].append(row)
        # The optimal tbp row at the tightest budget among the rows that ran ok.
        reason, chosen = err, None
        if reason is None:
            optimal = [r for r in rows if r.get("source", "tbp") == "tbp" and r.get("mode") == "optimal"]
            ok = [r for r in optimal if r.get("status") == "ok" and num(r.get("budget_fraction")) is not None]
            if ok:
                chosen = min(ok, key=lambda r: r["budget_fraction"])
            elif not optimal:
                reason = "no optimal row"
            else:
                def said(r):
                    err = r.get("error") if r.get("status") not in ("infeasible", "over_budget") else None
                    err = str(err)[:60] if err else None
                    return "%s: %s%s" % (r.get("budget"), r.get("status"), " [%s]" % err if err else "")
                reason = "no optimal row with status ok (%s)" % ", ".join(said(r) for r in optimal)
        # The time check is taken at the operating point the thresholds describe together: the
        # fastest ok optimal row that saves at least the memory threshold (the tightest one when
        # none does).
        # Step times are compared by their fastest measured steps (step_ratio_min) when the bench
        # reports them: on a shared machine noise only ever adds time.
        timed = chosen
        tkey = "step_ratio"
        if chosen is not None:
            if any(num(r.get("step_ratio_min")) is not None for r in ok):
                tkey = "step_ratio_min"
            saving = [r for r in ok if (num(r.get("activation_saved_fraction")) or 0) >= mem_t
                      and num(r.get(tkey)) is not None]
            if saving:
                timed = min(saving, key=lambda r: r[tkey])
        for name, key, threshold, cmp, row_for in (("memory_saved", "activation_saved_fraction", mem_t, ">=", chosen),
                                                   ("step_time_ratio", tkey, time_t, "<=", timed)):
            check = {"target": t, "name": name, "threshold": threshold, "comparison": cmp,
                     "measured": None, "passed": False}
            chosen_here = row_for
            if chosen_here is not None:
                check["budget"] = chosen_here.get("budget")
                check["budget_fraction"] = chosen_here.get("budget_fraction")
                measured = num(chosen_here.get(key))
                check["measured"] = measured
                if measured is None:
                    check["reason"] = "the optimal row at %s has no %s" % (chosen_here.get("budget"), key)
                else:
                    check["passed"] = measured >= threshold if cmp == ">=" else measured <= threshold
                    if not check["passed"] and name == "step_time_ratio" and chosen_here.get("budget"):
                        # The bench picked the row by unpaired times, which this machine's noise
                        # can reorder (2026-12-05: gpt2's 60 % and 50 % rows ran 1.7x slower than
                        # in the run before, so the 30 % row, 1.44x paired, was taken). Each
                        # saving row is measured paired, fastest first, until one passes.
                        candidates = [chosen_here] + sorted((r for r in saving if r is not chosen_here), key=lambda r: r[tkey]) \
                            if chosen_here is timed and saving else [chosen_here]
                        tried = []
                        for row in candidates:
                            paired = remeasure(t, row["budget"])
                            tried.append("%s: %s" % (row["budget"], paired))
                            if paired is None:
                                continue
                            check["bench_measured"] = num(row.get(key))
                            check["measured"] = paired
                            check["budget"] = row.get("budget")
                            check["budget_fraction"] = row.get("budget_fraction")
                            check["remeasured"] = "tbp run --baseline: store-all and the row paired in one process, median ratio (tried %s)" % ", ".join(tried)
                            check["passed"] = paired <= threshold
                            if check["passed"]:
                                break
            else:
                check["reason"] = reason
            checks.append(check)
    with open(os.path.join(WORK, "benchmarks.json"), "w") as f:
        json.dump(benchmarks, f)
    with open(os.path.join(WORK, "thresholds.json"), "w") as f:
        json.dump(checks, f)
    failed = [c for c in checks if not c["passed"]]
    detail = "%d/%d checks passed" % (len(checks) - len(failed), len(checks))
    notes, seen = [], set()
    for c in failed:
        if "reason" in c:
            if (c["target"], c["reason"]) not in seen:
                seen.add((c["target"], c["reason"]))
                notes.append("%s: %s" % (c["target"], c["reason"]))
        else:
            notes.append("%s %s %.3f %s %.2f at %s" % (c["target"], c["name"], c["measured"],
                         "<" if c["comparison"] == ">=" else ">", c["threshold"], c["budget"]))
    if notes:
        detail += "; failed: " + "; ".join(notes)
    if stale:
        detail += "; from an earlier run: " + ",".join(stale)
    print(detail)
    return 0 if not failed else 1

def table(headers, rows):
    rows = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    print(line(headers))
    for r in rows:
        print(line(r))

def summary():
    out = E["TBPV_SUMMARY"]
    stages = []
    commands = [{"name": r[0], "status": r[1], "exit_code": int(r[2]) if r[2].lstrip("-").isdigit() else None,
                 "command": r[3] if len(r) > 3 else ""} for r in tsv("smoke.tsv")]
    for r in tsv("stages.tsv"):
        s = {"name": r[0], "status": r[1], "seconds": int(r[2]), "detail": r[3] if len(r) > 3 else ""}
        if r[0] == "smoke" and commands:
            s["commands"] = commands
        stages.append(s)
    checks = load("thresholds.json", [])
    env = lambda k: E.get("TBPV_" + k, "")
    environment = {
        "compiler": env("COMPILER"), "cmake": env("CMAKE"), "libtorch": env("LIBTORCH"),
        "onnx": env("ONNX"), "pytorch": env("PYTORCH") or None, "device": env("DEVICE"),
        "cpu": env("CPU"), "cores": int(env("CORES") or 0), "gpu": env("GPU") or "none",
        "os": env("OS"), "build_type": env("BUILD_TYPE"), "jobs": int(env("JOBS")),
        "tbp_with_torch": env("WITH_TORCH") == "1",
    }
    options = {
        "skip_build": env("SKIP_BUILD") == "1", "skip_tests": env("SKIP_TESTS") == "1",
        "skip_benchmarks": env("SKIP_BENCHMARKS") == "1", "setup_only": env("SETUP_ONLY") == "1",
        "quiet": E["TBPV_QUIET"] == "1", "jobs": int(env("JOBS")), "build_type": env("BUILD_TYPE"),
        "build_dir": env("BUILD_DIR"), "results_dir": E["TBPV_RESULTS_DIR"],
        "benchmark_profile": E["TBPV_PROFILE"], "trials": int(env("TRIALS")),
        "targets": [t for t in E["TBPV_TARGETS"].split(",") if t],
        "memory_threshold": float(E["TBPV_MEMORY_THRESHOLD"]),
        "time_threshold": float(E["TBPV_TIME_THRESHOLD"]),
        "with_pytorch": env("WITH_PYTORCH") == "1", "with_pytorch_from": env("WITH_PYTORCH_FROM"),
    }
    ok = (env("OVERALL") == "0" and all(s["status"] != "failed" for s in stages)
          and all(c.get("passed") for c in checks))
    doc = {"format": "tbp.verification_summary", "version": 1, "timestamp_utc": env("STAMP"),
           "environment": environment, "options": options, "stages": stages,
           "benchmarks": load("benchmarks.json", {}), "thresholds": checks, "overall_success": ok}
    with open(out + ".tmp", "w") as f:
        json.dump(doc, f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(out + ".tmp", out)
    if E["TBPV_QUIET"] != "1":
        print()
        table(["stage", "status", "seconds", "detail"],
              [[s["name"], s["status"], s["seconds"],
                s["detail"] if len(s["detail"]) <= 100 else s["detail"][:97] + "..."] for s in stages])
        if checks:
            print()
            table(["target", "check", "budget", "measured", "threshold", "verdict"],
                  [[c["target"], c["name"], c.get("budget"), c["measured"],
                    "%s %.2f" % (c["comparison"], c["threshold"]),
                    ("pass" if c["passed"] else "FAIL") + ("" if "reason" not in c else " (" + c["reason"] + ")")]
                   for c in checks])
        print()
        print("overall_success: %s  (%s)" % ("true" if ok else "false", out))
    return 0

try:
    sys.exit({"thresholds": thresholds, "summary": summary}[sys.argv[1]]())
except SystemExit:
    raise
except Exception as e:  # a bug here must not pass for a failed check
    print("internal error in run_full_test.sh's Python: %r" % (e,), file=sys.stderr)
    print("internal error: %r" % (e,))
    sys.exit(3)
PY
}

thresholds() {
  STAGE_DETAIL="$(py thresholds)"
}

write_summary() {
  mkdir -p "$RESULTS_DIR"
  local stamp file compiler cmakev torchv onnxv cpu gpu device os torch_dir with_torch=0
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  file="$RESULTS_DIR/verification_summary_${stamp}.json"
  compiler="$(c++ --version 2>/dev/null | head -n1)"
  [ -n "$compiler" ] || compiler="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null | head -n1)"
  cmakev="$(cmake --version 2>/dev/null | head -n1)"
  torchv="$(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null)"
  if [ -z "$torchv" ]; then
    torch_dir="$(sed -n 's/^Torch_DIR:PATH=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null | head -n1)"
    torchv="$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")/\1/p' "$torch_dir/TorchConfigVersion.cmake" 2>/dev/null | head -n1)"
  fi
  onnxv="$(dpkg-query -W -f='${Version}' libonnx-dev 2>/dev/null)"
  cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"
  gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
  device="$(nvidia-smi -L 2>/dev/null | sed -n '1s/^GPU [0-9]*: \(.*\) (UUID.*$/\1/p')"
  [ -n "$device" ] || device=cpu
  os="$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), $(uname -sr)"
  have_torch_runtime && with_torch=1
  if [ -n "$PY" ] && TBPV_SUMMARY="$file" TBPV_STAMP="$stamp" TBPV_COMPILER="$compiler" \
       TBPV_CMAKE="$cmakev" TBPV_LIBTORCH="${torchv:-none}" TBPV_ONNX="${onnxv:-none}" \
       TBPV_PYTORCH="$( [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null)" \
       TBPV_DEVICE="$device" TBPV_CPU="$cpu" TBPV_CORES="$(nproc 2>/dev/null || echo 0)" TBPV_GPU="$gpu" \
       TBPV_OS="$os" TBPV_BUILD_TYPE="$BUILD_TYPE" TBPV_JOBS="$JOBS" TBPV_WITH_TORCH="$with_torch" \
       TBPV_SKIP_BUILD="$SKIP_BUILD" TBPV_SKIP_TESTS="$SKIP_TESTS" TBPV_SKIP_BENCHMARKS="$SKIP_BENCHMARKS" \
       TBPV_SETUP_ONLY="$SETUP_ONLY" TBPV_BUILD_DIR="$BUILD_DIR" TBPV_TRIALS="$TRIALS" \
       TBPV_WITH_PYTORCH="${WITH_PYTORCH:-0}" TBPV_WITH_PYTORCH_FROM="$WITH_PYTORCH_FROM" \
       TBPV_OVERALL="$OVERALL" py summary; then
    log "summary: $file"
    return 0
  fi
  [ -z "$PY" ] || echo "run_full_test.sh: writing the summary with Python failed; writing it without" >&2
  local ok=true targets_json="" t
  [ "$OVERALL" = 0 ] || ok=false
  for t in ${TARGETS//,/ }; do targets_json="${targets_json:+$targets_json, }\"$t\""; done
  cat > "$file.tmp" <<JSON
{
  "format": "tbp.verification_summary",
  "version": 1,
  "timestamp_utc": "$stamp",
  "environment": {
    "compiler": $(json_str "$compiler"),
    "cmake": $(json_str "$cmakev"),
    "libtorch": $(json_str "${torchv:-none}"),
    "onnx": $(json_str "${onnxv:-none}"),
    "device": $(json_str "$device"),
    "cpu": $(json_str "$cpu"),
    "cores": $(nproc 2>/dev/null || echo 0),
    "gpu": $(json_str "${gpu:-none}"),
    "os": $(json_str "$os"),
    "build_type": $(json_str "$BUILD_TYPE"),
    "jobs": $JOBS,
    "tbp_with_torch": $([ "$with_torch" = 1 ] && echo true || echo false)
  },
  "options": {
    "skip_build": $([ "$SKIP_BUILD" = 1 ] && echo true || echo false),
    "skip_tests": $([ "$SKIP_TESTS" = 1 ] && echo true || echo false),
    "skip_benchmarks": $([ "$SKIP_BENCHMARKS" = 1 ] && echo true || echo false),
    "setup_only": $([ "$SETUP_ONLY" = 1 ] && echo true || echo false),
    "quiet": $([ "$QUIET" = 1 ] && echo true || echo false),
    "jobs": $JOBS,
    "build_type": $(json_str "$BUILD_TYPE"),
    "build_dir": $(json_str "$BUILD_DIR"),
    "results_dir": $(json_str "$RESULTS_DIR"),
    "benchmark_profile": "$PROFILE",
    "trials": $TRIALS,
    "targets": [$targets_json],
    "memory_threshold": $MEMORY_THRESHOLD,
    "time_threshold": $TIME_THRESHOLD,
    "with_pytorch": $([ "$WITH_PYTORCH" = 1 ] && echo true || echo false),
    "with_pytorch_from": "$WITH_PYTORCH_FROM"
  },
  "stages": [$STAGES_JSON
  ],
  "benchmarks": {},
  "thresholds": [],
  "overall_success": $ok
}
JSON
  mv "$file.tmp" "$file"
  log "summary: $file"
  if [ "$QUIET" = 0 ]; then
    echo
    awk -F'\t' '{ printf "%-12s %-8s %7s  %s\n", $1, $2, $3, $4 }' "$STAGES_TSV"
  fi
}

# ---------------------------------------------------------------- main
LATER_STAGES=(smoke benchmarks thresholds)
SETUP_OK=0
run_stage setup setup && SETUP_OK=1
resolve_python
if [ "$SETUP_OK" = 1 ]; then
  if [ "$SETUP_ONLY" = 1 ]; then
    skip_stages "--setup-only" build tests "${LATER_STAGES[@]}"
  else
    BUILD_OK=1
    if [ "$SKIP_BUILD" = 1 ]; then record build skipped 0 "--skip-build"
    else { run_stage configure configure && run_stage build build; } || BUILD_OK=0; fi
    if [ "$SKIP_TESTS" = 1 ]; then record tests skipped 0 "--skip-tests"
    elif [ "$BUILD_OK" = 1 ]; then run_stage tests tests
    else record tests skipped 0 "build failed"; fi
    if [ "$BUILD_OK" = 0 ]; then
      skip_stages "build failed" "${LATER_STAGES[@]}"
    else
      if [ "$SKIP_TESTS" = 1 ]; then record smoke skipped 0 "--skip-tests"; else run_stage smoke smoke; fi
      if [ "$SKIP_BENCHMARKS" = 1 ]; then skip_stages "--skip-benchmarks" benchmarks thresholds
      elif [ -z "$PY" ]; then skip_stages "python3 not found" benchmarks thresholds
      elif ! have_torch_runtime; then skip_stages "tbp built without the LibTorch runtime" benchmarks thresholds
      else
        run_stage benchmarks benchmarks
        run_stage thresholds thresholds # on whatever bench JSON exists, also after a failed bench
      fi
    fi
  fi
else
  skip_stages "setup failed" build tests "${LATER_STAGES[@]}"
fi
write_summary
if [ "$OVERALL" = 0 ]; then log "all stages passed"; else log "FAILED"; fi
exit "$OVERALL"
