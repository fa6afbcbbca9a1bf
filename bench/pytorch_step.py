#!/usr/bin/python3
"""Median training-step time of a model in PyTorch eager (store-all), for `bench/run_bench.sh`.

Usage: /usr/bin/python3 bench/pytorch_step.py MODEL BATCH [--seq N] [--steps N] [--threads N]
MODEL is a models/export_models.py name; the step is forward, mean loss of the first output,
backward, as `tbp run` does (no optimizer). Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import export_models  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("batch", type=int)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    builder, tiny_ok = export_models.MODELS[args.model]
    torch.manual_seed(0)
    ex = builder(False)
    module = ex.module.train(True)
    if hasattr(module, "example_inputs"):
        inputs = module.example_inputs(args.batch, args.seq) if args.seq else module.example_inputs(args.batch)
    else:
        inputs = (torch.randn(args.batch, *ex.inputs[0].shape[1:]),)
    times = []
    for step in range(args.warmup + args.steps):
        module.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = module(*inputs)
        first = out[0] if isinstance(out, (tuple, list)) else out
        first.float().mean().backward()
        dt = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(dt)
    print(json.dumps({"model": args.model, "batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads(),
                      "median_step_s": statistics.median(times)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
