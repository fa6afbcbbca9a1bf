#!/usr/bin/python3
"""Regenerate tbp's committed ONNX test fixtures (deterministically).

Writes, relative to the repository root (or --root):

test/fixtures/onnx/                       valid models, each < 2 MB
  gpt2_tiny_op17_{eval,train}.onnx        models/archs.py GPT2 (hidden 32, 2 layers, heads 2,
                                          vocab 128); input_ids [batch, seq] int64
  bert_tiny_op17_{eval,train}.onnx        models/archs.py Bert; input_ids, attention_mask
                                          [batch, seq] int64 -> logits [batch, 2]
  unet_tiny_op17_{eval,train}.onnx        models/archs.py UNet; x [batch, 3, 16, 16],
                                          timestep [batch] float32
  mlp.onnx                                Gemm/Relu chain, 4 Gemm layers (8-16-16-16-4),
                                          input [batch, 8] float32 -> output [batch, 4]
  data/<model stem>/input_N.pb, output_0.pb
                                          reference TensorProtos for the eval models and the
                                          MLP at batch=2, seq=16 (computed with torch/numpy)
  data/mlp/labels.npy                     cross-entropy labels [1, 3] (int64) for the MLP

test/fixtures/bad/                        inputs tbp must reject (or report) cleanly
  not_protobuf.onnx       text bytes that do not parse as a ModelProto
  truncated.onnx          mlp.onnx cut in half
  empty_graph.onnx        a model whose graph has no nodes (and no inputs/outputs)
  cycle.onnx              two Add nodes feeding each other
  undefined_input.onnx    a node input that nothing produces
  unbound_dim.onnx        input with dim_param "batch" (unbound unless --dim batch=N)
  negative_dim.onnx       input with dim_value -3
  overflow.onnx           float input of shape [2^40, 2^40]
  unsupported_ops.onnx    FooOp x2 and BarOp x1 in domain com.example, plus a Relu
  opset_out_of_range.onnx default-domain opset 6
  opset_too_new.onnx      default-domain opset 99
  conv_stride0.onnx       Conv with strides [0, 0]
  conv_channels.onnx      Conv of a 3-channel input with a 5-channel weight
  conv_rank.onnx          Conv of a rank-3 input with a rank-4 weight (a SIGSEGV in libonnx)
  slice_huge_step.onnx    Shape -> Slice with step 2^63-1 -> Reshape
  int_div_zero.onnx       a Reshape shape computed by dividing the constant 8 by 0
  reshape_count.onnx      Reshape of [2, 4] into [3, 3]
  relu_arity.onnx         Relu with two inputs
  bn_scale.onnx           opset-9 BatchNormalization of 4 channels with a 5-element scale
  gemm_c.onnx             Gemm of [2,4] x [4,3] with C [5]
  gather_index.onnx       Gather along a dimension of 4 with the constant index 9
  dropout_ratio.onnx      Dropout with ratio 2
  labels_out_of_range.npy cross-entropy labels [1, 99] for mlp.onnx (4 classes)
  external_data/model.onnx + model.data
                          valid model whose initializers are external data (must load)
  external_escape/model.onnx
                          initializer whose external-data location is ../../../etc/passwd
                          (must be rejected: path escapes the model directory)
  external_folder/model.onnx
                          initializer whose external-data location is '.', the model's own
                          folder (must be rejected by name, not with an allocation error)

The bad fixtures are built with onnx.helper only and are never passed through
onnx.checker. The torch-based fixtures use models/export_models.py (seeded,
constant folding on). Running the script twice produces byte-identical files.

Usage:
  /usr/bin/python3 models/make_fixtures.py            # writes into <repo>/test/fixtures
  /usr/bin/python3 models/make_fixtures.py --root /tmp/x --skip-torch
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from typing import Dict, List, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OPSET = 17
MAX_FIXTURE_BYTES = 2 * 1024 * 1024
REF_BATCH, REF_SEQ = 2, 16


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _model(graph: onnx.GraphProto, opsets: Dict[str, int] | None = None, ir_version: int = 8) -> onnx.ModelProto:
    """make_model with explicit opset imports / IR version and a fixed producer (no checker)."""
    opsets = {"": OPSET} if opsets is None else opsets
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                          producer_name="tbp-make_fixtures", producer_version="1")
    m.ir_version = ir_version
    return m


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _save(model: onnx.ModelProto, path: str) -> None:
    _write(path, model.SerializeToString())


def _vi(name: str, dims: Sequence, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(dims))


def _relu_model(in_dims: Sequence, opsets: Dict[str, int] | None = None) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"], name="relu")], "relu",
                          [_vi("X", in_dims)], [_vi("Y", in_dims)])
    return _model(g, opsets)


# --------------------------------------------------------------------------
# valid fixtures
# --------------------------------------------------------------------------

MLP_DIMS = [8, 16, 16, 16, 4]


def make_mlp() -> onnx.ModelProto:
    """4 Gemm layers (transB=1, torch layout) with Relu between them; symbolic batch."""
    rng = np.random.RandomState(0)
    nodes, inits = [], []
    cur = "input"
    n_layers = len(MLP_DIMS) - 1
    for i in range(n_layers):
        fin, fout = MLP_DIMS[i], MLP_DIMS[i + 1]
        bound = 1.0 / np.sqrt(fin)
        w = rng.uniform(-bound, bound, (fout, fin)).astype(np.float32)
        b = rng.uniform(-bound, bound, (fout,)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        out = "output" if i == n_layers - 1 else f"fc{i}_out"
        nodes.append(helper.make_node("Gemm", [cur, f"fc{i}.weight", f"fc{i}.bias"], [out],
                                      name=f"fc{i}", alpha=1.0, beta=1.0, transB=1))
        cur = out
        if i != n_layers - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"relu{i}_out"], name=f"relu{i}"))
            cur = f"relu{i}_out"
    g = helper.make_graph(nodes, "mlp", [_vi("input", ["batch", MLP_DIMS[0]])],
                          [_vi("output", ["batch", MLP_DIMS[-1]])], initializer=inits)
    m = _model(g)
    onnx.checker.check_model(m, full_check=True)
    return m


def mlp_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = x
    for i in range(len(MLP_DIMS) - 1):
        h = h @ w[f"fc{i}.weight"].T + w[f"fc{i}.bias"]
        if i != len(MLP_DIMS) - 2:
            h = np.maximum(h, 0)
    return h.astype(np.float32)


GELU_DIMS = (4, 8)


def make_gelu_patterns() -> onnx.ModelProto:
    """Expanded GELUs as exporters write them, for the frontend's fusion (Fusion.h), and near
    misses that must stay expanded. x @ w feeds, in a chain:
      g1  torch nn.GELU():            (h * (erf(h / sqrt2) + 1)) * 0.5
      g2  torch GELU(approximate=tanh): 0.5 * (h * (1 + tanh(k * (h + c * (h * (h * h))))))
      g3  Hugging Face gelu_new:      (0.5 * h) * (1 + tanh(k * (h + c * pow(h, 3))))
      g4  initializer constants:      ((erf(h * (1/sqrt2)) + 1) * 0.5) * h
      g5  halved by a division:       (h * (1 + erf(h * (1/sqrt2)))) / 2
      n1  0.6 instead of 0.5:         not a GELU
      n3  1 + erf read again:         n3 + (1 + erf), not fused (the sum needs it)
      n4  sqrt2 as a [1,1,1] tensor:  broadcasts [4,8] to [1,4,8], not fused
      n2  its erf is a graph output:  not fused (the output needs the intermediate)
    Outputs: n2 and n2's erf, [1,4,8]."""
    rng = np.random.RandomState(3)
    w = (rng.standard_normal((GELU_DIMS[1], GELU_DIMS[1])) / np.sqrt(GELU_DIMS[1])).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(0.7071067690849304, np.float32), "inv_sqrt2"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h0"], name="/fc/MatMul")]

    def const(name: str, value: float, dims=()) -> str:
        nodes.append(helper.make_node("Constant", [], [name], name=name + "_c",
                                      value=numpy_helper.from_array(np.full(dims, value, np.float32), name)))
        return name

    def erf_gelu(p: str, x: str, half: float, y: str, sqrt2_dims=()) -> str:
        nodes.extend([
            helper.make_node("Div", [x, const(p + "sqrt2", 1.4142135381698608, sqrt2_dims)], [p + "div"], name=p + "Div"),
            helper.make_node("Erf", [p + "div"], [p + "erf"], name=p + "Erf"),
            helper.make_node("Add", [p + "erf", const(p + "one", 1.0)], [p + "add"], name=p + "Add"),
            helper.make_node("Mul", [x, p + "add"], [p + "mul"], name=p + "Mul"),
            helper.make_node("Mul", [p + "mul", const(p + "half", half)], [y], name=p + "Mul_1")])
        return y

    erf_gelu("/g1/", "h0", 0.5, "g1")
    p = "/g2/"
    nodes.extend([
        helper.make_node("Mul", ["g1", "g1"], [p + "sq"], name=p + "Mul"),
        helper.make_node("Mul", ["g1", p + "sq"], [p + "cube"], name=p + "Mul_1"),
        helper.make_node("Mul", [const(p + "c", 0.044715), p + "cube"], [p + "cubic"], name=p + "Mul_2"),
        helper.make_node("Add", ["g1", p + "cubic"], [p + "inner"], name=p + "Add"),
        helper.make_node("Mul", [const(p + "k", 0.7978845834732056), p + "inner"], [p + "scaled"], name=p + "Mul_3"),
        helper.make_node("Tanh", [p + "scaled"], [p + "tanh"], name=p + "Tanh"),
        helper.make_node("Add", [const(p + "one", 1.0), p + "tanh"], [p + "add"], name=p + "Add_1"),
        helper.make_node("Mul", ["g1", p + "add"], [p + "mul"], name=p + "Mul_4"),
        helper.make_node("Mul", [const(p + "half", 0.5), p + "mul"], ["g2"], name=p + "Mul_5")])
    p = "/g3/"
    nodes.extend([
        helper.make_node("Mul", [const(p + "half", 0.5), "g2"], [p + "halfx"], name=p + "Mul"),
        helper.make_node("Pow", ["g2", const(p + "three", 3.0)], [p + "cube"], name=p + "Pow"),
        helper.make_node("Mul", [const(p + "c", 0.044715), p + "cube"], [p + "cubic"], name=p + "Mul_1"),
        helper.make_node("Add", ["g2", p + "cubic"], [p + "inner"], name=p + "Add"),
        helper.make_node("Mul", [const(p + "k", 0.7978845608028654), p + "inner"], [p + "scaled"], name=p + "Mul_2"),
        helper.make_node("Tanh", [p + "scaled"], [p + "tanh"], name=p + "Tanh"),
        helper.make_node("Add", [const(p + "one", 1.0), p + "tanh"], [p + "add"], name=p + "Add_1"),
        helper.make_node("Mul", [p + "halfx", p + "add"], ["g3"], name=p + "Mul_3")])
    p = "/g4/"
    nodes.extend([
        helper.make_node("Mul", ["g3", "inv_sqrt2"], [p + "scaled"], name=p + "Mul"),
        helper.make_node("Erf", [p + "scaled"], [p + "erf"], name=p + "Erf"),
        helper.make_node("Add", ["one", p + "erf"], [p + "add"], name=p + "Add"),
        helper.make_node("Mul", [p + "add", "half"], [p + "halfa"], name=p + "Mul_1"),
        helper.make_node("Mul", ["g3", p + "halfa"], ["g4"], name=p + "Mul_2")])
    p = "/g5/"
    nodes.extend([
        helper.make_node("Mul", [const(p + "inv_sqrt2", 0.7071067690849304), "g4"], [p + "scaled"], name=p + "Mul"),
        helper.make_node("Erf", [p + "scaled"], [p + "erf"], name=p + "Erf"),
        helper.make_node("Add", [const(p + "one", 1.0), p + "erf"], [p + "add"], name=p + "Add"),
        helper.make_node("Mul", ["g4", p + "add"], [p + "mul"], name=p + "Mul_1"),
        helper.make_node("Div", [p + "mul", const(p + "two", 2.0)], ["g5"], name=p + "Div_1")])
    erf_gelu("/n1/", "g5", 0.6, "n1")
    erf_gelu("/n3/", "n1", 0.5, "n3g")
    nodes.append(helper.make_node("Add", ["n3g", "/n3/add"], ["n3"], name="/n3/Add_2"))
    erf_gelu("/n4/", "n3", 0.5, "n4", sqrt2_dims=(1, 1, 1))
    erf_gelu("/n2/", "n4", 0.5, "n2")
    out_dims = (1,) + GELU_DIMS
    g = helper.make_graph(nodes, "gelu_patterns", [_vi("x", GELU_DIMS)],
                          [_vi("n2", out_dims), _vi("/n2/erf", out_dims)], initializer=inits)
    m = _model(g)
    onnx.checker.check_model(m, full_check=True)
    return m


def gelu_reference(model: onnx.ModelProto, x: np.ndarray) -> List[np.ndarray]:
    """The fixture's outputs in float64, from the exact GELU formulas."""
    from math import erf, pi, sqrt
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["w"].astype(np.float64)
    verf = np.vectorize(erf)

    def gelu(h, half=0.5):
        return half * h * (1 + verf(h / sqrt(2)))

    def gelu_tanh(h):
        return 0.5 * h * (1 + np.tanh(sqrt(2 / pi) * (h + 0.044715 * h ** 3)))

    g5 = gelu(gelu(gelu_tanh(gelu_tanh(gelu(x.astype(np.float64) @ w)))))
    n1 = gelu(g5, 0.6)
    n3 = gelu(n1) + (1 + verf(n1 / sqrt(2)))
    n4 = gelu(n3).reshape((1,) + GELU_DIMS)
    return [gelu(n4).astype(np.float32), verf(n4 / sqrt(2)).astype(np.float32)]


def make_inert_dropouts() -> onnx.ModelProto:
    """Dropouts that pass their input through (the frontend elides them) and ones that do not.
    x @ w feeds, in a chain:
      d1  no ratio or training_mode input (inference)        elided
      d2  ratio 0.5, training_mode a constant false           elided
      d3  ratio 0 (initializer), training_mode true           elided
      d4  ratio 0, training_mode true, its mask read          kept
      d5  ratio 0.5, training_mode true                       kept
      d6  ratio 0.5, training_mode a graph input              kept
    Output: d6."""
    w = np.eye(GELU_DIMS[1], dtype=np.float32)
    t = numpy_helper.from_array(np.array(True), "true")
    f = numpy_helper.from_array(np.array(False), "false")
    inits = [numpy_helper.from_array(w, "w"), t, f,
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(0.5, np.float32), "ratio")]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h0"], name="fc"),
        helper.make_node("Dropout", ["h0"], ["d1"], name="drop1"),
        helper.make_node("Dropout", ["d1", "ratio", "false"], ["d2"], name="drop2"),
        helper.make_node("Dropout", ["d2", "zero", "true"], ["d3", "d3_mask"], name="drop3"),
        helper.make_node("Dropout", ["d3", "zero", "true"], ["d4", "d4_mask"], name="drop4"),
        helper.make_node("Cast", ["d4_mask"], ["d4_maskf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["d4", "d4_maskf"], ["d4m"], name="mul"),
        helper.make_node("Dropout", ["d4m", "ratio", "true"], ["d5"], name="drop5"),
        helper.make_node("Dropout", ["d5", "ratio", "training"], ["d6"], name="drop6")]
    g = helper.make_graph(nodes, "inert_dropouts",
                          [_vi("x", GELU_DIMS), _vi("training", [], TensorProto.BOOL)],
                          [_vi("d6", GELU_DIMS)], initializer=inits)
    m = _model(g)
    onnx.checker.check_model(m, full_check=True)
    return m


def write_reference(dir_: str, names_in: List[str], inputs: List[np.ndarray],
                    names_out: List[str], outputs: List[np.ndarray]) -> None:
    if os.path.isdir(dir_):
        shutil.rmtree(dir_)
    for i, (n, a) in enumerate(zip(names_in, inputs)):
        _write(os.path.join(dir_, f"input_{i}.pb"), numpy_helper.from_array(a, n).SerializeToString())
    for i, (n, a) in enumerate(zip(names_out, outputs)):
        _write(os.path.join(dir_, f"output_{i}.pb"), numpy_helper.from_array(a, n).SerializeToString())


def make_valid(out: str, with_torch: bool) -> List[str]:
    written = []
    mlp = make_mlp()
    p = os.path.join(out, "mlp.onnx")
    _save(mlp, p)
    written.append(p)
    x = np.random.RandomState(1).standard_normal((REF_BATCH, MLP_DIMS[0])).astype(np.float32)
    write_reference(os.path.join(out, "data", "mlp"), ["input"], [x], ["output"], [mlp_reference(mlp, x)])
    # Cross-entropy labels for the reference input (test/cli/cases/run_targets_from_file).
    p = os.path.join(out, "data", "mlp", "labels.npy")
    np.save(p, np.array([1, 3], dtype=np.int64))
    written.append(p)
    gelu = make_gelu_patterns()
    p = os.path.join(out, "gelu_patterns.onnx")
    _save(gelu, p)
    written.append(p)
    x = np.random.RandomState(2).standard_normal(GELU_DIMS).astype(np.float32)
    write_reference(os.path.join(out, "data", "gelu_patterns"), ["x"], [x], ["n2", "/n2/erf"], gelu_reference(gelu, x))
    p = os.path.join(out, "inert_dropouts.onnx")
    _save(make_inert_dropouts(), p)
    written.append(p)

    if not with_torch:
        return written
    import torch
    sys.path.insert(0, HERE)
    import export_models  # noqa: E402

    torch.set_num_threads(1)  # reference outputs independent of the thread count
    for name in export_models.TINY_MODELS:
        for mode in ("eval", "train"):
            p = export_models.export_one(name, out, OPSET, mode, tiny=True)
            written.append(p)
            if mode != "eval":
                continue  # dropout / batch statistics: no stable reference output
            torch.manual_seed(0)
            ex = export_models.MODELS[name][0](True)
            ex.module.eval()
            inputs = ex.module.example_inputs(REF_BATCH, REF_SEQ) if name != "unet" \
                else ex.module.example_inputs(REF_BATCH)
            with torch.no_grad():
                y = ex.module(*inputs)
            stem = os.path.splitext(os.path.basename(p))[0]
            write_reference(os.path.join(out, "data", stem), ex.input_names,
                            [t.numpy() for t in inputs], ex.output_names, [y.numpy()])
    return written


# --------------------------------------------------------------------------
# bad fixtures
# --------------------------------------------------------------------------

def make_bad(out: str, mlp_bytes: bytes) -> List[str]:
    written: List[str] = []

    def save(name: str, model_or_bytes) -> None:
        p = os.path.join(out, name)
        _write(p, model_or_bytes if isinstance(model_or_bytes, bytes) else model_or_bytes.SerializeToString())
        written.append(p)

    # Text that is not a ModelProto: 't' (0x74) is field 14 with wire type 4
    # (end-group) which no parser accepts at top level; the rest is seeded noise.
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?\n"
    text = "this is not an onnx model\n" + "".join(rng.choice(alphabet) for _ in range(486))
    save("not_protobuf.onnx", text.encode("ascii"))

    save("truncated.onnx", mlp_bytes[: len(mlp_bytes) // 2])

    save("empty_graph.onnx", _model(helper.make_graph([], "empty", [], [])))

    # A -> Add1 -> B -> Add2 -> A  (X feeds both so the nodes have two inputs each)
    g = helper.make_graph(
        [helper.make_node("Add", ["X", "B"], ["A"], name="add_a"),
         helper.make_node("Add", ["A", "X"], ["B"], name="add_b")],
        "cycle", [_vi("X", [2, 3])], [_vi("B", [2, 3])])
    save("cycle.onnx", _model(g))

    g = helper.make_graph([helper.make_node("Add", ["X", "ghost"], ["Y"], name="add")],
                          "undefined_input", [_vi("X", [2, 3])], [_vi("Y", [2, 3])])
    save("undefined_input.onnx", _model(g))

    save("unbound_dim.onnx", _relu_model(["batch", 4]))
    save("negative_dim.onnx", _relu_model([-3, 4]))
    save("overflow.onnx", _relu_model([2 ** 40, 2 ** 40]))

    g = helper.make_graph(
        [helper.make_node("FooOp", ["X"], ["f1"], name="foo1", domain="com.example"),
         helper.make_node("FooOp", ["f1"], ["f2"], name="foo2", domain="com.example"),
         helper.make_node("BarOp", ["f2"], ["b"], name="bar", domain="com.example", alpha=0.5),
         helper.make_node("Relu", ["b"], ["Y"], name="relu")],
        "unsupported_ops", [_vi("X", [2, 3])], [_vi("Y", [2, 3])])
    save("unsupported_ops.onnx", _model(g, {"": OPSET, "com.example": 1}))

    save("opset_out_of_range.onnx", _relu_model([2, 3], {"": 6}))
    save("opset_too_new.onnx", _relu_model([2, 3], {"": 99}))

    # Models that broke tbp's import before it checked them (found by fuzzing, 2026-12-04):
    # libonnx's Conv shape inference divides by the stride (SIGFPE), its data propagation loops
    # on a Slice step near 2^63, tbp's folding divided an integer by zero, and ONNX's inference
    # checks neither a Conv's channels nor a Reshape's element count nor an op's input count.
    def i64(name: str, values: Sequence[int]) -> TensorProto:
        return numpy_helper.from_array(np.array(values, dtype=np.int64), name)

    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), dtype=np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["X", "W"], ["Y"], name="conv", strides=[0, 0])], "conv_stride0",
                          [_vi("X", [1, 3, 8, 8])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=[w])
    save("conv_stride0.onnx", _model(g))
    w = numpy_helper.from_array(np.zeros((4, 5, 3, 3), dtype=np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["X", "W"], ["Y"], name="conv")], "conv_channels",
                          [_vi("X", [1, 3, 8, 8])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=[w])
    save("conv_channels.onnx", _model(g))
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), dtype=np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["X", "W"], ["Y"], name="conv")], "conv_rank",
                          [_vi("X", [3, 8, 8])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=[w])
    save("conv_rank.onnx", _model(g))
    g = helper.make_graph([helper.make_node("Shape", ["X"], ["s"], name="shape"),
                           helper.make_node("Slice", ["s", "st", "en", "ax", "step"], ["r"], name="slice"),
                           helper.make_node("Reshape", ["X", "r"], ["Y"], name="reshape")], "slice_huge_step",
                          [_vi("X", [1, 4, 8, 8])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          initializer=[i64("st", [1]), i64("en", [2 ** 63 - 1]), i64("ax", [0]), i64("step", [2 ** 63 - 1])])
    save("slice_huge_step.onnx", _model(g))
    g = helper.make_graph([helper.make_node("Div", ["n", "zero"], ["q"], name="div"),
                           helper.make_node("Reshape", ["X", "q"], ["Y"], name="reshape")], "int_div_zero",
                          [_vi("X", [2, 4])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=[i64("n", [8]), i64("zero", [0])])
    save("int_div_zero.onnx", _model(g))
    g = helper.make_graph([helper.make_node("Reshape", ["X", "shape"], ["Y"], name="reshape")], "reshape_count",
                          [_vi("X", [2, 4])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=[i64("shape", [3, 3])])
    save("reshape_count.onnx", _model(g))
    g = helper.make_graph([helper.make_node("Relu", ["X", "X"], ["Y"], name="relu")], "relu_arity",
                          [_vi("X", [2, 3])], [_vi("Y", [2, 3])])
    save("relu_arity.onnx", _model(g))
    # Operands ONNX's inference does not check either (second fuzzing pass).
    f32 = lambda name, dims: numpy_helper.from_array(np.zeros(dims, dtype=np.float32), name)  # noqa: E731
    g = helper.make_graph([helper.make_node("BatchNormalization", ["X", "s", "b", "m", "v"], ["Y"], name="bn")], "bn_scale",
                          [_vi("X", [2, 4, 3, 3])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          initializer=[f32("s", [5]), f32("b", [4]), f32("m", [4]), f32("v", [4])])
    save("bn_scale.onnx", _model(g, {"": 9}))
    g = helper.make_graph([helper.make_node("Gemm", ["X", "B", "C"], ["Y"], name="gemm")], "gemm_c",
                          [_vi("X", [2, 4])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          initializer=[f32("B", [4, 3]), f32("C", [5])])
    save("gemm_c.onnx", _model(g))
    g = helper.make_graph([helper.make_node("Gather", ["X", "idx"], ["Y"], name="gather", axis=1)], "gather_index",
                          [_vi("X", [2, 4])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          initializer=[i64("idx", [9])])
    save("gather_index.onnx", _model(g))
    g = helper.make_graph([helper.make_node("Dropout", ["X", "ratio"], ["Y"], name="dropout")], "dropout_ratio",
                          [_vi("X", [2, 4])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(np.array(2.0, dtype=np.float32), "ratio")])
    save("dropout_ratio.onnx", _model(g))
    # Cross-entropy labels for onnx/mlp.onnx at batch 2 (4 classes) with one out of range.
    p = os.path.join(out, "labels_out_of_range.npy")
    np.save(p, np.array([1, 99], dtype=np.int64))
    written.append(p)

    # Valid model with its initializer in a side file next to it.
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    winit = numpy_helper.from_array(w, "W")
    g = helper.make_graph([helper.make_node("Add", ["X", "W"], ["Y"], name="add")], "external_data",
                          [_vi("X", [3, 4])], [_vi("Y", [3, 4])], initializer=[winit])
    m = _model(g)
    onnx.checker.check_model(m, full_check=True)
    ext_dir = os.path.join(out, "external_data")
    if os.path.isdir(ext_dir):
        shutil.rmtree(ext_dir)
    os.makedirs(ext_dir)
    onnx.save_model(m, os.path.join(ext_dir, "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.data", size_threshold=0)
    onnx.checker.check_model(os.path.join(ext_dir, "model.onnx"))
    written += [os.path.join(ext_dir, "model.onnx"), os.path.join(ext_dir, "model.data")]

    # The same model with its initializer's external data at `location` (not a valid file).
    def external_at(name: str, location: str) -> None:
        t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 4])
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "48")):
            e = t.external_data.add()
            e.key, e.value = k, v
        g = helper.make_graph([helper.make_node("Add", ["X", "W"], ["Y"], name="add")], name,
                              [_vi("X", [3, 4])], [_vi("Y", [3, 4])], initializer=[t])
        save(os.path.join(name, "model.onnx"), _model(g))

    external_at("external_escape", "../../../etc/passwd")  # escapes the model directory
    external_at("external_folder", ".")  # the model's own folder: a folder, not a file
    return written


# --------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate tbp's ONNX test fixtures.")
    ap.add_argument("--root", default=REPO, help="repository root (default: %(default)s)")
    ap.add_argument("--skip-torch", action="store_true",
                    help="only write fixtures that need no torch (mlp, gelu_patterns, inert_dropouts, bad/)")
    args = ap.parse_args(argv)

    onnx_dir = os.path.join(args.root, "test", "fixtures", "onnx")
    bad_dir = os.path.join(args.root, "test", "fixtures", "bad")
    os.makedirs(onnx_dir, exist_ok=True)
    os.makedirs(bad_dir, exist_ok=True)

    written = make_valid(onnx_dir, with_torch=not args.skip_torch)
    with open(os.path.join(onnx_dir, "mlp.onnx"), "rb") as f:
        written += make_bad(bad_dir, f.read())

    for p in written:
        size = os.path.getsize(p)
        if size > MAX_FIXTURE_BYTES:
            raise SystemExit(f"fixture too large: {p} ({size} bytes)")
        print(f"{os.path.relpath(p, args.root)}  {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
