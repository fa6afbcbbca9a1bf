#include "tbp/ir/Verify.h"

#include <algorithm>
#include <queue>

namespace tbp::ir {

std::string describeNode(const Graph& graph, NodeId id) {
  const Node& n = graph.node(id);
  std::string who = n.name.empty() ? "#" + std::to_string(id) : "'" + n.name + "'";
  return "node " + who + " (" + opName(n.op) + ")";
}

Expected<std::vector<NodeId>> topologicalOrder(const Graph& graph, std::string_view source) {
  const size_t n = graph.numNodes();
  std::vector<uint32_t> pending(n, 0);
  for (NodeId id = 0; id < n; ++id)
    for (ValueId in : graph.node(id).inputs)
      if (in != kNone && graph.value(in).producer != kNone) ++pending[id];
  std::priority_queue<NodeId, std::vector<NodeId>, std::greater<>> ready;
  for (NodeId id = 0; id < n; ++id)
    if (pending[id] == 0) ready.push(id);
  std::vector<NodeId> order;
  order.reserve(n);
  while (!ready.empty()) {
    NodeId id = ready.top();
    ready.pop();
    order.push_back(id);
    for (ValueId out : graph.node(id).outputs)
      for (NodeId user : graph.value(out).users)
        if (--pending[user] == 0) ready.push(user);
  }
  if (order.size() != n) {
    for (NodeId id = 0; id < n; ++id)
      if (pending[id] != 0)
        return badInput(std::string(source) + ": the graph has a cycle through " +
                        describeNode(graph, id));
  }
  return order;
}

namespace {

/// What is wrong with the operand shapes or axis attributes of `node`, for the ops whose
/// kernels would otherwise fail mid-step (or whose FLOPs and sizes the planner would misread);
/// empty when nothing is. ONNX's shape inference does not check these: it derives a Conv's
/// output from the weight alone and a Reshape's from the shape input alone.
std::string operandProblem(const Graph& graph, const Node& node) {
  auto shapeOf = [&](size_t i) -> const Shape* {
    return i < node.inputs.size() && node.inputs[i] != kNone ? &graph.value(node.inputs[i]).type.shape : nullptr;
  };
  auto dim = [](const Shape& s, int64_t i) { return s[static_cast<size_t>(i < 0 ? i + static_cast<int64_t>(s.size()) : i)]; };
  auto axisProblem = [&](const char* key, int64_t fallback, int64_t rank, bool inclusive) -> std::string {
    const int64_t axis = node.attrInt(key, fallback);
    const int64_t hi = inclusive ? rank : rank - 1;
    if (axis < -rank || axis > hi)
      return "attribute '" + std::string(key) + "' is " + std::to_string(axis) + ", outside [" + std::to_string(-rank) + ", " +
             std::to_string(hi) + "] for an input of rank " + std::to_string(rank);
    return {};
  };
  // An axis attribute already checked by axisProblem, counted from 0.
  auto axisFromZero = [&](const char* key, int64_t fallback, int64_t rank) {
    const int64_t axis = node.attrInt(key, fallback);
    return axis < 0 ? axis + rank : axis;
  };
  const Shape* x = shapeOf(0);
  const Shape* w = shapeOf(1);
  const int64_t rank = x ? static_cast<int64_t>(x->size()) : 0;
  // Inputs from..to-1 (those present) are per-channel vectors of `channels` elements.
  auto perChannel = [&](size_t from, size_t to, int64_t channels, const char* const* names) -> std::string {
    for (size_t i = from; i < to; ++i)
      if (const Shape* v = shapeOf(i); v && (v->size() != 1 || (*v)[0] != channels))
        return std::string(names[i - from]) + " " + formatShape(*v) + " must hold one value per channel: [" + std::to_string(channels) + "]";
    return {};
  };
  // The spatial attributes of a Conv or ConvTranspose against its weight.
  auto windowProblem = [&]() -> std::string {
    const std::string pad = node.attrString("auto_pad", "NOTSET");
    if (pad != "NOTSET" && pad != "SAME_UPPER" && pad != "SAME_LOWER" && pad != "VALID")
      return "attribute 'auto_pad' is '" + pad + "'; ONNX defines NOTSET, SAME_UPPER, SAME_LOWER and VALID";
    const std::vector<int64_t> kernel = node.attrInts("kernel_shape");
    if (!kernel.empty() && w && (kernel.size() + 2 != w->size() || !std::equal(kernel.begin(), kernel.end(), w->begin() + 2)))
      return "attribute 'kernel_shape' " + formatShape(kernel) + " contradicts the weight " + formatShape(*w);
    return {};
  };
  static const char* const kBias[] = {"bias"};
  // A window's extents, strides and dilations count from 1 and its pads from 0 (ONNX's
  // rules; shape inference checks them on import, a hand-written graph is checked here).
  if (node.op == Op::Conv || node.op == Op::ConvTranspose || node.op == Op::MaxPool || node.op == Op::AveragePool) {
    for (const auto& [key, least] : {std::pair<const char*, int64_t>{"kernel_shape", 1}, {"strides", 1}, {"dilations", 1}, {"pads", 0}})
      for (int64_t v : node.attrInts(key))
        if (v < least)
          return "attribute '" + std::string(key) + "' " + formatShape(node.attrInts(key)) + " holds " + std::to_string(v) +
                 "; its values must be at least " + std::to_string(least);
  }
  switch (node.op) {
  case Op::Conv: {
    if (!x || !w) return {};
    if (x->size() < 3 || w->size() != x->size())
      return "input " + formatShape(*x) + " and weight " + formatShape(*w) + " must have the same rank, at least 3";
    if (std::string p = windowProblem(); !p.empty()) return p;
    const int64_t group = node.attrInt("group", 1);
    if ((*x)[1] != (*w)[1] * group)
      return "input " + formatShape(*x) + " has " + std::to_string((*x)[1]) + " channels, the weight " + formatShape(*w) +
             (group == 1 ? "" : " with group " + std::to_string(group)) + " takes " + std::to_string((*w)[1] * group);
    if ((*w)[0] % group != 0)
      return "weight " + formatShape(*w) + ": " + std::to_string((*w)[0]) + " output channels do not divide into " + std::to_string(group) + " groups";
    return perChannel(2, 3, (*w)[0], kBias);
  }
  case Op::ConvTranspose: {
    if (!x || !w) return {};
    if (x->size() < 3 || w->size() != x->size() || (*x)[1] != (*w)[0])
      return "input " + formatShape(*x) + " and weight " + formatShape(*w) + " do not match (same rank, input channels = weight dimension 0)";
    const int64_t group = node.attrInt("group", 1);
    if ((*w)[0] % group != 0)
      return "weight " + formatShape(*w) + ": " + std::to_string((*w)[0]) + " input channels do not divide into " + std::to_string(group) + " groups";
    if (std::string p = windowProblem(); !p.empty()) return p;
    // output_padding must stay below the stride (or the dilation) on each axis.
    const std::vector<int64_t> outPad = node.attrInts("output_padding"), strides = node.attrInts("strides"),
                               dilations = node.attrInts("dilations");
    for (size_t k = 0; k < outPad.size(); ++k) {
      const int64_t stride = k < strides.size() ? strides[k] : 1, dilation = k < dilations.size() ? dilations[k] : 1;
      if (outPad[k] >= std::max(stride, dilation))
        return "attribute 'output_padding' " + formatShape(outPad) + " is not below the stride " + formatShape(strides.empty() ? Shape{1} : strides) +
               " or dilation on axis " + std::to_string(k);
    }
    return perChannel(2, 3, (*w)[1] * group, kBias);
  }
  case Op::BatchNormalization: {
    static const char* const kNames[] = {"scale", "bias", "mean", "variance"};
    // Opsets 7-8 with spatial=0 keep one statistic per activation instead.
    return x && x->size() >= 2 && node.attrInt("spatial", 1) != 0 ? perChannel(1, 5, (*x)[1], kNames) : std::string();
  }
  case Op::InstanceNormalization: {
    static const char* const kNames[] = {"scale", "bias"};
    return x && x->size() >= 2 ? perChannel(1, 3, (*x)[1], kNames) : std::string();
  }
  case Op::GroupNorm: {
    if (!x) return {};
    if (x->size() < 2) return "input " + formatShape(*x) + " has no channel axis";
    const int64_t channels = (*x)[1], groups = node.attrInt("num_groups", 0);
    if (groups < 1 || channels % groups != 0)
      return "attribute 'num_groups' " + std::to_string(groups) + " does not divide the " + std::to_string(channels) + " channels";
    // One value per channel, as [C] or [C, 1, ...] (broadcast over the spatial axes).
    static const char* const kNames[] = {"scale", "bias"};
    for (size_t i = 1; i < 3; ++i)
      if (const Shape* v = shapeOf(i)) {
        bool ok = !v->empty() && (*v)[0] == channels && v->size() < x->size();
        for (size_t k = 1; ok && k < v->size(); ++k) ok = (*v)[k] == 1;
        if (!ok) return std::string(kNames[i - 1]) + " " + formatShape(*v) + " must hold one value per channel: [" + std::to_string(channels) + "]";
      }
    return {};
  }
  case Op::Gemm: {
    if (!x || !w) return {};
    if (x->size() != 2 || w->size() != 2) return "A " + formatShape(*x) + " and B " + formatShape(*w) + " must be matrices";
    const int64_t k1 = node.attrInt("transA", 0) ? (*x)[0] : (*x)[1];
    const int64_t k2 = node.attrInt("transB", 0) ? (*w)[1] : (*w)[0];
    if (k1 != k2)
      return "A " + formatShape(*x) + " and B " + formatShape(*w) + " (transA " + std::to_string(node.attrInt("transA", 0)) + ", transB " +
             std::to_string(node.attrInt("transB", 0)) + ") disagree on the inner dimension: " + std::to_string(k1) + " vs " + std::to_string(k2);
    // C broadcasts (unidirectionally) to the [M, N] result.
    if (const Shape* c = shapeOf(2)) {
      const Shape out{node.attrInt("transA", 0) ? (*x)[1] : (*x)[0], node.attrInt("transB", 0) ? (*w)[0] : (*w)[1]};
      bool ok = c->size() <= 2;
      for (size_t i = 0; ok && i < c->size(); ++i) ok = (*c)[i] == 1 || (*c)[i] == out[2 - c->size() + i];
      if (!ok) return "C " + formatShape(*c) + " does not broadcast to the result " + formatShape(out);
    }
    return {};
  }
  case Op::MatMul:
    if (x && w && !x->empty() && !w->empty()) {
      const int64_t k2 = w->size() == 1 ? (*w)[0] : dim(*w, -2);
      if (dim(*x, -1) != k2)
        return std::string("A ") + formatShape(*x) + " and B " + formatShape(*w) + " disagree on the inner dimension: " +
               std::to_string(dim(*x, -1)) + " vs " + std::to_string(k2);
    }
    return {};
  case Op::Reshape:
    if (x && !node.outputs.empty()) {
      const Shape& out = graph.value(node.outputs[0]).type.shape;
      Expected<uint64_t> a = checkedNumElements(*x, "input"), b = checkedNumElements(out, "output");
      if (a && b && *a != *b)
        return "cannot reshape " + formatShape(*x) + " (" + std::to_string(*a) + " elements) into " + formatShape(out) + " (" +
               std::to_string(*b) + ")";
    }
    return {};
  case Op::Softmax: case Op::LogSoftmax:
    return x ? axisProblem("axis", -1, rank, false) : std::string();
  case Op::Gather: case Op::GatherElements: {
    if (!x) return {};
    if (std::string p = axisProblem("axis", 0, rank, false); !p.empty()) return p;
    if (node.op == Op::GatherElements && w && w->size() != x->size())
      return "indices " + formatShape(*w) + " must have the rank of the data " + formatShape(*x);
    // Constant indices are checked against the gathered dimension here; others at run time.
    const Value& idx = graph.value(node.inputs[1]);
    if (!idx.data || idx.data->size() != idx.bytes || isFloat(idx.type.dtype) || rank == 0) return {};
    const int64_t axis = axisFromZero("axis", 0, rank);
    const int64_t len = (*x)[static_cast<size_t>(axis)];
    const uint64_t count = idx.bytes / dtypeSize(idx.type.dtype);
    for (uint64_t i = 0; i < count; ++i) {
      const int64_t v = elementAsInt(idx.type.dtype, *idx.data, i);
      if (v < -len || v >= len)
        return "constant index " + std::to_string(v) + " is out of range for dimension " + std::to_string(axis) + " of " + formatShape(*x);
    }
    return {};
  }
  case Op::Concat:
    return x ? axisProblem("axis", 0, rank, false) : std::string();
  case Op::LayerNormalization: {
    if (!x) return {};
    if (std::string p = axisProblem("axis", -1, rank, false); !p.empty()) return p;
    const int64_t axis = axisFromZero("axis", -1, rank);
    const Shape normalized(x->begin() + axis, x->end());
    for (size_t i = 1; i < 3; ++i)
      if (const Shape* v = shapeOf(i)) {
        bool ok = v->size() <= normalized.size();
        for (size_t k = 0; ok && k < v->size(); ++k) ok = (*v)[k] == 1 || (*v)[k] == normalized[normalized.size() - v->size() + k];
        if (!ok) return std::string(i == 1 ? "scale " : "bias ") + formatShape(*v) + " does not broadcast to the normalized shape " + formatShape(normalized);
      }
    return {};
  }
  case Op::DepthToSpace: case Op::SpaceToDepth: {
    const int64_t b = node.attrInt("blocksize", 0);
    if (!x || x->size() != 4) return {};
    if (b < 1) return "attribute 'blocksize' is " + std::to_string(b) + "; it must be at least 1";
    if (node.op == Op::DepthToSpace && (*x)[1] % (b * b) != 0)
      return "input " + formatShape(*x) + ": " + std::to_string((*x)[1]) + " channels do not divide by blocksize² = " + std::to_string(b * b);
    if (node.op == Op::SpaceToDepth && ((*x)[2] % b != 0 || (*x)[3] % b != 0))
      return "input " + formatShape(*x) + ": height and width do not divide by blocksize " + std::to_string(b);
    return {};
  }
  case Op::Flatten:
    return x ? axisProblem("axis", 1, rank, true) : std::string();
  default:
    return {};
  }
}

} // namespace

Status verify(const Graph& graph, std::string_view source) {
  const std::string src(source);
  if (graph.numNodes() == 0) return badInput(src + ": the graph has no nodes");
  for (NodeId id = 0; id < graph.numNodes(); ++id) {
    const Node& node = graph.node(id);
    if (node.outputs.empty()) return badInput(src + ": " + describeNode(graph, id) + " has no outputs");
    const OpInfo& info = opInfo(node.op);
    if (node.inputs.size() < info.minInputs || node.inputs.size() > info.maxInputs)
      return badInput(src + ": " + describeNode(graph, id) + " has " + std::to_string(node.inputs.size()) +
                      (node.inputs.size() == 1 ? " input; " : " inputs; ") +
                      opName(node.op) + " takes " +
                      (info.minInputs == info.maxInputs ? std::to_string(info.minInputs)
                                                        : std::to_string(info.minInputs) + " to " + std::to_string(info.maxInputs)));
    for (size_t i = 0; i < info.minInputs; ++i)
      if (node.inputs[i] == kNone)
        return badInput(src + ": " + describeNode(graph, id) + ": input " + std::to_string(i) + " is required but absent");
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      ValueId in = node.inputs[i];
      if (in == kNone) continue;
      const Value& v = graph.value(in);
      if (v.kind == ValueKind::Activation && v.producer == kNone)
        return badInput(src + ": " + describeNode(graph, id) + ": input " + std::to_string(i) +
                        " '" + v.name + "' is not defined by any node, input or initializer");
    }
    if (std::string problem = operandProblem(graph, node); !problem.empty())
      return badInput(src + ": " + describeNode(graph, id) + ": " + problem);
  }
  for (const Value& v : graph.values()) {
    if (v.kind == ValueKind::Parameter && !isFloat(v.type.dtype))
      return badInput(src + ": parameter '" + v.name + "' has non-float type " + v.type.str());
  }
  if (graph.outputs().empty()) return badInput(src + ": the graph has no outputs");
  for (ValueId o : graph.outputs()) {
    const Value& v = graph.value(o);
    if (v.kind == ValueKind::Activation && v.producer == kNone)
      return badInput(src + ": output '" + v.name + "' is not defined by any node");
  }
  Expected<std::vector<NodeId>> order = topologicalOrder(graph, source);
  if (!order) return order.status();
  return Status::ok();
}

} // namespace tbp::ir
