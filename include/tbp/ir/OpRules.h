#pragma once
/// \file
/// Applies the per-op rules of Ops.def to a concrete node: FLOP estimate and the tensors that
/// autograd saves for the backward pass.

#include "tbp/ir/Graph.h"

#include <vector>

namespace tbp::ir {

/// Estimated forward FLOPs of `node` (saturating at 2^64-1).
uint64_t estimateFlops(const Graph& graph, const Node& node);

/// What autograd keeps from one node for its backward pass.
struct SavedForBackward {
  std::vector<ValueId> values; ///< saved inputs/outputs (deduplicated, may include parameters)
  uint64_t extraBytes = 0;     ///< masks, indices and statistics owned by the node
};

/// The saved set of `node` by its op's rule. Absent inputs are left out, and an op none of
/// whose float inputs can take a gradient saves nothing. Whether the node runs a backward at
/// all (it lies on a gradient path) is the analysis' question, not this rule's.
///
/// `needsGrad` (indexed by ValueId) says which values require a gradient; it decides the
/// inputs that Ops.def marks as cross-saved (Mul keeps x only when the other factor requires a
/// gradient). Without it, parameters and activations count as requiring one and graph inputs
/// and constants do not.
SavedForBackward savedForBackward(const Graph& graph, const Node& node, const std::vector<bool>* needsGrad = nullptr);

/// Scratch a node's backward needs beyond the gradients themselves: Ops.def's BwdScratch
/// (temporaries of the backward formula; Div's only when `needsGrad` says the divisor takes a
/// gradient, or without it when the divisor is not a constant or graph input). Convolutions:
/// the CPU kernels (oneDNN) reorder the saved input and the output gradient into their blocked
/// layout, so their backward briefly holds one more copy of each (measured on the built-in
/// workloads; with more intra-op threads the weight-gradient reduction adds per-thread
/// buffers on top). A node with measured scratch (Node::scratch) gets the larger of the rule and the
/// measurement.
uint64_t backwardScratchBytes(const Graph& graph, const Node& node, const std::vector<bool>* needsGrad = nullptr);

/// Temporaries the op's forward kernel allocates beyond its outputs, while it runs. Conv:
/// oneDNN (LibTorch's CPU convolution) reorders the larger of input and output, and the
/// weight, into its blocked layout: max(input, output) + weight bytes, measured in tbp's
/// runtime (LibTorch 1.13, CPU) on 1x1, 3x3 and 7x7 convolutions, strided and not. Every
/// other op: 0 (ConvTranspose measured well under its output). A node with measured scratch
/// (Node::scratch) gets the larger of the rule and the measurement.
uint64_t forwardScratchBytes(const Graph& graph, const Node& node);

/// True for a BatchNormalization that normalizes with its batch statistics (training_mode, or
/// the running-statistics outputs of opsets 7-13), as the runtime's kernel decides.
bool isTrainingBatchNorm(const Node& node);

/// Bytes of the batch statistics (mean and biased variance per channel, f32) a training
/// BatchNormalization computes; the runtime keeps them from the node's first forward for its
/// replays, which then normalize in one pass. 0 for every other node.
uint64_t batchStatsBytes(const Graph& graph, const Node& node);

/// True when input `index` of `node` can receive a gradient (by the op's rule).
bool inputTakesGradient(const Node& node, size_t index);

} // namespace tbp::ir
