#!/usr/bin/python3
"""Generate the ONNX backend node tests from the installed onnx package.

Equivalent to ``python -m onnx.backend.test.cmd_tools generate-data -o DIR``
(restricted to the ``node`` kind by default), but works with numpy >= 1.24:
the onnx 1.12 test generators still use the removed aliases ``np.float``,
``np.int``, ``np.bool`` and ``np.object``, which are restored here (as the
builtins they used to alias) before the generators are imported.

Output layout (the standard one, as in onnx/backend/test/data):
  DIR/node/test_xxx/model.onnx
  DIR/node/test_xxx/test_data_set_0/input_0.pb ... output_0.pb

Generation is deterministic: onnx seeds numpy's global RNG with 0 before every
export function, and tests are written in the package's (sorted) module order.
Each model's opset import is the ``since_version`` of the op's newest schema
(not one common opset), which is what the backend tests are meant to carry.

Usage:
  /usr/bin/python3 models/gen_node_tests.py --out /tmp/tbp_node_tests
  /usr/bin/python3 models/gen_node_tests.py --out DIR --op-type Conv      # one op only
  /usr/bin/python3 models/gen_node_tests.py --out DIR --kinds node,simple # + model-level cases
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import time
from typing import Sequence

import numpy as np


def restore_numpy_aliases() -> None:
    """Re-add the aliases numpy 1.24 removed (np.float is float, etc.)."""
    for name, value in (("float", float), ("int", int), ("bool", bool), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, value)


def _tensor_proto(value, vi, numpy_helper):
    """Serialize one input/output value according to its ValueInfo type (as cmd_tools does)."""
    t = vi.type
    if t.HasField("map_type"):
        return numpy_helper.from_dict(value, vi.name)
    if t.HasField("sequence_type"):
        return numpy_helper.from_list(value, vi.name)
    if t.HasField("optional_type"):
        return numpy_helper.from_optional(value, vi.name)
    assert t.HasField("tensor_type"), vi.name
    return numpy_helper.from_array(value, vi.name)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate ONNX backend node test data.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--op-type", default=None, help="only tests whose node has this op_type")
    ap.add_argument("--kinds", default="node",
                    help="comma-separated test kinds to write: node, simple, real (default: node)")
    ap.add_argument("--clean", action="store_true", help="remove DIR/<kind> before writing")
    args = ap.parse_args(argv)
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}

    restore_numpy_aliases()
    import onnx
    from onnx import numpy_helper
    import onnx.backend.test.case.model as model_test
    import onnx.backend.test.case.node as node_test

    t0 = time.time()
    cases = []
    if kinds - {"node"}:
        cases += [c for c in model_test.collect_testcases() if c.kind in kinds]
    if "node" in kinds:
        cases += node_test.collect_testcases(args.op_type)
    t_collect = time.time() - t0

    for kind in sorted({c.kind for c in cases}):
        d = os.path.join(args.out, kind)
        if args.clean and os.path.isdir(d):
            shutil.rmtree(d)

    imports = {}  # (kind, name) -> opset imports; a later case with the same name overwrites
    written = collections.Counter()
    for case in cases:
        case_dir = os.path.join(args.out, case.kind, case.name)
        if os.path.exists(case_dir):
            shutil.rmtree(case_dir)
        os.makedirs(case_dir)
        if case.kind == "real":  # only a download pointer; never fetched here
            import json
            with open(os.path.join(case_dir, "data.json"), "w") as f:
                json.dump({"url": case.url, "model_name": case.model_name,
                           "rtol": case.rtol, "atol": case.atol}, f, sort_keys=True)
            written[case.kind] += 1
            continue
        model = case.model
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(model.SerializeToString())
        imports[(case.kind, case.name)] = [(imp.domain or "ai.onnx", imp.version) for imp in model.opset_import]
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(ds)
            for j, value in enumerate(inputs):
                with open(os.path.join(ds, f"input_{j}.pb"), "wb") as f:
                    f.write(_tensor_proto(value, model.graph.input[j], numpy_helper).SerializeToString())
            for j, value in enumerate(outputs):
                with open(os.path.join(ds, f"output_{j}.pb"), "wb") as f:
                    f.write(_tensor_proto(value, model.graph.output[j], numpy_helper).SerializeToString())
        written[case.kind] += 1

    total = time.time() - t0
    dirs = {(c.kind, c.name) for c in cases}
    print(f"onnx {onnx.__version__}: generated {sum(written.values())} test cases into {len(dirs)} "
          f"directories ({', '.join(f'{k}: {n}' for k, n in sorted(written.items()))}) under {args.out} "
          f"in {total:.1f} s (collection {t_collect:.1f} s)")
    dup = sum(written.values()) - len(dirs)
    if dup:
        print(f"note: {dup} case name(s) occur twice in onnx's generators; the later one is kept")
    default = collections.Counter(v for imps in imports.values() for d, v in imps if d == "ai.onnx")
    other = collections.Counter(f"{d} v{v}" for imps in imports.values() for d, v in imps if d != "ai.onnx")
    print("default-domain opset versions (per test directory): "
          + ", ".join(f"v{v}: {n}" for v, n in sorted(default.items())))
    no_default = sum(1 for imps in imports.values() if all(d != "ai.onnx" for d, _ in imps))
    if other:
        print("other domains: " + ", ".join(f"{k}: {n}" for k, n in sorted(other.items()))
              + f" ({no_default} tests import no default-domain opset)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
