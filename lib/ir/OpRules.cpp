#include "tbp/ir/OpRules.h"

#include "tbp/support/Bytes.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <optional>

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

/// Batch times groups of a GroupNorm: the rows of its [N, num_groups] statistics.
uint64_t groupRows(const Graph& graph, const Node& node) {
  const Value* x = inputOf(graph, node, 0);
  if (!x || x->type.shape.empty()) return 0;
  return saturatingMul(static_cast<uint64_t>(x->type.shape[0]), static_cast<uint64_t>(std::max<int64_t>(node.attrInt("num_groups", 1), 1)));
}

} // namespace

WindowPadding windowPadding(const Node& n, const std::vector<int64_t>& spatial, const std::vector<int64_t>& kernel) {
  const size_t rank = kernel.size();
  WindowPadding w{std::vector<int64_t>(rank, 0), std::vector<int64_t>(rank, 0)};
  const std::string autoPad = n.attrString("auto_pad", "NOTSET");
  if (autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER") {
    const std::vector<int64_t> strides = n.attrInts("strides", std::vector<int64_t>(rank, 1));
    const std::vector<int64_t> dilations = n.attrInts("dilations", std::vector<int64_t>(rank, 1));
    for (size_t i = 0; i < rank && i < spatial.size() && i < strides.size() && i < dilations.size(); ++i) {
      const int64_t in = spatial[i], st = std::max<int64_t>(strides[i], 1);
      const int64_t out = (in + st - 1) / st;
      const int64_t total = std::max<int64_t>(0, (out - 1) * st + (kernel[i] - 1) * dilations[i] + 1 - in);
      const int64_t small = total / 2;
      w.begin[i] = autoPad == "SAME_UPPER" ? small : total - small;
      w.end[i] = total - w.begin[i];
    }
  } else if (autoPad != "VALID") {
    const std::vector<int64_t> pads = n.attrInts("pads", std::vector<int64_t>(2 * rank, 0));
    for (size_t i = 0; i < rank && i + rank < pads.size(); ++i) {
      w.begin[i] = pads[i];
      w.end[i] = pads[i + rank];
    }
  }
  return w;
}

bool needsPaddedCopy(const Node& n, const WindowPadding& padding, const std::vector<int64_t>& kernel) {
  if (n.op != Op::Conv && n.op != Op::MaxPool && n.op != Op::AveragePool) return false;
  if (padding.begin != padding.end) return true;
  const std::vector<int64_t> dilations = n.attrInts("dilations", std::vector<int64_t>(kernel.size(), 1));
  for (size_t i = 0; i < kernel.size() && i < padding.begin.size(); ++i) {
    if (n.op == Op::MaxPool && 2 * padding.begin[i] > (kernel[i] - 1) * (i < dilations.size() ? dilations[i] : 1) + 1) return true;
    if (n.op == Op::AveragePool && 2 * padding.begin[i] > kernel[i]) return true;
  }
  return false;
}

uint64_t paddedInputBytes(const Graph& g, const Node& n) {
  if (n.op != Op::Conv && n.op != Op::MaxPool && n.op != Op::AveragePool) return 0;
  const Value* x = inputOf(g, n, 0);
  if (!x || x->type.shape.size() < 3) return 0;
  const size_t rank = x->type.shape.size() - 2;
  std::vector<int64_t> kernel = n.attrInts("kernel_shape");
  if (n.op == Op::Conv) {
    const Value* w = inputOf(g, n, 1);
    if (!w || w->type.shape.size() != rank + 2) return 0;
    kernel.assign(w->type.shape.begin() + 2, w->type.shape.end());
  }
  if (kernel.size() != rank) return 0;
  const std::vector<int64_t> spatial(x->type.shape.begin() + 2, x->type.shape.end());
  const WindowPadding padding = windowPadding(n, spatial, kernel);
  if (!needsPaddedCopy(n, padding, kernel)) return 0;
  uint64_t elements = 1, padded = 1;
  for (size_t i = 0; i < rank; ++i) {
    elements = saturatingMul(elements, static_cast<uint64_t>(std::max<int64_t>(spatial[i], 0)));
    padded = saturatingMul(padded, static_cast<uint64_t>(std::max<int64_t>(spatial[i] + padding.begin[i] + padding.end[i], 0)));
  }
  return elements == 0 ? 0 : saturatingMul(x->bytes / elements, padded);
}

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
  // Mean and inverse deviation per instance (the runtime runs instance norm as ATen's group
  // norm with a group per channel, which saves both as [N, C]).
  case ExtraSaved::InstanceStats: saved.extraBytes = saturatingMul(8, saturatingMul(dim(x, 0), dim(x, 1))); break;
  // ATen's group norm saves its mean and inverse deviation as [N, num_groups].
  case ExtraSaved::GroupStats: saved.extraBytes = saturatingMul(8, groupRows(g, n)); break;
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
  // An op on a padded copy of its input saves the copy instead of the input (the padding's own
  // backward keeps nothing).
  if (const uint64_t padded = paddedInputBytes(g, n); padded > 0) {
    saved.extraBytes = saturatingAdd(saved.extraBytes, padded);
    saved.values.erase(std::remove(saved.values.begin(), saved.values.end(), n.inputs[0]), saved.values.end());
  }
  return saved;
}

namespace {

/// Batch times channels of a node's first input: InstanceNormalization's instance count.
uint64_t instances(const Graph& graph, const Node& node) {
  const Value* x = inputOf(graph, node, 0);
  if (!x || x->type.shape.size() < 2) return 0;
  return saturatingMul(static_cast<uint64_t>(x->type.shape[0]), static_cast<uint64_t>(x->type.shape[1]));
}

/// A constant's float elements, when the graph knows them.
bool constantDoubles(const Value* v, std::vector<double>& out) {
  if (!v || !v->data || v->data->size() != v->bytes || (v->type.dtype != DType::F32 && v->type.dtype != DType::F64)) return false;
  out.resize(v->bytes / dtypeSize(v->type.dtype));
  for (size_t i = 0; i < out.size(); ++i) out[i] = elementAsDouble(v->type.dtype, *v->data, i);
  return true;
}

/// Whether the runtime takes ATen's upsample_nearest2d for this Resize/Upsample, decided as the
/// kernel decides it, from the graph's constant scales (or, for sizes, the output shape).
bool runsAsNearestUpsample2d(const Graph& graph, const Node& node) {
  const Value* x = inputOf(graph, node, 0);
  if (!x || node.outputs.empty() || !isFloat(x->type.dtype)) return false;
  const Shape& in = x->type.shape;
  const Shape& out = graph.value(node.outputs[0]).type.shape;
  if (in.size() != 4 || out.size() != 4) return false;
  std::vector<double> scales;
  std::string transform = "asymmetric", nearest = "floor";
  if (node.op == Op::Upsample) {
    auto it = node.attrs.find("scales");
    if (it != node.attrs.end() && std::holds_alternative<std::vector<double>>(it->second)) scales = std::get<std::vector<double>>(it->second);
    else if (!constantDoubles(inputOf(graph, node, 1), scales)) return false;
  } else if (node.inputs.size() == 2) { // opset 10: (X, scales)
    if (!constantDoubles(inputOf(graph, node, 1), scales)) return false;
  } else {
    transform = node.attrString("coordinate_transformation_mode", "half_pixel");
    nearest = node.attrString("nearest_mode", "round_prefer_floor");
    const Value* given = inputOf(graph, node, 2);
    if (given && given->type.shape.size() == 1 && given->type.shape[0] > 0) {
      if (!constantDoubles(given, scales)) return false;
    } else if (inputOf(graph, node, 3)) {
      for (size_t a = 0; a < 4; ++a) scales.push_back(in[a] > 0 ? static_cast<double>(out[a]) / static_cast<double>(in[a]) : 0.0);
    } else {
      return false;
    }
  }
  std::string mode = node.attrString("mode", "nearest");
  return isNearestUpsample2d(mode, transform, nearest, scales);
}

/// A convolution's tensors as LibTorch's CPU backend (oneDNN) lays them out: channels padded to
/// a multiple of 16 in its blocked format. 0 bytes when the shapes are not known.
struct ConvLayout {
  uint64_t input = 0, input16 = 0, output = 0, output16 = 0, weight = 0, weight16 = 0;
  int64_t inChannels = 0;
};

ConvLayout convLayout(const Graph& graph, const Node& node) {
  ConvLayout c;
  const Value* x = inputOf(graph, node, 0);
  const Value* w = inputOf(graph, node, 1);
  if (!x || !w || node.outputs.empty()) return c;
  const Value& y = graph.value(node.outputs[0]);
  if (x->type.shape.size() < 3 || y.type.shape.size() != x->type.shape.size() || w->type.shape.size() != x->type.shape.size())
    return c;
  const int64_t ci = x->type.shape[1], co = y.type.shape[1], ciGroup = w->type.shape[1];
  if (ci <= 0 || co <= 0 || ciGroup <= 0) return c;
  const int64_t groups = node.attrInt("group", 1);
  auto pad16 = [](int64_t n) { return static_cast<uint64_t>((n + 15) / 16 * 16); };
  c.inChannels = ci;
  // Asymmetric pads: the kernel runs on the padded copy (paddedInputBytes).
  const uint64_t padded = paddedInputBytes(graph, node);
  c.input = padded > 0 ? padded : x->bytes;
  c.input16 = c.input / static_cast<uint64_t>(ci) * pad16(ci);
  c.output = y.bytes;
  c.output16 = y.bytes / static_cast<uint64_t>(co) * pad16(co);
  c.weight = w->bytes;
  const uint64_t perKernel = w->bytes / static_cast<uint64_t>(co * ciGroup);
  c.weight16 = saturatingMul(saturatingMul(perKernel, pad16(co)), groups == 1 ? pad16(ciGroup) : static_cast<uint64_t>(ciGroup));
  return c;
}

/// ATen's CPU transposed convolution with one group (slow_conv_transpose2d/3d; 1-D runs as
/// 2-D): the im2col columns of one sample, C_out x prod(kernel) x prod(input spatial), reused
/// across the batch, and with `withOnes` and a bias a plane of ones the size of one output
/// sample's spatial extent (the forward adds the bias through it). Measured 2026-12-05 with
/// --scratch measured: [2,32,32,32] -> [2,16,64,64], k2 s2: 262144 + 16384 bytes forward,
/// 262144 backward, the same at batch 1, 4 and 8 and at one or two threads. nullopt for
/// grouped ones (not measured) or missing shapes.
std::optional<uint64_t> convTransposeScratch(const Graph& graph, const Node& node, bool withOnes) {
  if (node.attrInt("group", 1) != 1 || node.inputs.size() < 2 || node.inputs[0] == kNone || node.inputs[1] == kNone ||
      node.outputs.empty())
    return std::nullopt;
  const Shape& x = graph.value(node.inputs[0]).type.shape;
  const Shape& w = graph.value(node.inputs[1]).type.shape;
  const Value& y = graph.value(node.outputs[0]);
  if (x.size() < 3 || w.size() != x.size() || y.type.shape.size() != x.size()) return std::nullopt;
  uint64_t columns = saturatingMul(dtypeSize(y.type.dtype), static_cast<uint64_t>(std::max<int64_t>(w[1], 0)));
  uint64_t ones = dtypeSize(y.type.dtype);
  for (size_t i = 2; i < x.size(); ++i) {
    columns = saturatingMul(columns, saturatingMul(static_cast<uint64_t>(std::max<int64_t>(w[i], 0)), static_cast<uint64_t>(std::max<int64_t>(x[i], 0))));
    ones = saturatingMul(ones, static_cast<uint64_t>(std::max<int64_t>(y.type.shape[i], 0)));
  }
  const bool bias = node.inputs.size() > 2 && node.inputs[2] != kNone;
  return withOnes && bias ? saturatingAdd(columns, ones) : columns;
}

uint64_t tableBackwardScratch(const Graph& graph, const Node& node, const std::vector<bool>* needsGrad) {
  if (node.outputs.empty()) return 0;
  if (node.op == Op::Resize || node.op == Op::Upsample) return resampleScratchBytes(graph, node, true);
  if (node.op == Op::InstanceNormalization) {
    // ATen's group-norm backward (a group per channel): two per-instance sums, no map-sized
    // temporary (measured 2026-12-05; the batch norm over an [1, N*C, ...] view that ran
    // instance norm before made an output-sized one).
    return saturatingMul(8, instances(graph, node));
  }
  // ATen's group-norm backward: per-(instance, channel) sums ds and db, [N, C] each.
  if (node.op == Op::GroupNorm) return saturatingMul(8, instances(graph, node));
  if (node.op == Op::Conv) {
    const ConvLayout c = convLayout(graph, node);
    if (c.input == 0) return 0;
    // The weight gradient reads the input and the output gradient in the blocked layout (inputs
    // of fewer than 8 channels are read as they are) and writes a padded weight gradient; the
    // input gradient is made padded and then copied out.
    const uint64_t readInput = c.inChannels >= 8 ? c.input16 : 0;
    const uint64_t weightPad = c.weight16 - c.weight;
    uint64_t scratch = saturatingAdd(saturatingAdd(readInput, c.output16), weightPad);
    if (inputRequiresGrad(graph, node, 0, needsGrad))
      scratch = std::max(scratch, saturatingAdd(saturatingAdd(c.output16, c.input16 - c.input), weightPad));
    // The blocked weight gradient next to the plain one it is copied into: what binds where the
    // weight outweighs the maps (resnet50's layer4: 3x3, 512 channels, 4x4 inputs).
    return std::max(scratch, c.weight16);
  }
  if (node.op == Op::ConvTranspose) {
    if (node.inputs.empty() || node.inputs[0] == kNone) return 0;
    // One group: the columns of one sample, as in the forward (measured 2026-12-05, 2-D and
    // 3-D, batch 1-8). Grouped: not measured; the input and the output, as before.
    if (const auto columns = convTransposeScratch(graph, node, /*withOnes=*/false)) return *columns;
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
  if (node.op == Op::Resize || node.op == Op::Upsample) return resampleScratchBytes(graph, node, false);
  // The padded copy of the input (an AveragePool also sums into an output-sized buffer that it
  // then divides into the output).
  if (const uint64_t padded = paddedInputBytes(graph, node); padded > 0 && node.op != Op::Conv)
    return node.op == Op::AveragePool && !node.outputs.empty() ? saturatingAdd(padded, graph.value(node.outputs[0]).bytes) : padded;
  // ATen's einsum can return its batched product permuted; the runtime makes every value
  // contiguous, so the product and its copy can both be alive.
  if (node.op == Op::Einsum && !node.outputs.empty()) return graph.value(node.outputs[0]).bytes;
  // Group norm's mean and inverse deviation, per instance (freed after a forward without
  // autograd; saved with it: ExtraSaved::InstanceStats).
  if (node.op == Op::InstanceNormalization) return saturatingMul(8, instances(graph, node));
  // Its mean and inverse deviation, [N, num_groups] each.
  if (node.op == Op::GroupNorm) return saturatingMul(8, groupRows(graph, node));
  if (node.op == Op::ConvTranspose) return convTransposeScratch(graph, node, /*withOnes=*/true).value_or(0);
  if (node.op != Op::Conv) return 0;
  const ConvLayout c = convLayout(graph, node);
  if (c.input == 0) return 0;
  // The input (16 channels or more) and the weight reordered into the blocked layout next to
  // the padded output, which is then copied into the plain one.
  const uint64_t readInput = c.inChannels >= 16 ? c.input16 : 0;
  const uint64_t during = saturatingAdd(saturatingAdd(readInput, c.weight16), c.output16);
  return saturatingAdd(std::max(during > c.output ? during - c.output : 0, c.output16), paddedInputBytes(graph, node));
}

} // namespace

uint64_t backwardScratchBytes(const Graph& graph, const Node& node, const std::vector<bool>* needsGrad) {
  uint64_t table = tableBackwardScratch(graph, node, needsGrad);
  // The padded copy's gradient: the input's is a view into it, so the padding is what it adds
  // (measured on a Conv, a MaxPool and an AveragePool, 2026-12-05).
  const Value* x = inputOf(graph, node, 0);
  if (const uint64_t padded = paddedInputBytes(graph, node); x && padded > x->bytes && inputRequiresGrad(graph, node, 0, needsGrad))
    table = saturatingAdd(table, padded - x->bytes);
  return node.scratch ? std::max(table, node.scratch->backward) : table;
}

uint64_t forwardScratchBytes(const Graph& graph, const Node& node) {
  const uint64_t table = tableForwardScratch(graph, node);
  return node.scratch ? std::max(table, node.scratch->forward) : table;
}

bool isNearestUpsample2d(const std::string& mode, const std::string& transform, const std::string& nearest,
                         const std::vector<double>& scales) {
  if (mode != "nearest" || transform != "asymmetric" || nearest != "floor" || scales.size() != 4) return false;
  if (scales[0] != 1.0 || scales[1] != 1.0) return false;
  for (size_t a = 2; a < 4; ++a) {
    // Powers of two: 1/scale is exact, so ATen's floor(j * (1/scale)) is ONNX's floor(j / scale).
    int exponent = 0;
    const double mantissa = std::frexp(scales[a], &exponent);
    if (mantissa != 0.5 || exponent < 1 || exponent > 31) return false;
  }
  return true;
}

uint64_t resampleScratchBytes(const Graph& graph, const Node& node, bool backward) {
  const Value* x = inputOf(graph, node, 0);
  if (!x || node.outputs.empty() || runsAsNearestUpsample2d(graph, node)) return 0;
  const Value& y = graph.value(node.outputs[0]);
  Shape cur = x->type.shape;
  const Shape& out = y.type.shape;
  if (cur.size() != out.size()) return 0;
  const std::string mode = node.attrString("mode", "nearest");
  const uint64_t taps = mode == "nearest" ? 1 : mode == "cubic" ? 4 : 2;
  const bool crop = node.attrString("coordinate_transformation_mode", "") == "tf_crop_and_resize";
  const uint64_t elem = dtypeSize(y.type.dtype);
  auto bytesOf = [&](const Shape& s) {
    uint64_t n = elem;
    for (int64_t d : s) n = saturatingMul(n, static_cast<uint64_t>(std::max<int64_t>(d, 0)));
    return n;
  };
  // The intermediates after each resized axis, in the kernel's order (axis 0 first).
  std::vector<uint64_t> steps;
  for (size_t a = 0; a < out.size(); ++a) {
    if (cur[a] == out[a] && !crop) continue;
    cur[a] = out[a];
    steps.push_back(bytesOf(cur));
  }
  // Measured as the peak beyond the tensors the node makes (its output; its input's gradient),
  // which the memory model counts already: they are subtracted where they exist.
  const uint64_t input = x->bytes, output = y.bytes;
  uint64_t peak = 0;
  for (size_t k = 0; k < steps.size(); ++k) {
    const bool last = k + 1 == steps.size();
    const uint64_t previous = k > 0 ? steps[k - 1] : 0;
    const uint64_t weighted = taps > 1 ? saturatingMul(taps, steps[k]) : 0;
    const uint64_t masked = crop ? steps[k] : 0;
    uint64_t during = 0;
    if (!backward) {
      // The previous intermediate, the gathered taps and their weighted product, the masked
      // copy of a crop, and this axis' result (the output at the last axis).
      during = saturatingAdd(saturatingAdd(previous, saturatingMul(2, weighted)), saturatingAdd(masked, steps[k]));
      during = during > output ? during - output : 0;
    } else {
      // This axis' incoming gradient (the output's at the last axis, already counted), the taps'
      // weighted gradient (after which the incoming one is released), and the gradient scattered
      // into the previous intermediate (the input's at the first axis).
      const uint64_t incoming = last ? 0 : steps[k];
      const uint64_t scattered = k > 0 ? previous : input;
      during = taps > 1 ? std::max(incoming + weighted, weighted + scattered) : incoming + scattered;
      during = saturatingAdd(during, masked);
      during = during > input ? during - input : 0;
    }
    peak = std::max(peak, during);
  }
  return peak;
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
