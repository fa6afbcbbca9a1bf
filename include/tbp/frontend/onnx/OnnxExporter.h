#pragma once
/// \file
/// tbp IR → ONNX ModelProto (opset 17), so graphs built inside tbp (the built-in workloads) can
/// be opened by other tools and read back by `tbp analyze`/`plan`/`run`.

#include "tbp/ir/Graph.h"
#include "tbp/support/Status.h"

#include <string>

namespace tbp::frontend {

/// The default-domain opset exported graphs declare.
inline constexpr int kExportOpset = 17;

/// Serializes `graph` as a binary ONNX model. Parameters become initializers with their data;
/// constants become initializers too, except float constants read by an input that takes a
/// gradient, which become `Constant` nodes (so an importer does not take them for trainable
/// weights). Fails (BadInput, naming `source` and the node) on an op with no ONNX spelling
/// (tbp's loss ops) or a parameter/constant without data.
Expected<std::string> exportOnnx(const ir::Graph& graph, const std::string& source);

} // namespace tbp::frontend
