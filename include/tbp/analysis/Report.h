#pragma once
/// \file
/// The `tbp analyze` report: the analysis pipeline as one function, its result as data.

#include "tbp/analysis/Memory.h"
#include "tbp/analysis/Order.h"

#include <string>
#include <vector>

namespace tbp::analysis {

/// One order heuristic's frontier, for the side-by-side comparison.
struct OrderSummary {
  OrderHeuristic heuristic;  ///< which heuristic
  uint64_t peakBytes = 0;    ///< frontier peak
  size_t peakPosition = 0;   ///< where it peaks
  double meanBytes = 0;      ///< mean frontier
  uint64_t storeAllPeakBytes = 0; ///< store-all estimate under this order
  uint64_t lowerBoundBytes = 0;   ///< lower bound under this order
};

/// Distribution summary of a per-value statistic.
struct Distribution {
  uint64_t max = 0;        ///< largest value
  std::string maxValue;    ///< the value name where the max occurs
  double mean = 0;         ///< mean
  uint64_t p50 = 0;        ///< median
  uint64_t p90 = 0;        ///< 90th percentile
  uint64_t countAbove = 0; ///< how many exceed `threshold`
  uint64_t threshold = 0;  ///< threshold used for countAbove
};

/// The height-compressibility verdict and why.
struct Compressibility {
  std::string verdict;              ///< highly compressible | compressible | weakly compressible | not compressible
  double potential = 1.0;           ///< (store-all peak - resident) / (lower bound - resident)
  std::vector<std::string> reasons; ///< sentences, most important first
};

/// A large tensor.
struct TensorEntry {
  std::string name;  ///< value name
  std::string op;    ///< producing op
  std::string type;  ///< `f32[8,64,56,56]`
  uint64_t bytes;    ///< size
};

/// Everything `tbp analyze` reports.
struct AnalysisReport {
  std::string graphName;                         ///< graph name
  size_t nodes = 0, values = 0;                  ///< counts
  size_t inputs = 0, parameters = 0, constants = 0, activations = 0; ///< value counts by kind
  std::vector<std::pair<std::string, size_t>> opCounts; ///< op → count, most frequent first
  uint64_t parameterBytes = 0, constantBytes = 0, inputBytes = 0, activationBytes = 0; ///< sizes
  uint64_t forwardFlops = 0;                     ///< sum of per-op FLOP estimates
  std::vector<TensorEntry> largestTensors;       ///< the largest activations, largest first
  std::vector<OrderSummary> orders;              ///< every heuristic side by side
  OrderHeuristic chosen = OrderHeuristic::File;  ///< the order the rest of the report uses
  MemoryAnalysis memory;                         ///< chosen order's liveness, peak and bounds
  Distribution fanOut;                           ///< users per used activation or input
  Distribution skipLength;                       ///< last-use position - producer position
  Compressibility compressibility;               ///< verdict
};

/// Options of the analysis.
struct AnalyzeOptions {
  /// The order to report in detail; nullopt picks the heuristic with the lowest store-all peak
  /// (ties: lowest frontier peak, then report order).
  std::optional<OrderHeuristic> order;
  size_t largestTensors = 10; ///< how many large tensors to list
};

/// Runs the analysis pipeline. Precondition: `graph` passed ir::verify() and ends in a loss.
AnalysisReport analyzeGraph(const ir::Graph& graph, const AnalyzeOptions& options);

} // namespace tbp::analysis
