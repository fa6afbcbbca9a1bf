#!/usr/bin/env bash
# Checks the component dependency rules of DESIGN.md §2 on the sources: every
# `#include "tbp/<comp>/..."` in lib/<c>/ and include/tbp/<c>/ must name <c> itself or a
# component <c> may use; LibTorch headers only in runtime and frontend/torchscript; ONNX and
# Protobuf headers only in frontend/onnx.
set -uo pipefail
ROOT="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
declare -A ALLOWED=(
  [support]=""
  [ir]="support"
  [frontend/onnx]="ir support"
  [frontend/jaxpr]="ir support"
  [frontend/torchscript]="ir support"
  [workloads]="ir support frontend/onnx"
  [analysis]="ir support"
  [plan]="ir analysis support"
  [schedule]="plan ir analysis support"
  [runtime]="ir plan schedule analysis support"
  [driver]="*"
)
fail=0
for comp in "${!ALLOWED[@]}"; do
  for dir in "$ROOT/lib/$comp" "$ROOT/include/tbp/$comp"; do
    [ -d "$dir" ] || continue
    while IFS= read -r line; do
      file="${line%%:*}"
      used="$(sed -E 's/.*#include *"tbp\/([a-z_]+(\/[a-z_]+)?)\/[A-Za-z_]+\.(h|def)".*/\1/' <<<"$line")"
      # frontend/<x>: a two-level component name; others are one level.
      case "$used" in frontend/*) ;; *) used="${used%%/*}" ;; esac
      [ "$used" = "$comp" ] && continue
      [ "${ALLOWED[$comp]}" = "*" ] && continue
      if ! grep -qw -- "$used" <<<"${ALLOWED[$comp]}"; then
        echo "layering: ${file#$ROOT/} ($comp) includes tbp/$used, which $comp may not use"
        fail=1
      fi
    done < <(grep -rHE '#include *"tbp/' "$dir" --include='*.h' --include='*.cpp' --include='*.def')
  done
done
torch="$(grep -rlE '#include *[<"](torch|ATen|c10)/' "$ROOT/lib" "$ROOT/include" "$ROOT/tools" 2>/dev/null | grep -vE '/lib/(runtime|frontend/torchscript)/')"
[ -z "$torch" ] || { echo "layering: LibTorch headers outside runtime/torchscript:"; echo "$torch"; fail=1; }
onnx="$(grep -rlE '#include *[<"](onnx/|google/protobuf)' "$ROOT/lib" "$ROOT/include" "$ROOT/tools" 2>/dev/null | grep -vE '/lib/(frontend/onnx|workloads)/')"
[ -z "$onnx" ] || { echo "layering: ONNX/Protobuf headers outside frontend/onnx:"; echo "$onnx"; fail=1; }
if [ "$fail" = 0 ]; then echo "layering: 1 passed, 0 failed"; else echo "layering: 0 passed, 1 failed"; fi
exit "$fail"
