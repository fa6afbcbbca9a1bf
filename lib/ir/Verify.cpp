#include "tbp/ir/Verify.h"

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
  const Shape* x = shapeOf(0);
  const Shape* w = shapeOf(1);
  const int64_t rank = x ? static_cast<int64_t>(x->size()) : 0;
  switch (node.op) {
  case Op::Conv: {
    if (!x || !w) return {};
    if (x->size() < 3 || w->size() != x->size())
      return "input " + formatShape(*x) + " and weight " + formatShape(*w) + " must have the same rank, at least 3";
    const int64_t group = node.attrInt("group", 1);
    if ((*x)[1] != (*w)[1] * group)
      return "input " + formatShape(*x) + " has " + std::to_string((*x)[1]) + " channels, the weight " + formatShape(*w) +
             (group == 1 ? "" : " with group " + std::to_string(group)) + " takes " + std::to_string((*w)[1] * group);
    if ((*w)[0] % group != 0)
      return "weight " + formatShape(*w) + ": " + std::to_string((*w)[0]) + " output channels do not divide into " + std::to_string(group) + " groups";
    if (const Shape* b = shapeOf(2); b && (b->size() != 1 || (*b)[0] != (*w)[0]))
      return "bias " + formatShape(*b) + " does not match the weight's " + std::to_string((*w)[0]) + " output channels";
    return {};
  }
  case Op::ConvTranspose:
    if (x && w && (x->size() < 3 || w->size() != x->size() || (*x)[1] != (*w)[0]))
      return "input " + formatShape(*x) + " and weight " + formatShape(*w) + " do not match (same rank, input channels = weight dimension 0)";
    return {};
  case Op::Gemm: {
    if (!x || !w) return {};
    if (x->size() != 2 || w->size() != 2) return "A " + formatShape(*x) + " and B " + formatShape(*w) + " must be matrices";
    const int64_t k1 = node.attrInt("transA", 0) ? (*x)[0] : (*x)[1];
    const int64_t k2 = node.attrInt("transB", 0) ? (*w)[1] : (*w)[0];
    if (k1 != k2)
      return "A " + formatShape(*x) + " and B " + formatShape(*w) + " (transA " + std::to_string(node.attrInt("transA", 0)) + ", transB " +
             std::to_string(node.attrInt("transB", 0)) + ") disagree on the inner dimension: " + std::to_string(k1) + " vs " + std::to_string(k2);
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
  case Op::Concat: case Op::Gather: case Op::GatherElements:
    return x ? axisProblem("axis", 0, rank, false) : std::string();
  case Op::LayerNormalization:
    return x ? axisProblem("axis", -1, rank, false) : std::string();
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
