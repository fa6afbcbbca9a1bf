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
