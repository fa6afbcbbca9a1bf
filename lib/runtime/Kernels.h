#pragma once
// Private to the runtime: the kernel table, keyed by the IR op vocabulary.

#include "tbp/ir/Graph.h"

#include <ATen/ATen.h>

#include <vector>

namespace tbp::runtime {

/// Computes a node's outputs from its inputs (absent optional inputs are undefined tensors).
using Kernel = std::vector<at::Tensor> (*)(const ir::Graph& graph, const ir::Node& node,
                                           const std::vector<at::Tensor>& inputs);

/// The kernel of `op`, or nullptr when the runtime has none yet.
Kernel kernelFor(ir::Op op);

} // namespace tbp::runtime
