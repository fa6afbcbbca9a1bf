analyze --workload chain --profile small
