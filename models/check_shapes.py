#!/usr/bin/python3
"""Check that ONNX shape inference yields fully concrete shapes once the
symbolic dims are bound.

For every model: replace each ``dim_param`` in the graph inputs and outputs
that has a binding (default ``batch=2``, ``seq=16``) by a ``dim_value``, drop
any existing value_info, run ``onnx.shape_inference.infer_shapes(model,
check_type=True, data_prop=True)`` and list every value of the main graph
(node outputs, graph outputs) whose shape is missing, has an unknown rank, or
keeps a symbolic / unknown dimension. This mirrors what tbp must do itself
with ``--dim batch=2 --dim seq=16``.

Exit status is 0 when every value of every model is concrete, 1 otherwise.

Usage:
  /usr/bin/python3 models/check_shapes.py /tmp/tbp_models
  /usr/bin/python3 models/check_shapes.py --dim batch=1 --dim seq=8 m.onnx
  /usr/bin/python3 models/check_shapes.py --verbose test/fixtures/onnx   # list every value
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Dict, List, Sequence, Tuple

import onnx
from onnx import shape_inference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from list_ops import find_models  # noqa: E402


def bind_dims(model: onnx.ModelProto, dims: Dict[str, int]) -> List[str]:
    """Bind dim_params of graph inputs/outputs in place; return names left unbound."""
    unbound = []
    for vi in list(model.graph.input) + list(model.graph.output):
        if not vi.type.HasField("tensor_type"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                if d.dim_param in dims:
                    d.dim_value = dims[d.dim_param]   # oneof: clears dim_param
                else:
                    unbound.append(f"{vi.name}:{d.dim_param}")
    del model.graph.value_info[:]
    return unbound


def describe(vi: onnx.ValueInfoProto | None) -> Tuple[str, str]:
    """(status, shape string); status is 'ok', 'missing', 'no-shape', 'symbolic', 'unknown-dim'."""
    if vi is None or not vi.type.HasField("tensor_type"):
        return ("missing" if vi is None else "non-tensor"), "?"
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return "no-shape", "?"
    parts, status = [], "ok"
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            parts.append(str(d.dim_value))
        elif d.HasField("dim_param"):
            parts.append(d.dim_param)
            status = "symbolic" if status == "ok" else status
        else:
            parts.append("?")
            status = "unknown-dim"
    return status, "[" + ", ".join(parts) + "]"


def check(path: str, dims: Dict[str, int], verbose: bool) -> Tuple[int, int, List[str]]:
    model = onnx.load(path)
    unbound = bind_dims(model, dims)
    notes = [f"unbound input/output dims: {', '.join(unbound)}"] if unbound else []
    try:
        inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # report the strict-mode error, then fall back to lenient inference
        notes.append(f"strict inference error: {str(e).strip().splitlines()[-1][:200]}")
        inferred = shape_inference.infer_shapes(model, check_type=True, data_prop=True)
    g = inferred.graph
    info = {vi.name: vi for vi in list(g.value_info) + list(g.output) + list(g.input)}
    consts = {t.name for t in g.initializer}
    concrete = set(consts)
    for name, vi in info.items():
        if describe(vi)[0] == "ok":
            concrete.add(name)
    total, bad = 0, 0
    per_op: Dict[Tuple[str, str], List[str]] = collections.defaultdict(list)
    roots: List[str] = []
    for node in g.node:
        # A root cause: inference lost information although every input is concrete.
        if any(o and o not in concrete for o in node.output) and all(not i or i in concrete for i in node.input):
            ins = ", ".join("const" if i in consts else describe(info.get(i))[1] for i in node.input if i)
            outs = ", ".join(describe(info.get(o))[1] for o in node.output if o)
            roots.append(f"root cause: {node.op_type} {node.name or node.output[0]} ({ins}) -> ({outs})")
        for out in node.output:
            if not out:
                continue
            total += 1
            status, shape = describe(info.get(out))
            if verbose:
                notes.append(f"  {node.op_type:<24} {out:<48} {shape}")
            if status != "ok":
                bad += 1
                per_op[(node.op_type, status)].append(f"{out} {shape}")
    notes.extend(roots[:12] + ([f"root cause: ... (+{len(roots) - 12})"] if len(roots) > 12 else []))
    for (op, status), outs in sorted(per_op.items()):
        shown = ", ".join(outs[:6]) + (f", ... (+{len(outs) - 6})" if len(outs) > 6 else "")
        notes.append(f"{op} -> {status} x{len(outs)}: {shown}")
    for o in g.output:
        notes.append(f"output {o.name}: {describe(o)[1]}")
    return total, bad, notes


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Bind symbolic dims and check ONNX shape inference is concrete.")
    ap.add_argument("paths", nargs="+", metavar="DIR_OR_FILE")
    ap.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                    help="bind a dim_param (default: batch=2 and seq=16)")
    ap.add_argument("--verbose", action="store_true", help="print the shape of every value")
    args = ap.parse_args(argv)
    dims = {"batch": 2, "seq": 16}
    for d in args.dim:
        k, _, v = d.partition("=")
        dims[k] = int(v)

    all_ok = True
    for path in find_models(args.paths):
        total, bad, notes = check(path, dims, args.verbose)
        all_ok &= bad == 0
        verdict = "ALL CONCRETE" if bad == 0 else f"{bad} NOT CONCRETE"
        print(f"{os.path.basename(path)}: {total} values, {verdict}")
        for n in notes:
            print(f"    {n}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
