plan --workload gpt2 --budget 60% -o "$TBP_TMP/p.json" >/dev/null && "$TBP" validate --workload gpt2 "$TBP_TMP/p.json"; echo "exit $?"; "$TBP" validate --workload gpt2; echo "exit $?"
