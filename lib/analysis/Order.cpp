#include "tbp/analysis/Order.h"

#include "tbp/ir/Verify.h"

#include <queue>

namespace tbp::analysis {

using ir::Graph;
using ir::kNone;
using ir::NodeId;
using ir::ValueId;

const char* orderName(OrderHeuristic h) {
  switch (h) {
  case OrderHeuristic::File: return "file";
  case OrderHeuristic::Greedy: return "greedy";
  case OrderHeuristic::Dfs: return "dfs";
  }
  return "?";
}

std::optional<OrderHeuristic> parseOrder(std::string_view name) {
  for (OrderHeuristic h : kAllOrders)
    if (name == orderName(h)) return h;
  return std::nullopt;
}

namespace {

bool isTracked(const ir::Value& v) {
  return v.kind == ir::ValueKind::Activation;
}

/// Greedy minimum-live-set list scheduling. Each step runs the ready node whose execution
/// changes the live bytes the least (outputs allocated minus inputs whose last use it is);
/// ties go to the smallest node id, which keeps the result deterministic.
std::vector<NodeId> greedyOrder(const Graph& g) {
  const size_t n = g.numNodes();
  std::vector<uint32_t> pendingInputs(n, 0);
  std::vector<uint32_t> remainingUses(g.numValues(), 0);
  for (ValueId v = 0; v < g.numValues(); ++v) remainingUses[v] = static_cast<uint32_t>(g.value(v).users.size());
  for (NodeId id = 0; id < n; ++id)
    for (ValueId in : g.node(id).inputs)
      if (in != kNone && g.value(in).producer != kNone) ++pendingInputs[id];

  auto delta = [&](NodeId id) {
    int64_t d = 0;
    for (ValueId out : g.node(id).outputs) d += static_cast<int64_t>(g.value(out).bytes);
    const auto& ins = g.node(id).inputs;
    for (size_t k = 0; k < ins.size(); ++k) {
      ValueId in = ins[k];
      if (in == kNone || !isTracked(g.value(in))) continue;
      bool firstOccurrence = true;
      for (size_t j = 0; j < k; ++j) firstOccurrence = firstOccurrence && ins[j] != in;
      if (!firstOccurrence) continue;
      uint32_t usesHere = 0;
      for (ValueId x : ins) usesHere += x == in;
      if (remainingUses[in] == usesHere) d -= static_cast<int64_t>(g.value(in).bytes);
    }
    return d;
  };

  std::vector<NodeId> ready;
  for (NodeId id = 0; id < n; ++id)
    if (pendingInputs[id] == 0) ready.push_back(id);
  std::vector<NodeId> order;
  order.reserve(n);
  while (!ready.empty()) {
    size_t best = 0;
    int64_t bestDelta = delta(ready[0]);
    for (size_t i = 1; i < ready.size(); ++i) {
      int64_t d = delta(ready[i]);
      if (d < bestDelta || (d == bestDelta && ready[i] < ready[best])) {
        best = i;
        bestDelta = d;
      }
    }
    NodeId id = ready[best];
    ready[best] = ready.back();
    ready.pop_back();
    order.push_back(id);
    for (ValueId in : g.node(id).inputs)
      if (in != kNone) --remainingUses[in];
    for (ValueId out : g.node(id).outputs)
      for (NodeId user : g.value(out).users)
        if (--pendingInputs[user] == 0) ready.push_back(user);
  }
  return order;
}

/// Depth-first post-order from the graph outputs (then from any node not reaching an output),
/// visiting operands in input order. Iterative, so million-node chains do not overflow.
std::vector<NodeId> dfsOrder(const Graph& g) {
  const size_t n = g.numNodes();
  std::vector<uint8_t> state(n, 0); // 0 new, 1 on stack, 2 emitted
  std::vector<NodeId> order;
  order.reserve(n);
  std::vector<std::pair<NodeId, size_t>> stack;
  auto visit = [&](NodeId root) {
    if (state[root]) return;
    stack.push_back({root, 0});
    state[root] = 1;
    while (!stack.empty()) {
      auto& [id, next] = stack.back();
      const auto& ins = g.node(id).inputs;
      if (next < ins.size()) {
        ValueId in = ins[next++];
        if (in == kNone) continue;
        NodeId p = g.value(in).producer;
        if (p != kNone && state[p] == 0) {
          state[p] = 1;
          stack.push_back({p, 0});
        }
        continue;
      }
      state[id] = 2;
      order.push_back(id);
      stack.pop_back();
    }
  };
  for (ValueId out : g.outputs())
    if (g.value(out).producer != kNone) visit(g.value(out).producer);
  for (NodeId id = n; id-- > 0;) visit(id);
  return order;
}

} // namespace

std::vector<NodeId> computeOrder(const Graph& graph, OrderHeuristic heuristic) {
  switch (heuristic) {
  case OrderHeuristic::File: {
    Expected<std::vector<NodeId>> order = ir::topologicalOrder(graph, "graph");
    TBP_CHECK(order.hasValue());
    return std::move(order).value();
  }
  case OrderHeuristic::Greedy: return greedyOrder(graph);
  case OrderHeuristic::Dfs: return dfsOrder(graph);
  }
  return {};
}

} // namespace tbp::analysis
