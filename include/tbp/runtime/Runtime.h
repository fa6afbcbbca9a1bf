#pragma once
/// \file
/// The runtime: one real training step through LibTorch under a schedule (DESIGN.md §4–5).
/// This header has no LibTorch types; builds without LibTorch get a runtime that says so.

#include "tbp/plan/Simulator.h"
#include "tbp/support/Npy.h"

#include <map>

#include <optional>
#include <string>
#include <vector>

namespace tbp::runtime {

/// How to run the step.
struct RunOptions {
  std::string device = "cpu"; ///< cpu | cuda | cuda:N
  uint64_t seed = 0;          ///< seeds inputs, targets and parameters without data
  int threads = 0;            ///< intra-op threads (0: LibTorch's default)
  int steps = 1;              ///< measured steps (at least)
  double minTimeS = 0;        ///< keep measuring (up to 1000 steps) until the measured steps took this long
  int warmup = 0;             ///< unmeasured steps before them
  bool verify = false;        ///< also run store-all and compare every gradient
  double rtol = 1e-4;         ///< verification: relative tolerance (fp32)
  double atol = 1e-5;         ///< verification: absolute tolerance (fp32)
  std::string optimizer = "none"; ///< none | sgd | adam: the parameter update after backward
  double lr = 1e-3;           ///< learning rate of the optimizer
  std::map<std::string, NpyArray> inputs; ///< graph inputs by name (`--input NAME=FILE`)
  bool keepGradients = false; ///< return the first step's parameter gradients (`--save-grads`)
  /// Also time a store-all step next to every step (warm-up included), in this process,
  /// alternating which of the two runs first: the step-time ratio without the noise between
  /// processes (`--baseline`). The store-all steps' memory is not measured, and they do not
  /// update the parameters (each is timed with the optimizer update of its paired step; their
  /// BatchNorms do update the running statistics).
  bool baseline = false;
};

/// A parameter gradient copied to the host.
struct HostGradient {
  std::string name;           ///< the model's parameter name
  NpyArray array;             ///< its values (`<f4` for fp32 parameters)
};

/// Gradient verification against plain store-all autograd.
struct GradCheck {
  bool passed = false;
  double maxAbsError = 0;      ///< over the parameters whose gradients are finite in both runs
  double maxRelError = 0;
  std::string worstParameter;
  double lossDifference = 0;
  /// Parameters whose gradient holds a NaN or an infinity in either run: each fails the check
  /// (a NaN compares as within any tolerance), the first one named.
  size_t nonFiniteParameters = 0;
  std::string firstNonFinite;
  bool nonFiniteLoss = false;  ///< the loss of either run is NaN or infinite (fails too)
};

/// What a run measured.
struct RunReport {
  double loss = 0;                  ///< loss of the (last) step
  uint64_t measuredPeakBytes = 0;   ///< peak live tensor bytes through the counting allocator
  size_t measuredPeakInstruction = 0; ///< 0-based index of the instruction where it occurred
  std::vector<uint64_t> timeline;   ///< measured peak bytes during each instruction (of the step with the peak)
  uint64_t peakRssBytes = 0;        ///< process peak RSS
  uint64_t reservedPeakBytes = 0;   ///< CUDA: the caching allocator's peak reservation (0 on CPU)
  uint64_t allocatedPeakBytes = 0;  ///< CUDA: the caching allocator's allocated bytes at their peak (rounded blocks), workspaces excluded
  uint64_t libraryWorkspaceBytes = 0; ///< CUDA: cuBLAS/cuDNN workspaces, left out of the measured peak
  std::string memorySource;         ///< what measured `measuredPeakBytes`
  std::string allocatorConfig;      ///< CUDA: the caching allocator's settings (PYTORCH_CUDA_ALLOC_CONF) the step ran with
  double stepTimeS = 0;             ///< median step time
  int measuredSteps = 0;            ///< how many steps the median is of
  double stepTimeMinS = 0;          ///< fastest measured step (what a noisy machine leaves intact)
  double forwardS = 0, recomputeS = 0, backwardS = 0; ///< split of the median step
  double storeAllStepTimeS = 0;     ///< with RunOptions::baseline: median store-all step time
  double stepTimeRatio = 0;         ///< with RunOptions::baseline: median of step / paired store-all step
  std::optional<GradCheck> gradCheck; ///< with RunOptions::verify
  std::vector<HostGradient> gradients; ///< with RunOptions::keepGradients, in value-id order
};

/// True when this build has the LibTorch runtime.
bool available();

/// The BLAS that LibTorch's CPU matrix products call: MatMul, Gemm and Einsum, their batched
/// forms and their backward (convolutions run on oneDNN instead). Found by the library that
/// the `sgemm_` symbol resolves to in this process, symlinks (Debian's libblas.so.3
/// alternative) followed.
struct BlasInfo {
  /// reference (netlib: Debian's default libblas3, about 4 GFLOP/s on one core), openblas,
  /// mkl, blis, atlas, other, or none (no BLAS loaded: a build without LibTorch)
  std::string kind;
  std::string library; ///< the resolved file; empty for none
};
/// The BLAS of this process (see BlasInfo).
BlasInfo cpuBlas();

/// The intra-op threads a run with `requested` threads uses: `requested` when positive, else
/// LibTorch's default (1 in a build without LibTorch).
int intraOpThreads(int requested);

/// The op types of `graph` the runtime has no kernel for, sorted, with counts ("Conv x20").
std::vector<std::string> missingKernels(const ir::Graph& graph);

/// The runtime's profiling step (DESIGN.md §1: costs returned as data). Runs the forward of
/// `graph` in `order` without autograd, as replays run, once to warm up and then `repeats`
/// times, and returns each node's median time in nanoseconds, by node id (at least 1 each):
/// `plan::NodeCosts` for the planner. Device, threads, seed and inputs come from `options`.
/// Op state (BatchNorm running statistics) is left alone.
Expected<plan::NodeCosts> profileForwardCosts(const ir::Graph& graph, const std::vector<ir::NodeId>& order,
                                              const RunOptions& options, int repeats = 3);

/// Measures every node's kernel temporaries on the device of `options` (the calibration that
/// adds to Ops.def's CPU-measured scratch rules what other kernels allocate, e.g. on CUDA
/// cuDNN's workspaces and the reductions' temporaries; Node::scratch). One forward in `order` with real
/// values, as replays run it: per node, the peak beyond its outputs' new buffers; and for a
/// node that keeps a tape, its backward alone (autograd::grad, with the inputs that take
/// gradients in the step as leaves): the peak beyond the input gradients it newly makes.
/// A warm-up pass first (library workspaces). By node id; nodes not in `order` are empty.
Expected<std::vector<std::optional<ir::MeasuredScratch>>> profileScratch(const ir::Graph& graph, const std::vector<ir::NodeId>& order,
                                                                        const RunOptions& options);

/// Runs `stream` (valid for `model`) as a training step: forward, loss, backward; parameters
/// without data are initialized from the seed. Errors: BadInput for ops without kernels,
/// Internal for LibTorch failures, Usage for an unavailable device.
Expected<RunReport> runTrainingStep(const ir::Graph& graph, const plan::StageModel& model, const plan::Stream& stream,
                                    const RunOptions& options);

} // namespace tbp::runtime
