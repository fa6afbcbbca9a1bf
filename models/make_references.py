#!/usr/bin/python3
"""Reference losses and gradients from PyTorch autograd, for tbp's gradient-parity test.

For each model it writes, into OUT/<name>/:
  model.onnx        the model exported in training mode (BatchNorm uses batch statistics) with
                    every Dropout set to p=0, static shapes, and no constant folding (but for the
                    U-Net), so initializer names are the PyTorch parameter names
  input_<i>.npy     the fixed inputs, one per graph input (names in manifest.json)
  grad_<i>.npy      d(loss)/d(parameter) from PyTorch autograd
  manifest.json     {"parameters": [{"name", "file", "shape"}], "loss": float,
                     "inputs": [{"name", "file"}]}
The loss is the mean of the model's first output: tbp's default `--loss mean`.

Usage:
  /usr/bin/python3 models/make_references.py --out DIR [--only NAME,...]
Models: resnet18 (64x64 images, batch 32), mobilenet_v3_small (64x64, batch 384), gpt2 (tiny but 4 layers, batch 128),
bert (tiny, batch 128), unet (tiny, batch 64).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402

# Models whose export needs constant folding to give ONNX shape inference constant Resize scales
# (tbp folds integer shape arithmetic itself, not float): their parameter names survive it.
FOLD = {"unet"}

# Batch sizes at which activations, not weights, dominate the step, so that a schedule at 30% of
# the store-all peak exists. mobilenet_v3_small's floor is one early BatchNorm backward (four
# maps of its size) on top of weights and gradients: 52% of the store-all peak at batch 32, 29.6%
# at 256 and 28.2% at 384. resnet18 has none at any batch (its stem BatchNorm backward alone is
# 55% of the store-all peak), so it stays small.
BATCH = {"resnet18": 32, "mobilenet_v3_small": 384, "gpt2": 128, "bert": 128, "unet": 64}

# Depth overrides of export_models' tiny configurations. The 2-layer tiny GPT-2's lower bound is
# 32.7% of its store-all peak (one Gelu backward's working set against a short tape), so it has no
# schedule at 30%; with 4 layers the smallest schedule is 20% of the store-all peak.
LAYERS = {"gpt2": 4}

MODELS = {
    "resnet18": ("resnet18", False),
    "mobilenet_v3_small": ("mobilenet_v3_small", False),
    "gpt2": ("gpt2", True),
    "bert": ("bert", True),
    "unet": ("unet", True),
}


def make(name: str, out: str) -> None:
    zoo_name, tiny = MODELS[name]
    builder, _ = export_models.MODELS[zoo_name]
    torch.manual_seed(0)
    ex = builder(tiny)
    module = ex.module
    if name in LAYERS:
        torch.manual_seed(0)
        module = type(module)(dataclasses.replace(module.cfg, layers=LAYERS[name]))
        ex.module = module
    batch = BATCH[name]
    if hasattr(module, "example_inputs"):
        ex.inputs = tuple(module.example_inputs(batch))
    else:
        ex.inputs = (torch.randn(batch, *ex.inputs[0].shape[1:], generator=torch.Generator().manual_seed(1234)),)
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    module.train(True)
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, ex.inputs, path, export_params=True, opset_version=17,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=name in FOLD,
                          input_names=ex.input_names, output_names=ex.output_names)
    # The export ran the module once in training mode: BatchNorm running statistics moved, which
    # does not change batch-statistics outputs or gradients. Compute the reference now.
    module.zero_grad(set_to_none=True)
    outputs = module(*ex.inputs)
    first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    loss = first.float().mean()
    loss.backward()
    manifest = {"parameters": [], "loss": float(loss.item()), "inputs": []}
    for i, (input_name, tensor) in enumerate(zip(ex.input_names, ex.inputs)):
        file = f"input_{i}.npy"
        np.save(os.path.join(folder, file), tensor.detach().cpu().numpy())
        manifest["inputs"].append({"name": input_name, "file": file})
    for i, (param_name, p) in enumerate(module.named_parameters()):
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        file = f"grad_{i}.npy"
        np.save(os.path.join(folder, file), grad.detach().cpu().numpy().astype(np.float32))
        manifest["parameters"].append({"name": param_name, "file": file, "shape": list(p.shape)})
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    # The `tbp run` arguments that feed these inputs, one per line.
    with open(os.path.join(folder, "args.txt"), "w") as f:
        for entry in manifest["inputs"]:
            f.write(f"--input {entry['name']}={os.path.join(folder, entry['file'])}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", help="comma-separated subset")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(MODELS)
    for name in names:
        make(name, args.out)
        print(f"wrote {os.path.join(args.out, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
