run --workload chain --budget 60% --verify
