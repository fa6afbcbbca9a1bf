#pragma once
/// \file
/// Liveness of a forward graph under one order: the live-frontier profile, the store-all
/// training-step peak estimate and lower bounds on the peak of any schedule.
///
/// Memory accounting follows DESIGN.md §4: resident bytes (parameters, their gradients,
/// constants, graph inputs) plus activations, tapes and adjoints, each tensor counted once.

#include "tbp/ir/Graph.h"

#include <vector>

namespace tbp::analysis {

/// Per-value facts under an order.
struct ValueLiveness {
  int64_t producerPos = -1;    ///< position of the producer in the order (-1: resident)
  int64_t lastUsePos = -1;     ///< position of the last user (-1: unused)
  int64_t firstSaverPos = -1;  ///< smallest position of a node whose tape saves it (-1: none)
  /// Float activation that depends on a parameter and whose gradient reaches the loss: it gets
  /// an adjoint in the backward pass.
  bool requiresGrad = false;
  /// Last consumer that passes a gradient back to it (-1: none). For a parameter: where its
  /// gradient buffer is made in the backward sweep.
  int64_t gradLastUsePos = -1;
};

/// Live bytes across each cut of an order.
struct FrontierProfile {
  /// bytes[i]: activations and graph inputs produced at or before position i and used after
  /// it (the cut frontier F_{i+1} of DESIGN.md §4); the last entry holds the graph outputs.
  std::vector<uint64_t> bytes;
  uint64_t peakBytes = 0;  ///< max of `bytes`
  size_t peakPosition = 0; ///< first position where the peak occurs
  double meanBytes = 0.0;  ///< mean of `bytes`
};

/// Everything the analysis derives from one order.
struct MemoryAnalysis {
  std::vector<ir::NodeId> order;       ///< the order analysed
  std::vector<ValueLiveness> values;   ///< indexed by ValueId
  /// Indexed by NodeId: the node's backward runs (it lies on a gradient path from a parameter
  /// to the loss), so autograd keeps its tape.
  std::vector<bool> keepsTape;
  /// Indexed by ValueId: the value requires a gradient in the step (trainable parameters and
  /// activations with `requiresGrad`); decides the cross-saved inputs of OpRules.
  std::vector<bool> needsGrad;
  /// Indexed by ValueId: the gradient group of a value that requires a gradient (kNone
  /// otherwise). The backward of Add (both inputs), Sub (its first), Identity and the
  /// reshapes hands the output's gradient tensor itself to an input of the same size, so the
  /// gradients of a group share one buffer, live from the smallest producer position of its
  /// members to their largest gradLastUsePos. A value joins its consumer's group only where
  /// that is the first gradient it gets in the backward sweep and no other member is alive
  /// when a later partial is added to it (autograd then sums in place).
  std::vector<ir::ValueId> gradGroup;
  /// Indexed by ValueId: its gradient arrives as a dense buffer of its own layout (false
  /// where the backward of Transpose, Concat or Einsum hands out a strided view of another).
  std::vector<bool> denseGradient;
  /// Indexed by position: bytes the node's backward allocates beyond the adjoints (partial
  /// gradients still to be summed into an adjoint, convolution scratch, the contiguous copy
  /// a contraction makes of a strided output gradient).
  std::vector<uint64_t> backwardExtraBytes;
  FrontierProfile frontier;            ///< live-frontier profile (forward only)
  /// Parameters + parameter gradients + constants + inputs: what stays at the end of the step.
  uint64_t residentBytes = 0;
  /// The same without the gradients, which appear one by one in the backward sweep (a
  /// parameter's gradient at the backward of its last user in the order).
  uint64_t baseResidentBytes = 0;
  uint64_t gradientBytes = 0;          ///< gradients of parameters on a gradient path
  uint64_t parameterBytes = 0;         ///< trainable parameters
  uint64_t activationBytes = 0;        ///< all activations (node outputs)
  uint64_t tapeBytes = 0;              ///< store-all tape: saved activations (once each) + extras
  uint64_t storeAllPeakBytes = 0;      ///< estimated peak of a store-all training step
  size_t storeAllPeakPosition = 0;     ///< where it occurs (see storeAllPeakInBackward)
  bool storeAllPeakInBackward = false; ///< peak during the backward sweep
  /// Largest single-op forward/backward working set; a backward's includes the parameter
  /// gradients that exist by then. Bounds add it to baseResidentBytes.
  uint64_t maxOpWorkingSetBytes = 0;
  ir::NodeId maxOpWorkingSetNode = ir::kNone; ///< the node with that working set
  uint64_t adjointBoundBytes = 0;      ///< largest backward working set incl. live adjoints and gradients
  size_t adjointBoundPosition = 0;     ///< where
  /// The best lower bound on the peak of any schedule that uses this order:
  /// max(resident, base resident + largest op working set, base resident + adjoint bound).
  uint64_t lowerBoundBytes = 0;
};

/// Analyses `graph` under `order` (a topological order of all its nodes).
MemoryAnalysis analyzeMemory(const ir::Graph& graph, std::vector<ir::NodeId> order);

/// Only the frontier profile (cheap; used to compare order heuristics).
FrontierProfile frontierProfile(const ir::Graph& graph, const std::vector<ir::NodeId>& order);

} // namespace tbp::analysis
