#!/usr/bin/python3
"""Median training-step time of a model in PyTorch eager (store-all), for `bench/run_bench.sh`.

Usage: /usr/bin/python3 bench/pytorch_step.py MODEL BATCH [--seq N] [--steps N] [--threads N] [--device cpu|cuda]
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
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    builder, tiny_ok = export_models.MODELS[args.model]
    torch.manual_seed(0)
    ex = builder(False)
    module = ex.module.train(True).to(device)
    if hasattr(module, "example_inputs"):
        inputs = module.example_inputs(args.batch, args.seq) if args.seq else module.example_inputs(args.batch)
    else:
        inputs = (torch.randn(args.batch, *ex.inputs[0].shape[1:]),)
    inputs = tuple(t.to(device) for t in inputs)
    times = []
    for step in range(args.warmup + args.steps):
        module.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        out = module(*inputs)
        first = out[0] if isinstance(out, (tuple, list)) else out
        first.float().mean().backward()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(dt)
    print(json.dumps({"model": args.model, "batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads(),
                      "device": args.device, "median_step_s": statistics.median(times),
                      "peak_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
