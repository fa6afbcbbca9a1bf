#pragma once
/// \file
/// Built-in benchmark workloads (DESIGN.md §2): transformer, gpt2, resnet, long_context, unet,
/// chain and random_dag, each at small, medium and large sizes. `docs/benchmarks.md` holds the
/// architectures and sizes; `bench/pytorch_baseline.py` builds the same ones in PyTorch.

#include "tbp/ir/Graph.h"
#include "tbp/support/Status.h"

#include <optional>
#include <string>
#include <vector>

namespace tbp::workloads {

/// How big a workload is: `small` runs a step in seconds on 2 CPU cores, `medium` in under a
/// minute, `large` stresses memory.
enum class Profile : uint8_t { Small, Medium, Large };

/// Parses `small`, `medium`, `large`.
std::optional<Profile> parseProfile(const std::string& text);
/// The spelling of a profile.
const char* profileName(Profile profile);

/// The workload names, in the order the benchmark reports them.
const std::vector<std::string>& workloadNames();

/// One line on what `name` is at `profile` ("decoder, causal; B4 S128 D128 H4 L4 V2048").
/// Empty for an unknown name.
std::string describe(const std::string& name, Profile profile);

/// The forward graph of workload `name` at `profile`, without a loss (callers append one, as
/// for a model file), with seeded parameter data. It is built, written as ONNX (opset 17) and
/// read back through the ONNX importer, so a workload and its exported model
/// (`exportWorkload`) are the same graph by construction. `withData` as the importer's
/// `loadData`: without it, the graph is what `tbp analyze`/`plan` read from the exported file.
/// Usage error for an unknown name.
Expected<ir::Graph> buildWorkload(const std::string& name, Profile profile, bool withData = true);

/// The workload as a binary ONNX model (what `tbp export-workload` writes).
Expected<std::string> exportWorkload(const std::string& name, Profile profile);

} // namespace tbp::workloads
