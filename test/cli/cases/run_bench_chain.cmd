bench --targets chain --modes store-all,sqrt,optimal --budgets 60%,1% --trials 1 --results-dir $TBP_TMP/r && test -s $TBP_TMP/r/bench_chain_small.json
