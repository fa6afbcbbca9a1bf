#pragma once
// Private to the runtime: the kernel table, keyed by the IR op vocabulary.

#include "tbp/ir/Graph.h"

#include <ATen/ATen.h>

#include <vector>

namespace tbp::runtime {

/// What a kernel may need beyond its inputs.
struct KernelContext {
  /// Random source of stochastic ops (Dropout). The executor restores its state before a
  /// stage is recomputed, so replays draw the same masks (DESIGN.md §4).
  at::Generator* generator = nullptr;
  /// True on the first forward of the node in this step: op state (BatchNorm running
  /// statistics) changes only then.
  bool firstForward = true;
  /// The step's tensors by value id, for ops that update state held in a value (running stats).
  std::vector<at::Tensor>* values = nullptr;
};

/// Computes a node's outputs from its inputs (absent optional inputs are undefined tensors).
using Kernel = std::vector<at::Tensor> (*)(const KernelContext& context, const ir::Graph& graph,
                                           const ir::Node& node, const std::vector<at::Tensor>& inputs);

/// The kernel of `op`, or nullptr when the runtime has none yet.
Kernel kernelFor(ir::Op op);

} // namespace tbp::runtime
