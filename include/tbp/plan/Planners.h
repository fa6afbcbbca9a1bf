#pragma once
/// \file
/// The planners. Each one enumerates the schedules it considers (independently of the budget);
/// `planForBudget` simulates them and keeps the cheapest whose predicted peak fits. Because the
/// candidate set does not depend on the budget, the predicted peak never rises as the budget
/// shrinks.

#include "tbp/plan/Simulator.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tbp::plan {

/// The planners of DESIGN.md §4.
enum class PlannerKind : uint8_t {
  StoreAll,     ///< no recomputation
  Sqrt,         ///< Chen et al. 2016: about sqrt(L) segments of equal cost, one level
  IntervalTree, ///< tiny-backprop's balanced interval tree over balanced blocks
  Revolve,      ///< Griewank & Walther: binomial checkpointing for uniform chains
  Optimal,      ///< budget-optimal dynamic programming over the stage chain (Rotor-style)
};

/// All planners in report order.
inline constexpr PlannerKind kAllPlanners[] = {PlannerKind::StoreAll, PlannerKind::Sqrt, PlannerKind::IntervalTree,
                                               PlannerKind::Revolve, PlannerKind::Optimal};

/// Command-line name (`store-all`, `sqrt`, `interval-tree`, `revolve`, `optimal`).
const char* plannerName(PlannerKind kind);
/// Parses a command-line name.
std::optional<PlannerKind> parsePlanner(std::string_view name);

/// Named planner parameters, in a stable order (written into the schedule file).
using Params = std::vector<std::pair<std::string, std::string>>;

/// One schedule a planner considers, with its simulation.
struct Candidate {
  Stream stream;  ///< the instructions
  SimResult sim;  ///< simulated peak and cost
  Params params;  ///< how the planner built it (segments, block size, snapshots, slots, ...)
};

/// Knobs of the optimal planner's dynamic program.
struct PlanOptions {
  size_t memorySlots = 256; ///< memory granularity: slots spanning the memory planned for
  uint64_t slotBytes = 0;   ///< explicit slot size (0: derived from memorySlots)
  /// The budget the schedules are for (0: none). The optimal planner then spreads its slots
  /// over the memory up to the budget instead of up to the store-all peak: a finer grain
  /// where the schedule has to fit, at the same table size.
  uint64_t budgetBytes = 0;
  /// The optimal planner also weighs the other planners' schedules, so it never does worse
  /// than any of them even where its memory model is conservative (skips shared by cuts).
  bool portfolio = true;
  /// The optimal planner also plans with stages that cache their contractions' outputs on the
  /// first forward (`F_n k cache`), so replays recompute only the cheap ops around them.
  bool selective = true;
};

/// Every schedule `kind` considers for `model`, simulated. The optimal planner also includes the
/// other planners' schedules, so it never does worse than any of them.
std::vector<Candidate> candidates(const StageModel& model, PlannerKind kind, const PlanOptions& options = {});

/// candidates() for the tightest schedule (`--budget min`): the optimal planner's memory grid is
/// finer under a budget (PlanOptions::budgetBytes), so it plans again at the smallest peak found
/// until that stops falling (at most three more rounds), as an infeasible budget's search does.
std::vector<Candidate> tightestCandidates(const StageModel& model, PlannerKind kind, const PlanOptions& options = {});

/// The chosen plan.
struct Plan {
  PlannerKind planner;
  Candidate chosen;
  uint64_t minFeasibleBytes = 0; ///< smallest predicted peak among the candidates
};

/// Picks the cheapest candidate (forward cost, then peak) with predicted peak <= budget; without a
/// budget, the cheapest overall. Fails with ErrorCode::Infeasible naming the smallest feasible
/// budget when none fits.
Expected<Plan> chooseCandidate(std::vector<Candidate> cands, PlannerKind kind, std::optional<uint64_t> budget);

/// The smallest predicted peak among `cands`.
uint64_t minFeasibleBytes(const std::vector<Candidate>& cands);

/// candidates() + chooseCandidate().
Expected<Plan> planForBudget(const StageModel& model, PlannerKind kind, std::optional<uint64_t> budget,
                             const PlanOptions& options = {});

/// Griewank's minimal number of forward steps to reverse a chain of `l` steps with `s`
/// snapshots: t(l, s) = r·l − C(s+r, r−1) with r the least integer with C(s+r, s) ≥ l.
uint64_t revolveForwardSteps(uint64_t l, uint64_t s);

/// The planners' streams, exposed for tests.
Stream storeAllStream(size_t stages);
Stream sqrtStream(const StageModel& model, size_t segments);
Stream intervalTreeStream(const StageModel& model, size_t blocks, size_t maxDepth);
Stream revolveStream(size_t stages, size_t snapshots);

} // namespace tbp::plan
