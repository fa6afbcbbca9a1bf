#pragma once
/// \file
/// Graphviz DOT export of a graph, nodes shaded by activation size.

#include "tbp/ir/Graph.h"

#include <string>

namespace tbp::analysis {

/// Renders `graph` as DOT: one box per node labelled `name\nOp\ntype (size)`, filled from white
/// (small outputs) to red (the largest activation, log scale); edges labelled with bytes.
std::string renderDot(const ir::Graph& graph);

} // namespace tbp::analysis
