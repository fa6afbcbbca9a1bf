#!/usr/bin/env bash
# One-command verification: install what is missing, configure, build, run every test, and
# write results/verification_summary_<UTC timestamp>.json. Exits non-zero on any failure.
#
#   ./run_full_test.sh [--skip-build] [--skip-tests] [--jobs N] [--build-type TYPE]
#                      [--build-dir DIR] [--results-dir DIR] [--setup-only]
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SKIP_BUILD=0
SKIP_TESTS=0
SETUP_ONLY=0
JOBS="$(nproc 2>/dev/null || echo 2)"
BUILD_TYPE="RelWithDebInfo"
BUILD_DIR="$ROOT/build"
RESULTS_DIR="$ROOT/results"
QUIET=0

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --skip-build) SKIP_BUILD=1 ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --setup-only) SETUP_ONLY=1 ;;
    --quiet) QUIET=1 ;;
    --jobs) JOBS="${2:?--jobs needs a number}"; shift ;;
    --jobs=*) JOBS="${1#*=}" ;;
    --build-type) BUILD_TYPE="${2:?--build-type needs a value}"; shift ;;
    --build-type=*) BUILD_TYPE="${1#*=}" ;;
    --build-dir) BUILD_DIR="$(realpath -m "${2:?--build-dir needs a path}")"; shift ;;
    --results-dir) RESULTS_DIR="$(realpath -m "${2:?--results-dir needs a path}")"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_full_test.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$JOBS" in ''|*[!0-9]*) echo "run_full_test.sh: --jobs needs a positive number" >&2; exit 2 ;; esac

log() { [ "$QUIET" = 1 ] || echo "== $*" >&2; }

# ---------------------------------------------------------------- stage bookkeeping
STAGES_JSON=""
OVERALL=0
record() { # name status seconds detail
  local detail="${4//\"/\'}"
  STAGES_JSON="${STAGES_JSON:+$STAGES_JSON,}
    {\"name\": \"$1\", \"status\": \"$2\", \"seconds\": $3, \"detail\": \"$detail\"}"
  [ "$2" = "failed" ] && OVERALL=1
  return 0
}
run_stage() { # name command...
  local name="$1"; shift
  log "$name"
  local start end rc
  start=$(date +%s)
  "$@"
  rc=$?
  end=$(date +%s)
  if [ "$rc" = 0 ]; then record "$name" passed $((end - start)) ""; return 0; fi
  record "$name" failed $((end - start)) "exit status $rc"
  return 1
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

# ---------------------------------------------------------------- summary
write_summary() {
  mkdir -p "$RESULTS_DIR"
  local stamp file compiler cmakev torchv onnxv cpu gpu
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  file="$RESULTS_DIR/verification_summary_${stamp}.json"
  compiler="$(c++ --version 2>/dev/null | head -n1)"
  cmakev="$(cmake --version 2>/dev/null | head -n1)"
  torchv="$(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null || echo none)"
  onnxv="$(dpkg-query -W -f='${Version}' libonnx-dev 2>/dev/null || echo none)"
  cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"
  gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
  local ok=true
  [ "$OVERALL" = 0 ] || ok=false
  cat > "$file.tmp" <<JSON
{
  "format": "tbp.verification_summary",
  "version": 1,
  "timestamp_utc": "$stamp",
  "environment": {
    "compiler": "${compiler//\"/\'}",
    "cmake": "$cmakev",
    "libtorch": "$torchv",
    "onnx": "$onnxv",
    "cpu": "${cpu//\"/\'}",
    "cores": $(nproc 2>/dev/null || echo 0),
    "gpu": "${gpu:-none}",
    "build_type": "$BUILD_TYPE",
    "jobs": $JOBS
  },
  "stages": [$STAGES_JSON
  ],
  "overall_success": $ok
}
JSON
  mv "$file.tmp" "$file"
  log "summary: $file"
}

if run_stage setup setup; then
  if [ "$SETUP_ONLY" = 0 ]; then
    if [ "$SKIP_BUILD" = 1 ]; then record build skipped 0 "--skip-build"
    else run_stage configure configure && run_stage build build; fi
    if [ "$SKIP_TESTS" = 1 ]; then record tests skipped 0 "--skip-tests"
    elif [ "$OVERALL" = 0 ]; then run_stage tests tests; fi
  fi
fi
write_summary
if [ "$OVERALL" = 0 ]; then log "all stages passed"; else log "FAILED"; fi
exit "$OVERALL"
