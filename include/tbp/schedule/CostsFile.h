#pragma once
/// \file
/// The costs file: measured forward times of a graph's ops (`tbp profile -o costs.json`), and,
/// when profiled with `--scratch measured` (automatic on CUDA), each op's kernel temporaries on
/// that device; read back by `tbp plan --costs FILE` and `tbp run --costs FILE` so that plans
/// priced and sized by a measurement are reproducible, and can be made away from the device.
/// Documented in docs/schedule-format.md.

#include "tbp/ir/Graph.h"
#include "tbp/plan/StageModel.h"
#include "tbp/support/Status.h"

#include <optional>
#include <string>
#include <vector>

namespace tbp::schedule {

inline constexpr const char* kCostsFormatName = "tbp-costs";
inline constexpr int kCostsFormatVersion = 2;
/// The oldest version a reader still accepts (1: times only, no kernel scratch).
inline constexpr int kCostsFormatOldestVersion = 1;

/// One measurement of a graph's op costs.
struct CostsFile {
  std::string graphFingerprint; ///< fingerprint() of the measured graph
  std::string graphName;
  std::string device;           ///< where it was measured (cpu, cuda:0)
  int threads = 0;              ///< intra-op threads (0: LibTorch's default)
  int repeats = 0;              ///< measured passes the medians are of
  plan::NodeCosts nodeNs;       ///< median forward time per node id, nanoseconds (>= 1)
  /// Kernel temporaries measured on `device` per node id (runtime::profileScratch); empty when
  /// not measured, otherwise one entry per node (nullopt: the node runs no kernel of its own).
  std::vector<std::optional<ir::MeasuredScratch>> scratch;
};

/// Serializes deterministically; node names and op types are written beside the times so the
/// file reads on its own.
std::string writeCosts(const CostsFile& file, const ir::Graph& graph);

/// Parses a costs file measured for `graph`. BadInput naming `source` and the field when it is
/// malformed, for another graph (fingerprint), or does not give every node exactly one time.
Expected<CostsFile> readCosts(const std::string& text, const ir::Graph& graph, const std::string& source);

} // namespace tbp::schedule
