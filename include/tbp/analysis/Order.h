#pragma once
/// \file
/// Topological-order heuristics. The planner fixes one order of the forward ops (DESIGN.md §4);
/// these propose orders whose cut frontiers are small.

#include "tbp/ir/Graph.h"

#include <string_view>
#include <vector>

namespace tbp::analysis {

/// A topological-order heuristic.
enum class OrderHeuristic : uint8_t {
  File,   ///< the model file's order (made topological, smallest id first, where it is not)
  Greedy, ///< list scheduling that always runs the ready node leaving the fewest live bytes
  Dfs,    ///< depth-first from the outputs: each operand's subgraph finishes before the next
};

/// All heuristics, in report order.
inline constexpr OrderHeuristic kAllOrders[] = {OrderHeuristic::File, OrderHeuristic::Greedy,
                                                OrderHeuristic::Dfs};

/// The command-line name (`file`, `greedy`, `dfs`).
const char* orderName(OrderHeuristic h);
/// Parses a command-line name.
std::optional<OrderHeuristic> parseOrder(std::string_view name);

/// Computes a topological order of all nodes. Preconditions: `graph` passed ir::verify().
std::vector<ir::NodeId> computeOrder(const ir::Graph& graph, OrderHeuristic heuristic);

} // namespace tbp::analysis
