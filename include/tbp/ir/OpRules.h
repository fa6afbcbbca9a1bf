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
/// layout, channels padded to a multiple of 16, so their backward briefly holds one more copy of
/// each (inputs of fewer than 8 channels are read unreordered), plus the padding of the weight
/// gradient, or the output gradient's copy and the padded input gradient, or the blocked weight
/// gradient beside the plain one (where weights outweigh the maps), whichever is most
/// (measured on 47 shapes, 1 to 88 channels, grouped and strided; with more intra-op threads the
/// weight-gradient reduction adds per-thread buffers on top). InstanceNormalization: two
/// output-sized temporaries inside a step. Resize/Upsample: resampleScratchBytes. A node with
/// measured scratch (Node::scratch) gets the larger of the rule and the measurement.
uint64_t backwardScratchBytes(const Graph& graph, const Node& node, const std::vector<bool>* needsGrad = nullptr);

/// The padding of a Conv or pooling window over spatial dims of sizes `spatial` with kernel
/// extents `kernel`, by ONNX's rules: auto_pad SAME_UPPER/SAME_LOWER split the padding the
/// output size needs (the odd one at the end/begin), VALID pads nothing, otherwise `pads`.
/// The runtime's kernels and the memory rules both read a window's padding from here.
struct WindowPadding {
  std::vector<int64_t> begin, end;
};
WindowPadding windowPadding(const Node& node, const std::vector<int64_t>& spatial, const std::vector<int64_t>& kernel);

/// Whether ATen's kernel for `node` cannot take `padding`, so that the runtime runs it on a
/// padded copy of its input: a Conv, MaxPool or AveragePool whose padding is asymmetric, or a
/// pool padded by more than half its (dilated) window. False for other ops.
bool needsPaddedCopy(const Node& node, const WindowPadding& padding, const std::vector<int64_t>& kernel);

/// Bytes of the padded copy of input 0 that the runtime makes for a Conv, MaxPool or
/// AveragePool whose padding ATen's kernel cannot take (pads whose begin and end differ, from
/// `pads` or `auto_pad` SAME_*; a pool pad over half its window): the op then runs unpadded on
/// that copy. 0 when it runs natively, or for other ops. The copy is scratch of a forward
/// without autograd, saved in place of the input with it (savedForBackward: extra bytes, the
/// input left out), read by a Conv's blocked-layout reorders, and its gradient, of which the
/// input's is a view, adds its padding to the backward's scratch.
uint64_t paddedInputBytes(const Graph& graph, const Node& node);

/// Temporaries the op's forward kernel allocates beyond its outputs, while it runs. Conv:
/// oneDNN (LibTorch's CPU convolution) reorders the larger of input and output, and the
/// weight, into its blocked layout with channels padded to a multiple of 16, next to a padded
/// output that is then copied out: max(input16 + weight16 + output16 - output, output16),
/// input16 only from 16 input channels (max(input, output) + weight when every channel count
/// is a multiple of 16), measured in tbp's runtime (LibTorch 1.13, CPU) on 1x1, 3x3, 5x5 and
/// 7x7 convolutions, strided, grouped and depthwise.
/// InstanceNormalization: 24 bytes per (batch, channel) (ATen repeats scale and bias per
/// instance). Resize/Upsample: the per-axis intermediates of the runtime's separable gather
/// (resampleScratchBytes). Every other op: 0 (ConvTranspose measured well under its output).
/// A node with measured scratch (Node::scratch) gets the larger of the rule and the measurement.
uint64_t forwardScratchBytes(const Graph& graph, const Node& node);

/// Whether a Resize/Upsample with these ONNX settings and per-axis `scales` is nearest-neighbour
/// upsampling of the last two axes of a 4-D tensor by power-of-two factors with asymmetric
/// coordinates and floor rounding (PyTorch's `interpolate(mode="nearest")` as exported). The
/// runtime runs it as ATen's upsample_nearest2d, which computes exactly these indices and
/// allocates nothing beyond its output; every other resize gathers one axis at a time.
bool isNearestUpsample2d(const std::string& mode, const std::string& transform, const std::string& nearest,
                         const std::vector<double>& scales);

/// Temporaries of the runtime's separable resize (one gather, and for linear and cubic modes a
/// weighted sum over 2 or 4 taps, per resized axis), forward or backward, from the node's input
/// and output shapes: the intermediate of one axis lives while the next axis is gathered, and in
/// the backward each intermediate's gradient while the previous one is scattered. 0 for a
/// Resize that isNearestUpsample2d by the graph's constant scales (or sizes).
uint64_t resampleScratchBytes(const Graph& graph, const Node& node, bool backward);

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
