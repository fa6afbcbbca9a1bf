#pragma once
/// \file
/// The schedule file (DESIGN.md §6, docs/schedule-format.md): write, read, validate, compare.

#include "tbp/plan/Planners.h"

#include <optional>
#include <string>
#include <vector>

namespace tbp::schedule {

/// Format name and version written into every file.
inline constexpr const char* kFormatName = "tbp.schedule";
inline constexpr int kFormatVersion = 2;
/// Version 2 added forwards that cache (`F_n 3 cache`); a schedule without them is written as
/// version 1, so older readers still take it. Both are read.
inline constexpr int kFormatVersionWithoutCache = 1;

/// A stage as the file records it.
struct StageRecord {
  uint32_t first = 0, last = 0;     ///< order positions (inclusive)
  uint64_t forwardFlops = 0;        ///< forward FLOPs
  uint64_t inputFrontierBytes = 0;  ///< x_k
  uint64_t tapeBytes = 0;           ///< x̄_k
};

/// Everything a schedule file holds.
struct ScheduleFile {
  std::string graphFingerprint;          ///< fingerprint() of the planned graph
  std::string graphName;                 ///< for people
  std::string planner;                   ///< planner name
  plan::Params plannerParams;            ///< how it built the schedule
  std::optional<uint64_t> budgetBytes;   ///< the budget planned for (none: unconstrained)
  std::string orderHeuristic;            ///< how the order was chosen
  std::vector<uint32_t> order;           ///< node ids in forward order
  std::vector<StageRecord> stages;       ///< stage boundaries and figures
  plan::Stream instructions;             ///< the stream
  uint64_t predictedPeakBytes = 0;       ///< simulator's peak
  uint64_t peakInstruction = 0;          ///< 1-based index of the peak instruction
  double recomputeRatio = 1.0;           ///< forward FLOPs executed / one pass
  uint64_t forwardFlops = 0;             ///< forward FLOPs executed
  uint64_t residentBytes = 0;            ///< resident part of the peak
  uint64_t storeAllPeakBytes = 0;        ///< store-all peak under the same stages
  uint64_t lowerBoundBytes = 0;          ///< best lower bound known on the peak
};

/// The value of `key` in the file's planner_params, or `otherwise` when it has none.
std::string plannerParam(const ScheduleFile& file, const std::string& key, const std::string& otherwise);

/// A stable fingerprint of a graph: hash of its text form without constant data (structure,
/// types, names) — the same model imported with the same options gives the same fingerprint,
/// whether or not its data was loaded.
std::string fingerprint(const ir::Graph& graph);

/// Serializes deterministically (same input, same bytes).
std::string writeSchedule(const ScheduleFile& file);

/// Parses a schedule file. BadInput naming `source` and the field on any problem.
Expected<ScheduleFile> readSchedule(const std::string& text, const std::string& source);

/// Rebuilds the stage model the file describes for `graph`, its stages priced by `costs` (one
/// measured time per node) or, when empty, by the static estimate. BadInput when the
/// fingerprint, order or stages do not fit the graph.
Expected<plan::StageModel> stageModelFor(const ScheduleFile& file, const ir::Graph& graph, const std::string& source,
                                         const plan::NodeCosts& costs = {});

/// Checks a schedule against the model it claims: fingerprint, order, stages, that the stream
/// is valid, that the recorded predicted peak and recompute ratio are what the simulator finds,
/// and that the budget holds. BadInput with the reason otherwise. A file written before
/// forwards right before their backward elided (2026-12-05) records the figures of the stream
/// without elision: it is valid, and `note` (when given) says what the stream simulates to now.
Status validateSchedule(const ScheduleFile& file, const ir::Graph& graph, const std::string& source, std::string* note = nullptr);

/// What changed between two schedules.
struct Comparison {
  uint64_t peakA = 0, peakB = 0;
  double recomputeA = 0, recomputeB = 0;
  size_t stagesA = 0, stagesB = 0;
  size_t instructionsA = 0, instructionsB = 0;
  std::string plannerA, plannerB;
  std::optional<uint64_t> budgetA, budgetB;
  bool sameGraph = true;
  double peakChangePct = 0;      ///< (B - A) / A * 100
  double recomputeChangePct = 0; ///< (B - A) / A * 100
  size_t instructionsDiffering = 0; ///< positions where the streams differ (plus length change)
  std::vector<std::string> crossed; ///< thresholds crossed, as sentences
};

/// Compares A (baseline) with B; thresholds in percent, none when nullopt.
Comparison compareSchedules(const ScheduleFile& a, const ScheduleFile& b, std::optional<double> maxPeakIncreasePct,
                            std::optional<double> maxRecomputeIncreasePct);

/// Renders a comparison as `text`, `json` or `markdown`.
std::string renderComparison(const Comparison& c, const std::string& format, const std::string& nameA, const std::string& nameB);

/// An SVG of the schedule's memory over its instructions against the budget and the lower
/// bound, with the stage frontiers x_k below.
std::string renderTimelineSvg(const plan::StageModel& model, const plan::SimResult& sim, std::optional<uint64_t> budget,
                              uint64_t lowerBound, const std::string& title);

} // namespace tbp::schedule
