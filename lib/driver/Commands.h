#pragma once
// Private to the driver: the subcommand table and the helpers the commands share.

#include "tbp/analysis/Memory.h"
#include "tbp/analysis/Order.h"
#include "tbp/ir/Graph.h"
#include "tbp/plan/Planners.h"
#include "tbp/plan/Simulator.h"
#include "tbp/plan/StageModel.h"
#include "tbp/runtime/Runtime.h"
#include "tbp/schedule/ScheduleFile.h"
#include "tbp/ir/Loss.h"
#include "tbp/support/Status.h"

#include <CLI/CLI.hpp>

#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

namespace tbp::driver {

/// Streams a command writes to.
struct Io {
  std::ostream& out;
  std::ostream& err;
};

/// One subcommand: registers its options on `app` and returns the action to run after parsing.
struct Command {
  const char* name;
  const char* summary;
  std::function<std::function<int(Io&)>(CLI::App& app)> setup;
};

/// The subcommand table.
const std::vector<Command>& commands();

/// How a model file is read: the options every model-reading command shares.
struct ModelOptions {
  std::string path;               ///< model file
  std::string workload;           ///< built-in workload (`--workload`), when there is no file
  std::string profile;            ///< its size (`--profile`)
  std::vector<std::string> dims;  ///< `NAME=VALUE` bindings
  std::vector<std::string> freeze;///< initializers to freeze
  std::string loss = "mean";      ///< loss appended when the model has none
  bool noFuse = false;            ///< `--no-fuse`: keep expanded GELUs as their ONNX ops

  /// True when the model is a built-in workload rather than a file.
  bool isWorkload() const { return path.empty() && (!workload.empty() || !profile.empty()); }
  /// The workload's name and profile, defaults filled in (gpt2, small).
  std::string workloadName() const { return workload.empty() ? "gpt2" : workload; }
  std::string profileName() const { return profile.empty() ? "small" : profile; }
  /// How messages and reports name the model: the file, or `workload gpt2/small`.
  std::string name() const { return isWorkload() ? "workload " + workloadName() + "/" + profileName() : path; }
};

/// Adds MODEL, --workload, --profile, --dim, --freeze, --no-fuse and --loss to `app`.
void addModelOptions(CLI::App& app, ModelOptions& options);

/// The check of an option that names a file to write: not empty, and not an existing folder
/// ('-', stdout, passes). A usage error (exit 2) when it fails.
CLI::Validator outputFile();

/// The check of a number option: finite (CLI11's Range lets NaN through), and with
/// `nonNegative` 0 or more.
CLI::Validator finiteNumber(bool nonNegative);

/// The check of an option whose value must not be empty (`what` says what to give instead).
CLI::Validator nonEmpty(const std::string& what);

/// Usage error when `output` (given to `option`) is the model file the command reads: tbp
/// never writes over its inputs (DESIGN.md §7). Empty and '-' pass.
Status checkNotTheModel(const std::string& option, const std::string& output, const ModelOptions& model);

/// Reads a model (`.onnx`, or `.tbp` text IR); with `withLoss`, appends the loss when the
/// model has none. `withData` loads parameter contents (the runtime needs them; analysis does
/// not).
Expected<ir::Graph> loadModel(const ModelOptions& options, bool withData, bool withLoss = true);

/// A model the runtime can run: this build has LibTorch (else Internal), the model loads with
/// its data and the loss, and every op has a kernel (else BadInput listing the missing ones).
Expected<ir::Graph> loadRunnableModel(const ModelOptions& options);

/// A graph cut into stages under the best (or the requested) order, with the figures that
/// plan and run report.
struct PreparedStages {
  analysis::OrderHeuristic order;
  analysis::MemoryAnalysis memory; ///< op-level liveness under the order (lower bound)
  plan::StageModel model;
  uint64_t storeAllPeak = 0;       ///< simulated store-all peak at stage granularity
};

/// Picks the order (`orderName`, or the heuristic with the lowest store-all peak), coarsens it
/// into at most `maxStages` stages and builds the stage model.
PreparedStages prepare(const ir::Graph& graph, const std::string& orderName, size_t maxStages,
                       const plan::NodeCosts& costs = {}, const plan::EstimatePrices& prices = {});

/// prepare(), with the optimizer's memory in the model (its state resident, its update after
/// the last backward) when `optimizer` is not "none": the store-all peak and the lower bound
/// include it, as `tbp plan --optimizer` and `tbp run --optimizer` plan.
std::shared_ptr<const PreparedStages> prepareWithOptimizer(const ir::Graph& graph, const std::string& orderName, size_t maxStages,
                                                           const plan::NodeCosts& costs, const plan::EstimatePrices& prices,
                                                           const std::string& optimizer);

/// The stage counts a planner tries when `--max-stages` is left out (store-all takes the
/// first). Finer stages let the optimal planner recompute less, but not steadily (the
/// boundaries move, and the DP's slots round more terms): at 50 % the exported U-Net's
/// recompute measured 285 ms at 64 stages, 266 at 96, 190 at 128, resnet50's 217, 208, 197
/// (2026-12-05, docs/theory.md "Stage counts"); and every instruction has a fixed cost the
/// stage prices do not see (kInstructionOverheadNs). Counts past the op count are one model.
inline constexpr size_t kAutoStageCounts[] = {64, 96, 128};
/// What the choice among stage counts charges per instruction of a schedule, the fixed cost
/// the planner's stage prices do not see: about 40 µs a stage instruction on a CPU core here
/// (the built-in transformer at 50 %: 358 instructions at 128 stages against 185 at 64 took
/// 5-8 ms more a step at equal recomputation), in ns for measured costs and in convolution
/// FLOPs (150-176 GFLOP/s here) for the estimate.
inline constexpr uint64_t kInstructionOverheadNs = 40'000;
inline constexpr uint64_t kInstructionOverheadCost = 8'000'000;

/// The stage counts to plan on: `maxStages` when it was given (non-zero), else the
/// kAutoStageCounts up to the first that reaches `ops` when the planner `searches` (all but
/// store-all, whose schedule is the same at every count), or the first alone.
std::vector<size_t> stageCountsToTry(size_t maxStages, size_t ops, bool searches);
/// "64, 96 or 128".
std::string describeCounts(const std::vector<size_t>& counts);

/// One planner's schedule over one or more stage models of the same graph and order.
struct GranularPlan {
  std::shared_ptr<const PreparedStages> stages; ///< the model the schedule was planned on
  Expected<plan::Plan> plan;
  uint64_t minFeasible = 0; ///< smallest simulated peak among that model's candidates
  std::vector<size_t> stagesTried; ///< the stage count of every model planned on, in order
};
/// Plans `kind` on each stage count (`prepareAt(count)` builds its model: cuts, costs,
/// optimizer) and keeps the cheapest schedule: under `budget` the lowest recompute cost plus
/// the instruction overhead (kInstructionOverhead*), with `tightest` the smallest peak; when
/// none is feasible, the model with the smallest feasible peak (its error names it).
GranularPlan planAcrossStageCounts(const std::vector<size_t>& counts, const std::function<std::shared_ptr<const PreparedStages>(size_t)>& prepareAt,
                                   plan::PlannerKind kind, const plan::PlanOptions& options, std::optional<uint64_t> budget, bool tightest);

/// The static estimate's stage prices for `device` (cpu, cuda, cuda:N): plan::devicePrices,
/// with matrix products weighted when this machine's CPU products run on the reference BLAS.
/// `tbp plan` prices for this machine's CPU, as its `--costs measured` does. The environment
/// variable TBP_MATRIX_PRODUCT_WEIGHT (an integer, 1 to 1000) overrides the weight: to plan
/// here for another machine, and to keep the CLI tests independent of this one's BLAS.
Expected<plan::EstimatePrices> estimatePricesFor(const std::string& device);
/// Whether the static kernel-scratch table describes `run`'s kernels: LibTorch's CPU kernels at
/// one intra-op thread (on CUDA, and with more threads, `--scratch auto` measures instead).
bool scratchTableHolds(const runtime::RunOptions& run);
/// How `prices` read in a report: "FLOPs + 16 a byte moved; matrix products x25 (they run on
/// the reference BLAS here)", and the pooling weight when `graph` pools.
std::string describePrices(const plan::EstimatePrices& prices, const ir::Graph& graph);
/// Whether `graph` has a MaxPool or an AveragePool (the ops EstimatePrices::poolWindowWeight prices).
bool hasPooling(const ir::Graph& graph);

/// What recomputation costs the planner (`--costs`).
/// Kernel temporaries per node id, measured on a device (measureScratch) or read from a costs
/// file (ResolvedCosts::scratch); nullopt for a node without a kernel of its own.
using NodeScratch = std::vector<std::optional<ir::MeasuredScratch>>;

struct ResolvedCosts {
  plan::NodeCosts costs;     ///< empty: the estimate
  double profileSeconds = 0; ///< how long the profiling step took (measured)
  /// A costs file's kernel scratch per node (`tbp profile --scratch measured`); empty if none.
  NodeScratch scratch;
  std::string scratchDevice; ///< where that scratch was measured
};

/// Records kernel scratch on the graph's nodes (Node::scratch), where the memory model takes the
/// larger of it and its static rules.
void applyScratch(ir::Graph& graph, const NodeScratch& scratch);

/// The runtime's profiling step on `run`'s device, threads, seed and inputs, over the graph's
/// file order (`graph` needs its data): `repeats` measured forwards after one warm-up.
Expected<ResolvedCosts> measureCosts(const ir::Graph& graph, const runtime::RunOptions& run, int repeats = 3);

/// Every node's kernel temporaries measured on `run`'s device (runtime::profileScratch; with
/// -vv each is logged next to the memory model's value), and the seconds it took.
struct ScratchMeasurement {
  NodeScratch scratch;
  double seconds = 0;
};
Expected<ScratchMeasurement> measureScratch(const ir::Graph& graph, const runtime::RunOptions& run);

/// `--costs estimate|measured|FILE`: no costs (the estimate); measureCosts(); or a costs file
/// (`tbp profile -o`) measured for this graph.
Expected<ResolvedCosts> resolveCosts(const std::string& spec, const ir::Graph& graph, const runtime::RunOptions& run);

/// Reads and parses a schedule file written by `tbp plan -o`.
Expected<schedule::ScheduleFile> loadSchedule(const std::string& path);
/// True when the schedule was planned with kernel scratch from a costs file
/// (`planner_params.scratch = costs_file`): re-simulating it needs that file.
bool plannedWithCostsFileScratch(const schedule::ScheduleFile& file);
/// True for `cuda` and `cuda:N` (`--device`).
bool isCudaDevice(const std::string& device);

/// Seconds of recomputation a simulated stream costs beyond one forward pass, when the model's
/// costs are measured nanoseconds; 0 under the estimate.
double predictedRecomputeSeconds(const plan::StageModel& model, const plan::SimResult& sim);

/// Measured forward time by op type, the slowest `rows` first, with their FLOP estimate.
std::string costsByOp(const ir::Graph& graph, const plan::NodeCosts& costs, size_t rows);

/// The forward FLOPs of the ops that LibTorch runs through the BLAS on a CPU (MatMul, Gemm,
/// Einsum: runtime::BlasInfo) and of the whole graph.
struct BlasFlops {
  uint64_t blas = 0, total = 0;
  double share() const { return total ? static_cast<double>(blas) / static_cast<double>(total) : 0.0; }
};
/// What `tbp run` and `tbp profile` report about the BLAS on `device`, found once; logs a
/// warning for `model` when its BLAS ops (at least 1 GFLOP a forward, a quarter of a second or
/// more there) run on the reference BLAS. On CUDA (cuBLAS) `onCpu` is false and `info` empty.
struct BlasUse {
  bool onCpu = false;
  runtime::BlasInfo info;
  BlasFlops flops;
};
BlasUse checkBlas(const ir::Graph& graph, const std::string& device, const std::string& model);

/// Prints `status` as `tbp: error: message` and returns its exit code.
int reportError(Io& io, const Status& status);

/// Writes `contents` to `path` atomically, or to `out` when path is `-`.
Status writeOutput(Io& io, const std::string& path, const std::string& contents);

// Subcommand setups (one file each).
std::function<int(Io&)> setupAnalyze(CLI::App& app);
std::function<int(Io&)> setupDump(CLI::App& app);
std::function<int(Io&)> setupOps(CLI::App& app);
std::function<int(Io&)> setupPlan(CLI::App& app);
std::function<int(Io&)> setupValidate(CLI::App& app);
std::function<int(Io&)> setupCompare(CLI::App& app);
std::function<int(Io&)> setupRun(CLI::App& app);
std::function<int(Io&)> setupProfile(CLI::App& app);
std::function<int(Io&)> setupExportWorkload(CLI::App& app);
std::function<int(Io&)> setupBench(CLI::App& app);

} // namespace tbp::driver
