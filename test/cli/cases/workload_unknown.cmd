analyze --workload nope
