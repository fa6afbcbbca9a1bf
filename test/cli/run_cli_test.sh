#!/usr/bin/env bash
# Golden-file test of the real tbp binary (DESIGN.md §8).
#
#   run_cli_test.sh TBP CASE_DIR NAME [--update]
#
# CASE_DIR/NAME.cmd holds the arguments after `tbp` (one line, shell words). The command runs in
# test/fixtures so paths in messages are short and stable. Expected results:
#   NAME.code    exit status
#   NAME.stdout  standard output (omitted file: not compared)
#   NAME.stderr  standard error  (omitted file: not compared)
# Lines of an expected file may use `{{ANY}}` to match any text within that line; the
# command's temporary folder $TBP_TMP appears as $TMP.
# --update rewrites the expected files from the actual run; review the diff like code.
set -uo pipefail
TBP="$1"; CASES="$2"; NAME="$3"; UPDATE="${4:-}"
FIXTURES="$(cd "$CASES/../../fixtures" && pwd)"
cmdline="$(cat "$CASES/$NAME.cmd")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/work"
export TBP_TMP="$tmp/work"
# Plans price matrix products by the BLAS LibTorch uses here (x25 on the reference BLAS, x1 on
# a tuned one): fixed, so the expected plans are the same on any machine.
export TBP_MATRIX_PRODUCT_WEIGHT=25
(cd "$FIXTURES" && eval "\"$TBP\" $cmdline" >"$tmp/stdout" 2>"$tmp/stderr")
code=$?
echo "$code" > "$tmp/code"
# Temporary paths differ run to run: show them as $TMP.
for part in stdout stderr; do sed -i "s|$tmp/work|\$TMP|g" "$tmp/$part"; done

if [ "$UPDATE" = "--update" ]; then
  cp "$tmp/code" "$CASES/$NAME.code"
  cp "$tmp/stdout" "$CASES/$NAME.stdout"
  cp "$tmp/stderr" "$CASES/$NAME.stderr"
  echo "updated $NAME"
  exit 0
fi

matches() { # expected actual
  local exp="$1" act="$2"
  if ! grep -q '{{ANY}}' "$exp"; then cmp -s "$exp" "$act"; return; fi
  [ "$(wc -l < "$exp")" = "$(wc -l < "$act")" ] || return 1
  # Line by line: the literal pieces between {{ANY}} markers must appear in order, the first at
  # the start of the line and the last at its end.
  paste -d '\n' "$exp" "$act" | awk '
    NR % 2 == 1 { pattern = $0; next }
    {
      line = $0; n = split(pattern, parts, /\{\{ANY\}\}/); pos = 1
      for (i = 1; i <= n; i++) {
        rest = substr(line, pos)
        if (i == 1) { if (substr(rest, 1, length(parts[i])) != parts[i]) exit 1; pos += length(parts[i]); continue }
        if (i == n) { if (length(parts[i]) > length(rest) || substr(rest, length(rest) - length(parts[i]) + 1) != parts[i]) exit 1; continue }
        k = index(rest, parts[i]); if (k == 0) exit 1; pos += k - 1 + length(parts[i])
      }
    }'
}

status=0
for part in code stdout stderr; do
  [ -f "$CASES/$NAME.$part" ] || continue
  if ! matches "$CASES/$NAME.$part" "$tmp/$part"; then
    echo "FAIL $NAME: $part differs (command: tbp $cmdline)"
    diff -u "$CASES/$NAME.$part" "$tmp/$part" | head -n 40
    status=1
  fi
done
[ "$status" = 0 ] && echo "ok $NAME"
exit "$status"
