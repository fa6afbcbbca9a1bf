#!/usr/bin/python3
"""Histogram of ONNX operator types used by a set of models.

Walks every directory (recursively) or file given on the command line, loads
each ``*.onnx`` file (without external data), and counts nodes per
``(domain, op_type)`` -- including nodes nested in subgraphs (If/Loop/Scan
bodies). For each op it prints the total node count, the number of files
using it, and which files those are. Also prints the opset imports seen.

Usage:
  /usr/bin/python3 models/list_ops.py DIR_OR_FILE [...]
  /usr/bin/python3 models/list_ops.py --brief /tmp/tbp_models     # no file lists
  /usr/bin/python3 models/list_ops.py --json /tmp/tbp_models > ops.json
  /usr/bin/python3 models/list_ops.py --forms /tmp/tbp_models     # + distinct attribute/arity forms

--forms prints, under each op, its distinct forms: input/output arity (an
empty optional input or output shows as "_"), attribute values (tensor
attributes as dtype+shape, subgraphs as node counts) and, for inputs that are
initializers or Constant outputs, their value when it is a scalar or a short
integer vector (e.g. Dropout's ratio / training_mode, Resize's scales are
float so they show as x unless scalar), each with a count of nodes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from typing import Dict, Iterator, List, Sequence, Tuple

import onnx


def find_models(paths: Sequence[str]) -> List[str]:
    out: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                out.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".onnx"))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise SystemExit(f"list_ops: no such file or directory: {p}")
    return out


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """All nodes of ``graph`` and of every subgraph attribute, depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_nodes(g)


def _short(v, limit: int = 6) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        body = ",".join(_short(x) for x in v[:limit])
        return f"[{body}{',...' if len(v) > limit else ''}]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _show_value(t: onnx.TensorProto) -> bool:
    """Show constant inputs that are attribute-like: scalars, and short integer/bool vectors."""
    n = 1
    for d in t.dims:
        n *= d
    is_int = t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL)
    return n <= 1 or (is_int and len(t.dims) == 1 and n <= 8)


def node_form(node: onnx.NodeProto, consts: Dict[str, onnx.TensorProto]) -> str:
    """A short description of a node's arity, attributes and small constant inputs."""
    from onnx import helper, numpy_helper
    ins = []
    for i in node.input:
        if not i:
            ins.append("_")
        elif i in consts and _show_value(consts[i]):
            ins.append("=" + _short(numpy_helper.to_array(consts[i]).tolist()))
        else:
            ins.append("x")
    outs = ["_" if not o else "y" for o in node.output]
    attrs = []
    for a in sorted(node.attribute, key=lambda a: a.name):
        if a.type == onnx.AttributeProto.TENSOR:
            attrs.append(f"{a.name}=<{onnx.TensorProto.DataType.Name(a.t.data_type)}{list(a.t.dims)}>")
        elif a.type == onnx.AttributeProto.GRAPH:
            attrs.append(f"{a.name}=<graph {len(a.g.node)} nodes>")
        elif a.type == onnx.AttributeProto.GRAPHS:
            attrs.append(f"{a.name}=<{len(a.graphs)} graphs>")
        else:
            attrs.append(f"{a.name}={_short(helper.get_attribute_value(a))}")
    return f"({', '.join(ins)}) -> ({', '.join(outs)})" + (f" {' '.join(attrs)}" if attrs else "")


def small_consts(graph: onnx.GraphProto) -> Dict[str, onnx.TensorProto]:
    out = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = n.attribute[0].t
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Histogram of ONNX op types across .onnx files.")
    ap.add_argument("paths", nargs="+", metavar="DIR_OR_FILE")
    ap.add_argument("--brief", action="store_true", help="omit the per-op file lists")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--forms", action="store_true",
                    help="also list each op's distinct arity/attribute forms")
    args = ap.parse_args(argv)

    files = find_models(args.paths)
    if not files:
        print("list_ops: no .onnx files found", file=sys.stderr)
        return 1
    base = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])

    nodes: Dict[Tuple[str, str], int] = collections.Counter()
    users: Dict[Tuple[str, str], set] = collections.defaultdict(set)
    opsets: Dict[Tuple[str, int], set] = collections.defaultdict(set)
    forms: Dict[Tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    failed: List[Tuple[str, str]] = []
    for f in files:
        rel = os.path.relpath(os.path.abspath(f), base)
        try:
            model = onnx.load(f, load_external_data=False)
        except Exception as e:  # not a protobuf, truncated, ...
            failed.append((rel, f"{type(e).__name__}: {e}"))
            continue
        for imp in model.opset_import:
            opsets[(imp.domain or "ai.onnx", imp.version)].add(rel)
        consts = small_consts(model.graph) if args.forms else {}
        for node in iter_nodes(model.graph):
            key = (node.domain or "ai.onnx", node.op_type)
            nodes[key] += 1
            users[key].add(rel)
            if args.forms:
                forms[key][node_form(node, consts)] += 1

    keys = sorted(nodes, key=lambda k: (k[0] != "ai.onnx", k[0], k[1]))
    if args.json:
        json.dump({
            "files": len(files),
            "ops": [{"domain": d, "op_type": o, "nodes": nodes[(d, o)],
                     "files": sorted(users[(d, o)]),
                     **({"forms": dict(forms[(d, o)].most_common())} if args.forms else {})}
                    for d, o in keys],
            "opsets": [{"domain": d, "version": v, "files": sorted(fs)}
                       for (d, v), fs in sorted(opsets.items())],
            "failed": [{"file": f, "error": e} for f, e in failed],
        }, sys.stdout, indent=1)
        print()
        return 0

    print(f"{len(files)} files under {base}, {len(keys)} distinct op types\n")
    w = max([len(f"{d}::{o}") for d, o in keys] + [10])
    print(f"{'domain::op_type':<{w}}  {'nodes':>7}  {'files':>5}")
    for d, o in keys:
        k = (d, o)
        print(f"{d + '::' + o:<{w}}  {nodes[k]:>7}  {len(users[k]):>5}")
        if args.forms:
            for form, n in forms[k].most_common():
                print(f"{'':<{w}}    form x{n}: {form}")
        if not args.brief:
            fs = sorted(users[k])
            if len(fs) == len(files) - len(failed):
                print(f"{'':<{w}}    (all files)")
            else:
                for f in fs:
                    print(f"{'':<{w}}    {f}")
    print("\nopset imports:")
    for (d, v), fs in sorted(opsets.items()):
        print(f"  {d} v{v}: {len(fs)} files")
    for f, e in failed:
        print(f"could not load {f}: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
