#pragma once
/// \file
/// The stage model of DESIGN.md §4: an order of the forward ops cut into stages, with each
/// stage's cost, input frontier, tape and transient working sets.

#include "tbp/analysis/Memory.h"
#include "tbp/ir/Graph.h"

#include <string_view>
#include <vector>

namespace tbp::plan {

/// One stage: the ops at order positions [first, last].
struct Stage {
  uint32_t first = 0, last = 0;   ///< order positions (inclusive)
  uint64_t forwardFlops = 0;      ///< FLOPs of one forward of the stage
  uint64_t backwardFlops = 0;     ///< FLOPs of its backward (estimated as 2x forward)
  uint64_t cost = 0;              ///< planner objective of one forward: estimatedCost summed,
                                  ///< or the measured nanoseconds (NodeCosts)
  std::vector<ir::ValueId> inputFrontier; ///< F_k: activations/inputs made before, used at or after
  uint64_t inputFrontierBytes = 0;        ///< x_k: bytes of F_k that are not resident
  std::vector<ir::ValueId> tape;          ///< activations autograd saves in this stage
  uint64_t tapeExtraBytes = 0;            ///< masks, indices and statistics of the stage
  uint64_t tapeBytes = 0;                 ///< x̄_k: tape + extra bytes
  std::vector<ir::ValueId> produced;      ///< activations produced in the stage
  std::vector<ir::ValueId> born;          ///< F_{k+1} \ F_k (sorted): what the stage adds to the state
  std::vector<ir::ValueId> dying;         ///< F_k \ F_{k+1} (sorted): what it consumes for good
  std::vector<ir::ValueId> newAdjoints;   ///< F_k values whose gradient B k creates
  uint64_t forwardTransientBytes = 0;     ///< peak of tensors made inside, forward without grad
  uint64_t forwardAllTransientBytes = 0;  ///< same, with autograd keeping the tape
  /// The same two for a forward marked `cache`: its cacheable outputs stay from where they
  /// are made to the stage's end.
  uint64_t forwardCacheTransientBytes = 0;
  uint64_t forwardAllCacheTransientBytes = 0;
  uint64_t backwardTransientBytes = 0;    ///< peak of gradients made inside the backward
  uint64_t gradientBytes = 0;             ///< parameter gradients B k makes (their last user is here)
  /// Outputs of the stage's contractions (Conv, MatMul, Gemm) that a forward marked `cache`
  /// keeps until B k, so that replays of the stage take them instead of recomputing the op
  /// (selective recomputation: the expensive ops run once, the cheap ones are replayed).
  std::vector<ir::ValueId> cacheable;     ///< sorted
  uint64_t cacheableBytes = 0;            ///< bytes of `cacheable`
  uint64_t replayFlops = 0;               ///< FLOPs of a forward while the cache is held
  uint64_t replayCost = 0;                ///< planner cost of such a forward
  /// Contractions (Conv, MatMul, Gemm) whose output only leaves the stage (every reader is in
  /// a later stage): their backward reads their operands, never their output. A forward with
  /// autograd that runs right before the stage's backward (`F_all k` then `B k`, the stage's
  /// cache not held: see elidesForward) records them without running them; that forward's
  /// outputs serve only as the backward's roots. Order positions, ascending.
  std::vector<uint32_t> elidable;
  uint64_t elidableFlops = 0;             ///< FLOPs of the `elidable` ops
  uint64_t elidableCost = 0;              ///< their planner cost
  /// Peak of tensors made inside such a forward: forwardAllTransientBytes without the elided
  /// ops' outputs and kernel scratch.
  uint64_t forwardAllElidedTransientBytes = 0;
  /// It draws random numbers (Dropout): a replay must restore the generator's state, which
  /// the runtime keeps from the stage's first forward to the end of the step.
  bool stochastic = false;
  /// What the runtime keeps from the stage's first forward to the end of the step when the
  /// stream replays it: the generator state (kRngStateBytes) of a stochastic stage, and the
  /// batch statistics of its training BatchNorms (ir::batchStatsBytes), so replays reuse them.
  uint64_t replayStateBytes = 0;
  /// The part of tapeExtraBytes that is that kept state (each training BatchNorm's saved
  /// mean): a tape recorded while the state is held does not hold it a second time.
  uint64_t tapeSharedStateBytes = 0;
};

/// Bytes of one saved random-generator state (LibTorch's CPU Mersenne-twister state; a CUDA
/// Philox state is 16 bytes, so this over-counts there).
inline constexpr uint64_t kRngStateBytes = 5056;

/// The stage model of one graph under one order.
struct StageModel {
  const ir::Graph* graph = nullptr;       ///< the graph (outlives the model)
  std::vector<ir::NodeId> order;          ///< the forward order
  std::vector<Stage> stages;              ///< stages 1..L are stages[0..L-1]
  std::vector<ir::ValueId> outputFrontier;///< F_{L+1}: the graph outputs (the loss)
  std::vector<uint64_t> valueBytes;       ///< bytes per value; 0 for resident ones
  std::vector<bool> requiresGrad;         ///< per value
  std::vector<int64_t> producerPos;       ///< per value: order position of the producer (-1)
  std::vector<int64_t> lastUsePos;        ///< per value: last consumer position (-1)
  std::vector<int64_t> gradLastUsePos;    ///< per value: last consumer passing a gradient (-1)
  std::vector<bool> keepsTape;            ///< per node: it runs a backward and keeps a tape
  std::vector<ir::ValueId> gradGroup;     ///< per value: its gradient group (MemoryAnalysis::gradGroup)
  /// Per value: the value whose buffer it is (itself, or for a whole-buffer view, the
  /// storageOf its input; see isBufferView). The simulator counts each buffer once, however
  /// many held values share it; the per-stage quantities and the DP count views as buffers of
  /// their own, which over-counts where a view and its input are both held.
  std::vector<ir::ValueId> storageOf;
  uint64_t residentBytes = 0;             ///< parameters + constants + inputs (+ optimizer state)
  uint64_t gradientBytes = 0;             ///< all parameter gradients (made stage by stage by B k)
  uint64_t finalTransientBytes = 0;       ///< scratch of the optimizer update after the last B
  uint64_t onePassFlops = 0;              ///< forward FLOPs of one pass
  uint64_t onePassCost = 0;               ///< planner cost of one pass
  bool measuredCosts = false;             ///< costs are measured nanoseconds (NodeCosts)

  /// Number of stages L.
  size_t size() const { return stages.size(); }
  /// Stage k (1-based, as in the instruction stream).
  const Stage& stage(size_t k) const { return stages[k - 1]; }
  /// F_k for k in 1..L+1.
  const std::vector<ir::ValueId>& frontier(size_t k) const {
    return k <= stages.size() ? stages[k - 1].inputFrontier : outputFrontier;
  }
};

/// Measured cost of each node's forward, by node id, in nanoseconds (the runtime's profiling
/// step, `runtime::profileForwardCosts`). Empty: the static estimate (estimatedCost).
using NodeCosts = std::vector<uint64_t>;

/// What the static estimate charges for one byte an op reads or writes, in FLOPs, when it
/// balances stages (chooseCuts). The right figure is the ratio of the rate of the device's
/// contractions to the bandwidth of its memory-bound ops, and it depends on which kernels run
/// the contractions; 4 is the compromise that priced best over CNNs and transformers before
/// the estimate knew which kernels run (docs/theory.md, Measured costs). The cuts keep it so
/// that every device and every costs mode plans over the same stages (same store-all peak,
/// same percentage budgets).
inline constexpr uint64_t kCostPerByte = 4;

/// The prices of the static estimate, in convolution FLOPs: what a byte of a non-constant
/// input or output costs, what one FLOP of a MatMul, Gemm or Einsum costs against one of a
/// convolution's, and what one window element of a MaxPool or AveragePool does (their FLOP
/// rule counts one per element of every window; views move nothing and cost their FLOPs only).
struct EstimatePrices {
  uint64_t perByte = kCostPerByte;
  uint64_t matrixProductWeight = 1;
  uint64_t poolWindowWeight = 1;
  bool operator==(const EstimatePrices& o) const {
    return perByte == o.perByte && matrixProductWeight == o.matrixProductWeight && poolWindowWeight == o.poolWindowWeight;
  }
};

/// The stage prices of a device whose kernels run near their roofline: one CPU core here
/// (2026-12-05, bench/ costs files of GPT-2, resnet50 and the U-Net) ran convolutions at
/// 150-176 GFLOP/s and Add, ReLU, SiLU, GroupNorm and Dropout at 12-18 GB/s, about 15 FLOPs
/// a byte; fp32 on a GPU is in the same range.
inline constexpr uint64_t kDeviceCostPerByte = 16;
/// What a matrix product's FLOP costs against a convolution's when LibTorch's CPU products run
/// on Debian's reference BLAS (netlib): 5-6 GFLOP/s against oneDNN's 150-176, a factor of 25-29
/// on every model measured. A tuned BLAS (OpenBLAS, MKL, BLIS) and CUDA run both at about
/// the same rate.
inline constexpr uint64_t kReferenceBlasProductWeight = 25;

/// What a pooling window element costs against a convolution FLOP on a CPU, in the runtime's
/// own pooling loops (lib/runtime/PoolLoops.h; one thread, 2026-12-05): MaxPool 0.9 ns an
/// element (3x3 stride 2) and 1.0 (2x2), AveragePool 0.66 and 0.92, beside the bytes they
/// move: 70-110 convolution FLOPs at 150-176 GFLOP/s. (LibTorch 1.13's NCHW kernels, which
/// PyTorch eager runs, took 2.9-4.6 ns, about 500.) CUDA's are not measured (1 there).
inline constexpr uint64_t kCpuPoolWindowWeight = 100;

/// Whether `op` runs on the BLAS on a CPU (MatMul, Gemm, Einsum): the ops
/// EstimatePrices::matrixProductWeight prices.
bool isMatrixProduct(ir::Op op);
/// Whether `op` is priced by EstimatePrices::poolWindowWeight (MaxPool, AveragePool).
bool isWindowPool(ir::Op op);

/// The prices the planner's stage costs use on a device: kDeviceCostPerByte, matrix products
/// weighted by kReferenceBlasProductWeight when they run on the reference BLAS, and pooling
/// windows by kCpuPoolWindowWeight on a CPU.
EstimatePrices devicePrices(bool cpu, bool referenceBlas);

/// The static estimate of a node's forward cost, in convolution FLOPs: its FLOPs (a matrix
/// product's weighted by `prices`) plus `prices.perByte` for every byte of its non-constant
/// inputs and its outputs (views move nothing).
uint64_t estimatedCost(const ir::Graph& graph, const ir::Node& node, const EstimatePrices& prices = {});

/// Whether `node` hands out its first input's buffer as its output: Reshape, Flatten,
/// Squeeze, Unsqueeze and Identity with the same element type and count (the runtime's values
/// are contiguous, so ATen's reshape of one is always a view, and its kernels return such
/// views untracked by autograd, sharing the buffer).
bool isBufferView(const ir::Graph& graph, const ir::Node& node);

/// Builds the model for `order` cut before each position in `cuts` (sorted, each in
/// 1..n-1; an empty list gives one stage). Stage costs come from `costs` when it has one
/// entry per node, else from the static estimate at `prices`. Preconditions: `graph`
/// verified, `order` topological.
StageModel buildStageModel(const ir::Graph& graph, const std::vector<ir::NodeId>& order,
                           const std::vector<uint32_t>& cuts, const NodeCosts& costs = {},
                           const EstimatePrices& prices = {});

/// What an optimizer adds to the step's memory (the budget covers the whole step, update
/// included): the state it keeps resident (Adam: two moments per parameter; SGD: none) and the
/// scratch of its update after the last backward (Adam: one temporary the size of the largest
/// parameter; SGD updates in place).
struct OptimizerMemory {
  uint64_t stateBytes = 0;
  uint64_t updateBytes = 0;
  /// Same memory (none and sgd need the same).
  bool operator==(const OptimizerMemory& o) const { return stateBytes == o.stateBytes && updateBytes == o.updateBytes; }
};
/// Names tbp knows: none, sgd, adam.
bool isOptimizerName(std::string_view name);
/// The memory `optimizer` needs for `graph`'s parameters (an unknown name needs none).
OptimizerMemory optimizerMemory(const ir::Graph& graph, std::string_view optimizer);
/// Adds it to the model: resident state, and the update's scratch after the last B.
void addOptimizer(StageModel& model, const OptimizerMemory& optimizer);

/// Cut positions for at most `maxStages` stages of roughly equal estimated cost (at the
/// default EstimatePrices, whatever prices the stages are then planned with), each cut
/// placed at the position with the smallest live frontier within its window (cheap cuts first).
std::vector<uint32_t> chooseCuts(const ir::Graph& graph, const std::vector<ir::NodeId>& order,
                                 size_t maxStages);

} // namespace tbp::plan
