#pragma once
// Shared by the conformance programs: reading ONNX backend node tests.

#include "tbp/frontend/onnx/OnnxImporter.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace tbp::conformance {

namespace fs = std::filesystem;

/// Parses a protobuf file; false when missing or malformed.
template <typename Proto> bool loadProto(const fs::path& path, Proto& proto) {
  std::ifstream in(path, std::ios::binary);
  return in && proto.ParseFromIstream(&in);
}

/// Reads an exclusions file (`test_name  reason` lines, `#` comments). False when unreadable.
inline bool readExclusions(const std::string& path, std::map<std::string, std::string>& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string name, reason;
    ls >> name;
    std::getline(ls, reason);
    out[name] = reason;
  }
  return true;
}

/// The test folders under `root` (NODE_TEST_DIR/node), sorted.
inline std::vector<fs::path> listNodeTests(const fs::path& root) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory()) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

/// A node test's model imported into the IR, and its graph inputs' reference files in order.
struct ImportedNodeTest {
  Expected<ir::Graph> graph;
  std::vector<std::pair<std::string, fs::path>> inputFiles;
};

/// Imports the node test in `dir` (whose model.onnx is `model`, default-domain opset `opset`):
/// symbolic input dimensions are bound from the reference inputs, and an opset below tbp's
/// range is raised to 7 — the generator stamps each test with its op's newest schema version,
/// and ops whose newest version predates opset 7 read the same at opset 7.
inline ImportedNodeTest importNodeTest(const fs::path& dir, onnx::ModelProto model, int opset) {
  frontend::OnnxImportOptions options;
  std::set<std::string> initializers;
  for (const auto& init : model.graph().initializer()) initializers.insert(init.name());
  std::vector<std::pair<std::string, fs::path>> inputFiles;
  int inputIndex = 0;
  for (const auto& in : model.graph().input()) {
    if (initializers.count(in.name())) continue;
    fs::path file = dir / "test_data_set_0" / ("input_" + std::to_string(inputIndex++) + ".pb");
    inputFiles.emplace_back(in.name(), file);
    onnx::TensorProto ref;
    if (!loadProto(file, ref)) continue;
    const auto& shape = in.type().tensor_type().shape();
    for (int d = 0; d < shape.dim_size() && d < ref.dims_size(); ++d)
      if (shape.dim(d).has_dim_param()) options.dims[shape.dim(d).dim_param()] = ref.dims(d);
  }
  fs::path modelPath = dir / "model.onnx";
  if (opset < frontend::kMinOnnxOpset) {
    for (auto& o : *model.mutable_opset_import())
      if (o.domain().empty() || o.domain() == "ai.onnx") o.set_version(frontend::kMinOnnxOpset);
    modelPath = fs::temp_directory_path() / ("tbp_conformance_" + dir.filename().string() + ".onnx");
    std::ofstream out(modelPath, std::ios::binary);
    model.SerializeToOstream(&out);
  }
  Expected<ir::Graph> graph = frontend::importOnnxFile(modelPath.string(), options);
  if (modelPath != dir / "model.onnx") fs::remove(modelPath);
  return {std::move(graph), std::move(inputFiles)};
}

} // namespace tbp::conformance
