#pragma once
/// \file
/// Structural verification of a Graph.

#include "tbp/ir/Graph.h"

#include <string_view>
#include <vector>

namespace tbp::ir {

/// Checks that `graph` is well formed: at least one node; every node input is defined (a graph
/// input, parameter, constant, or an activation with a producer); every activation has exactly
/// one producer; the graph is acyclic; it has outputs; and parameters are floating point; each
/// node has as many inputs as its op takes (Ops.def's MinIn..MaxIn, the first MinIn present);
/// windows have positive extents, strides and dilations and no negative pads; and the operand
/// shapes the kernels rely on agree. Errors (BadInput) start with `source: ` and name the node or value.
Status verify(const Graph& graph, std::string_view source);

/// A topological order of the nodes that keeps file order where the file order is already
/// topological (Kahn's algorithm, smallest id first). Fails with BadInput naming a node on a
/// cycle when there is one.
Expected<std::vector<NodeId>> topologicalOrder(const Graph& graph, std::string_view source);

/// Describes a node for messages: `node 'conv3' (Conv)`, or `node #12 (Conv)` when unnamed.
std::string describeNode(const Graph& graph, NodeId id);

} // namespace tbp::ir
