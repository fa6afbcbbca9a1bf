plan --workload resnet --profile small --budget 50%
