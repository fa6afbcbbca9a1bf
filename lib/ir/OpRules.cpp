#include "tbp/ir/OpRules.h"

#include "tbp/support/Bytes.h"

#include <algorithm>
#include <cctype>
#include <map>

namespace tbp::ir {

namespace {

uint64_t numel(const Value& v) {
  uint64_t n = 1;
  for (int64_t d : v.type.shape) n = checkedMul(n, static_cast<uint64_t>(d)).value_or(UINT64_MAX);
  return n;
}


const Value* inputOf(const Graph& g, const Node& n, size_t i) {
  if (i >= n.inputs.size() || n.inputs[i] == kNone) return nullptr;
  return &g.value(n.inputs[i]);
}

uint64_t outputElems(const Graph& g, const Node& n) {
  uint64_t total = 0;
  for (ValueId o : n.outputs) total = saturatingAdd(total, numel(g.value(o)));
  return total;
}

/// Product of the kernel's spatial dims (weight dims 2..).
uint64_t kernelVolume(const Value* weight) {
  uint64_t k = 1;
  if (!weight) return k;
  for (size_t i = 2; i < weight->type.shape.size(); ++i)
    k = saturatingMul(k, static_cast<uint64_t>(weight->type.shape[i]));
  return k;
}

uint64_t matmulFlops(const Graph& g, const Node& n) {
  const Value* a = inputOf(g, n, 0);
  const Value* b = inputOf(g, n, 1);
  if (!a || !b || n.outputs.empty()) return 0;
  // 2·K per output element, where K is the contracted dimension of A.
  const Shape& as = a->type.shape;
  uint64_t k = as.empty() ? 1 : static_cast<uint64_t>(as.back());
  if (n.op == Op::Gemm && n.attrInt("transA", 0) && as.size() == 2) k = static_cast<uint64_t>(as[0]);
  uint64_t out = numel(g.value(n.outputs[0]));
  uint64_t flops = saturatingMul(saturatingMul(2, k), out);
  if (n.op == Op::Gemm && inputOf(g, n, 2)) flops = saturatingAdd(flops, out);
  return flops;
}

} // namespace

uint64_t estimateFlops(const Graph& g, const Node& n) {
  const OpInfo& info = opInfo(n.op);
  switch (info.flops) {
  case FlopRule::Zero: return 0;
  case FlopRule::OutElem: return saturatingMul(info.flopsPerElem, outputElems(g, n));
  case FlopRule::InElem: {
    const Value* x = inputOf(g, n, 0);
    return x ? saturatingMul(info.flopsPerElem, numel(*x)) : 0;
  }
  case FlopRule::MatMul:
  case FlopRule::Gemm: return matmulFlops(g, n);
  case FlopRule::Conv: {
    const Value* w = inputOf(g, n, 1);
    if (!w || w->type.shape.size() < 2 || n.outputs.empty()) return 0;
    uint64_t cinPerGroup = static_cast<uint64_t>(w->type.shape[1]);
    uint64_t flops = saturatingMul(saturatingMul(2, numel(g.value(n.outputs[0]))), saturatingMul(cinPerGroup, kernelVolume(w)));
    return flops;
  }
  case FlopRule::ConvTranspose: {
    const Value* x = inputOf(g, n, 0);
    const Value* w = inputOf(g, n, 1);
    if (!x || !w || w->type.shape.size() < 2) return 0;
    uint64_t coutPerGroup = static_cast<uint64_t>(w->type.shape[1]);
    return saturatingMul(saturatingMul(2, numel(*x)), saturatingMul(coutPerGroup, kernelVolume(w)));
  }
  case FlopRule::Einsum: {
    // Every distinct letter of the equation indexes one loop; sizes come from the operands.
    std::string eq = n.attrString("equation");
    std::string lhs = eq.substr(0, eq.find("->"));
    std::map<char, uint64_t> sizes;
    size_t operand = 0, axis = 0;
    for (char c : lhs) {
      if (c == ',') { ++operand; axis = 0; continue; }
      if (!std::isalpha(static_cast<unsigned char>(c))) continue;
      const Value* v = inputOf(g, n, operand);
      if (v && axis < v->type.shape.size()) sizes[c] = static_cast<uint64_t>(v->type.shape[axis]);
      ++axis;
    }
    uint64_t loops = 2;
    for (const auto& [letter, size] : sizes) loops = saturatingMul(loops, size);
    return loops;
  }
  case FlopRule::Pool: {
    uint64_t window = 1;
    for (int64_t k : n.attrInts("kernel_shape")) window = saturatingMul(window, static_cast<uint64_t>(k));
    return saturatingMul(saturatingMul(info.flopsPerElem, window), outputElems(g, n));
  }
  }
  return 0;
}

bool inputTakesGradient(const Node& node, size_t index) {
  const uint32_t mask = opInfo(node.op).noGradInputs;
  return index >= 32 ? mask != 0xffffffffu : (mask & (1u << index)) == 0;
}

namespace {

/// Whether input `i` of `n` requires a gradient in the step: by `needsGrad` when given,
/// otherwise every parameter and activation does (graph inputs and constants do not).
bool inputRequiresGrad(const Graph& g, const Node& n, size_t i, const std::vector<bool>* needsGrad) {
  const Value* v = inputOf(g, n, i);
  if (!v || !inputTakesGradient(n, i) || !isFloat(v->type.dtype)) return false;
  if (needsGrad) return n.inputs[i] < needsGrad->size() && (*needsGrad)[n.inputs[i]];
  return v->kind == ValueKind::Parameter || v->kind == ValueKind::Activation;
}

} // namespace

SavedForBackward savedForBackward(const Graph& g, const Node& n, const std::vector<bool>* needsGrad) {
  const OpInfo& info = opInfo(n.op);
  SavedForBackward saved;
  // An op none of whose inputs can take a gradient needs no tape at all.
  bool anyGrad = false;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    const Value* v = inputOf(g, n, i);
    if (v && inputTakesGradient(n, i) && isFloat(v->type.dtype)) anyGrad = true;
  }
  if (!anyGrad) return saved;
  for (size_t i = 0; i < n.inputs.size() && i < 32; ++i) {
    if (!((info.savedInputs >> i) & 1u) || n.inputs[i] == kNone) continue;
    if ((info.crossInputs >> i) & 1u) {
      bool otherNeeds = false;
      // The other operands are the other saved inputs (Gemm's bias needs neither A nor B).
      for (size_t j = 0; j < n.inputs.size() && j < 32; ++j)
        otherNeeds = otherNeeds || (j != i && ((info.savedInputs >> j) & 1u) && inputRequiresGrad(g, n, j, needsGrad));
      if (!otherNeeds) continue;
    }
    saved.values.push_back(n.inputs[i]);
  }
  for (size_t j = 0; j < n.outputs.size() && j < 32; ++j)
    if ((info.savedOutputs >> j) & 1u) saved.values.push_back(n.outputs[j]);
  std::sort(saved.values.begin(), saved.values.end());
  saved.values.erase(std::unique(saved.values.begin(), saved.values.end()), saved.values.end());

  const Value* x = inputOf(g, n, 0);
  const Value* y = n.outputs.empty() ? nullptr : &g.value(n.outputs[0]);
  auto dim = [](const Value* v, size_t i) -> uint64_t {
    return v && i < v->type.shape.size() ? static_cast<uint64_t>(v->type.shape[i]) : 1;
  };
  switch (info.extra) {
  case ExtraSaved::None: break;
  case ExtraSaved::Mask:
    // A materialized mask output (ONNX Dropout's second output) is the saved mask itself.
    if (n.outputs.size() >= 2) {
      saved.values.push_back(n.outputs[1]);
      std::sort(saved.values.begin(), saved.values.end());
    } else if (y) {
      saved.extraBytes = numel(*y);
    }
    break;
  case ExtraSaved::MaxIndices: saved.extraBytes = y ? saturatingMul(numel(*y), 8) : 0; break;
  case ExtraSaved::BatchStats: saved.extraBytes = saturatingMul(8, dim(x, 1)); break;
  case ExtraSaved::InstanceStats: saved.extraBytes = saturatingMul(8, saturatingMul(dim(x, 0), dim(x, 1))); break;
  case ExtraSaved::RowStats: {
    if (!x) break;
    int64_t rank = static_cast<int64_t>(x->type.shape.size());
    int64_t axis = n.attrInt("axis", -1);
    if (axis < 0) axis += rank;
    uint64_t rows = 1;
    for (int64_t i = 0; i < axis && i < rank; ++i) rows = saturatingMul(rows, dim(x, static_cast<size_t>(i)));
    saved.extraBytes = saturatingMul(8, rows);
    break;
  }
  }
  return saved;
}

namespace {

uint64_t tableBackwardScratch(const Graph& graph, const Node& node, const std::vector<bool>* needsGrad) {
  if (node.outputs.empty()) return 0;
  if (node.op == Op::Conv || node.op == Op::ConvTranspose) {
    if (node.inputs.empty() || node.inputs[0] == kNone) return 0;
    return graph.value(node.inputs[0]).bytes + graph.value(node.outputs[0]).bytes;
  }
  if (node.op == Op::Mul) {
    // The gradient of a broadcast factor is (g * other) reduced to its shape: the product is
    // a full-size temporary (measured: x * s with s a [C,1,1] parameter).
    uint64_t scratch = 0;
    const uint64_t out = graph.value(node.outputs[0]).bytes;
    for (size_t i = 0; i < node.inputs.size() && i < 2; ++i)
      if (node.inputs[i] != kNone && graph.value(node.inputs[i]).bytes < out && inputRequiresGrad(graph, node, i, needsGrad))
        scratch = saturatingAdd(scratch, out);
    return scratch;
  }
  const uint32_t halves = opInfo(node.op).backwardScratchHalves;
  if (halves == 0) return 0;
  if (node.op == Op::Div && !inputRequiresGrad(graph, node, 1, needsGrad)) return 0; // only the divisor's gradient
  return saturatingMul(graph.value(node.outputs[0]).bytes, halves) / 2;
}

uint64_t tableForwardScratch(const Graph& graph, const Node& node) {
  if (node.op != Op::Conv || node.inputs.size() < 2 || node.inputs[0] == kNone || node.inputs[1] == kNone || node.outputs.empty())
    return 0;
  return saturatingAdd(std::max(graph.value(node.inputs[0]).bytes, graph.value(node.outputs[0]).bytes), graph.value(node.inputs[1]).bytes);
}

} // namespace

uint64_t backwardScratchBytes(const Graph& graph, const Node& node, const std::vector<bool>* needsGrad) {
  const uint64_t table = tableBackwardScratch(graph, node, needsGrad);
  return node.scratch ? std::max(table, node.scratch->backward) : table;
}

uint64_t forwardScratchBytes(const Graph& graph, const Node& node) {
  const uint64_t table = tableForwardScratch(graph, node);
  return node.scratch ? std::max(table, node.scratch->forward) : table;
}

bool isTrainingBatchNorm(const Node& node) {
  return node.op == Op::BatchNormalization && (node.attrInt("training_mode", 0) != 0 || node.outputs.size() > 1);
}

uint64_t batchStatsBytes(const Graph& graph, const Node& node) {
  if (!isTrainingBatchNorm(node) || node.inputs.empty() || node.inputs[0] == kNone) return 0;
  const Shape& shape = graph.value(node.inputs[0]).type.shape;
  return shape.size() < 2 ? 0 : saturatingMul(8, static_cast<uint64_t>(shape[1]));
}

} // namespace tbp::ir
