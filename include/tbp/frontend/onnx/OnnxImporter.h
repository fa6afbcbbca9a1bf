#pragma once
/// \file
/// ONNX ModelProto → tbp IR. Protobuf and ONNX types never leave this component (DESIGN.md §2).

#include "tbp/ir/Graph.h"
#include "tbp/support/Npy.h"
#include "tbp/support/Status.h"

#include <map>
#include <string>
#include <vector>

namespace tbp::frontend {

/// Options of an ONNX import.
struct OnnxImportOptions {
  /// Values for symbolic dimensions (`--dim batch=8`).
  std::map<std::string, int64_t> dims;
  /// Names of float initializers to freeze (they become constants, `--freeze`).
  std::vector<std::string> freeze;
  /// Load parameter and constant element data (the runtime needs it; analysis does not).
  bool loadData = true;
  /// Fuse op patterns that exporters expand into one tbp op (the erf and tanh GELU
  /// expansions into Gelu; docs/onnx-support.md#fusions). `--no-fuse` turns it off (inert Dropouts are elided either way).
  bool fuse = true;
};

/// The default-domain opsets tbp accepts.
inline constexpr int kMinOnnxOpset = 7;
inline constexpr int kMaxOnnxOpset = 17;

/// Imports a binary `.onnx` file. External data is read from files named by the model,
/// relative to the model's folder and never outside it. Errors name the file and the node or
/// value: BadInput for bad models, Usage for a `--dim`/`--freeze` name the model lacks.
Expected<ir::Graph> importOnnxFile(const std::string& path, const OnnxImportOptions& options);

/// Imports a binary ONNX model held in memory; `name` stands for the file in messages and
/// external data (if any) is read relative to its folder.
Expected<ir::Graph> importOnnxBytes(const std::string& bytes, const std::string& name, const OnnxImportOptions& options);

/// Reads a serialized ONNX TensorProto (`.pb`, as the ONNX test data stores inputs) into a
/// host array. BadInput naming the file when it is not one.
Expected<NpyArray> readTensorProtoFile(const std::string& path);

/// The ONNX op types that tbp imports, sorted (for `tbp ops` and the conformance tests).
std::vector<std::string> supportedOnnxOps();

} // namespace tbp::frontend
