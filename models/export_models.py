#!/usr/bin/python3
"""Export the ONNX models used by tbp's tests and benchmarks.

Models
  torchvision (random weights, never downloaded):
    resnet18, resnet50, mobilenet_v3_small, densenet121, efficientnet_b0,
    convnext_tiny            input  "input"  [batch, 3, 64, 64] float32
    vit_b_16 (image_size=32) input  "input"  [batch, 3, 32, 32] float32
                             output "logits" [batch, 1000]
    (vit_b_16 accepts any image_size that is a multiple of its patch size 16;
    efficientnet_b0/convnext_tiny are built with stochastic_depth_prob=0, see MODELS)
  defined in models/archs.py (defaults: 4 layers, hidden 256, 4 heads, vocab 1024,
  seq 64; unet: 32x32x4 latents, channels 64/128/256, GroupNorm 32, mid attention):
    gpt2  input_ids [batch, seq] int64                      -> logits [batch, seq, vocab]
    bert  input_ids, attention_mask [batch, seq] int64      -> logits [batch, num_labels]
    unet  x [batch, C, H, W] float32, timestep [batch] f32  -> output [batch, C, H, W]

Every graph input/output gets symbolic dims through dynamic_axes: the batch
dimension is named ``batch`` everywhere and the sequence dimension ``seq`` for
gpt2/bert, so the files carry dim_param entries that must be bound (e.g. with
tbp's --dim batch=2) before compilation.

Files are written as ``<name>_op<opset>_<mode>.onnx``; with ``--tiny`` the
name gets a ``_tiny`` suffix (``gpt2_tiny_op17_eval.onnx``) and only the
three archs.py models are available (hidden 32, 2 layers, seq 16; < 2 MB each).

``--mode train`` exports with torch.onnx.TrainingMode.TRAINING, so
BatchNormalization uses batch statistics (training_mode=1 from opset 14) and
Dropout keeps its ratio/training_mode inputs. Export is deterministic: each
model is built right after ``torch.manual_seed(0)`` and exported with
``do_constant_folding=True``. torch warns that folding in training mode may
rewrite parameters (e.g. a Linear weight stored pre-transposed for MatMul);
that is fine for forward-pass tests in training form, which is all these
files are for, so the warning is silenced.

Models with random init contain many identical initializers (all-ones norm
scales, zero biases); torch deduplicates them in eval exports and reads the
copies through Identity nodes.

Usage (always with Debian's interpreter, which has torch/torchvision/onnx):
  /usr/bin/python3 models/export_models.py --list
  /usr/bin/python3 models/export_models.py --out /tmp/tbp_models
  /usr/bin/python3 models/export_models.py --out /tmp/m --only gpt2,resnet18 --opset 13 --mode train
  /usr/bin/python3 models/export_models.py --out /tmp/m --tiny
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import archs  # noqa: E402

MIN_OPSET, MAX_OPSET = 13, 17
EXAMPLE_BATCH = 2  # >1 so BatchNorm in training mode sees more than one value per channel


@dataclass
class Exportable:
    module: torch.nn.Module
    inputs: Tuple[torch.Tensor, ...]
    input_names: List[str]
    output_names: List[str]
    dynamic_axes: Dict[str, Dict[int, str]]


def _vision(tv_name: str, size: int, **model_kw) -> Callable[[bool], Exportable]:
    """Builder for a torchvision classifier with random weights (weights=None)."""
    def build(tiny: bool) -> Exportable:
        assert not tiny
        import torchvision.models as tvm  # imported lazily: slow, and unused for --tiny
        module = getattr(tvm, tv_name)(weights=None, **model_kw)
        x = torch.randn(EXAMPLE_BATCH, 3, size, size,
                        generator=torch.Generator().manual_seed(1234))
        return Exportable(module, (x,), ["input"], ["logits"],
                          {"input": {0: "batch"}, "logits": {0: "batch"}})
    return build


def _gpt2(tiny: bool) -> Exportable:
    m = archs.GPT2(archs.GPT2Config.tiny() if tiny else archs.GPT2Config.default())
    return Exportable(m, m.example_inputs(EXAMPLE_BATCH), ["input_ids"], ["logits"],
                      {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}})


def _bert(tiny: bool) -> Exportable:
    m = archs.Bert(archs.BertConfig.tiny() if tiny else archs.BertConfig.default())
    inputs = m.example_inputs(EXAMPLE_BATCH)
    names = ["input_ids", "attention_mask"][:len(inputs)]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["logits"] = {0: "batch"}
    return Exportable(m, inputs, names, ["logits"], axes)


def _unet(tiny: bool) -> Exportable:
    m = archs.UNet(archs.UNetConfig.tiny() if tiny else archs.UNetConfig.default())
    return Exportable(m, m.example_inputs(EXAMPLE_BATCH), ["x", "timestep"], ["output"],
                      {"x": {0: "batch"}, "timestep": {0: "batch"}, "output": {0: "batch"}})


# name -> (builder(tiny) -> Exportable, supports --tiny)
MODELS: Dict[str, Tuple[Callable[[bool], Exportable], bool]] = {
    "resnet18": (_vision("resnet18", 64), False),
    "resnet50": (_vision("resnet50", 64), False),
    "mobilenet_v3_small": (_vision("mobilenet_v3_small", 64), False),
    "densenet121": (_vision("densenet121", 64), False),
    # Stochastic depth is disabled: in training mode torchvision implements it
    # with an in-place bernoulli_() that torch 1.13 cannot export. With p=0 the
    # layer is an identity in both modes, so the weights/graph are unaffected.
    "efficientnet_b0": (_vision("efficientnet_b0", 64, stochastic_depth_prob=0.0), False),
    "convnext_tiny": (_vision("convnext_tiny", 64, stochastic_depth_prob=0.0), False),
    "vit_b_16": (_vision("vit_b_16", 32, image_size=32), False),
    "gpt2": (_gpt2, True),
    "bert": (_bert, True),
    "unet": (_unet, True),
}
TINY_MODELS = [n for n, (_, tiny_ok) in MODELS.items() if tiny_ok]


def file_name(name: str, opset: int, mode: str, tiny: bool = False) -> str:
    return f"{name}{'_tiny' if tiny else ''}_op{opset}_{mode}.onnx"


def export_one(name: str, out_dir: str, opset: int, mode: str, tiny: bool = False) -> str:
    """Export model ``name`` and return the written path."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset} outside supported range {MIN_OPSET}..{MAX_OPSET}")
    builder, tiny_ok = MODELS[name]
    if tiny and not tiny_ok:
        raise ValueError(f"--tiny is only available for {', '.join(TINY_MODELS)}")
    torch.manual_seed(0)
    ex = builder(tiny)
    training = mode == "train"
    ex.module.train(training)
    path = os.path.join(out_dir, file_name(name, opset, mode, tiny))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant-folding-in-training and tracer warnings
        torch.manual_seed(0)
        torch.onnx.export(
            ex.module, ex.inputs, path,
            export_params=True,
            opset_version=opset,
            training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL,
            do_constant_folding=True,
            input_names=ex.input_names,
            output_names=ex.output_names,
            dynamic_axes=ex.dynamic_axes,
        )
    onnx.checker.check_model(path)  # path form: also fine for files > 2 GB
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory (created if missing)")
    ap.add_argument("--only", help="comma-separated subset of model names")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset, 13..17 (default 17)")
    ap.add_argument("--mode", choices=("eval", "train"), default="eval")
    ap.add_argument("--tiny", action="store_true",
                    help=f"tiny configurations (only {', '.join(TINY_MODELS)}; files < 2 MB)")
    ap.add_argument("--list", action="store_true", help="print the model names and exit")
    args = ap.parse_args(argv)

    if args.list:
        for n in (TINY_MODELS if args.tiny else MODELS):
            print(n)
        return 0
    if not args.out:
        ap.error("--out is required")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        ap.error(f"--opset must be in {MIN_OPSET}..{MAX_OPSET}")
    names = list(TINY_MODELS if args.tiny else MODELS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in MODELS]
        if unknown:
            ap.error(f"unknown model(s): {', '.join(unknown)}; see --list")
        if args.tiny and any(n not in TINY_MODELS for n in names):
            ap.error(f"--tiny is only available for {', '.join(TINY_MODELS)}")

    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for n in names:
        t0 = time.time()
        path = export_one(n, args.out, args.opset, args.mode, args.tiny)
        print(f"{path}  {os.path.getsize(path) / 1e6:8.2f} MB  {time.time() - t0:6.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
