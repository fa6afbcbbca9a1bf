// Conformance of the ONNX frontend against the ONNX backend node tests (DESIGN.md §8).
//
//   tbp_node_conformance NODE_TEST_DIR EXCLUSIONS_FILE
//
// For every test whose nodes all use op types tbp claims (`tbp ops`), imports model.onnx (symbolic input dims bound from the test's input tensors) and checks that
// every graph output has the shape and element type of the reference output_N.pb. Tests listed
// in EXCLUSIONS_FILE (`test_name  reason`) are reported but not run; docs/onnx-support.md
// explains each. Ends with the plain `N passed, N failed` line.
//
// The generator stamps each test with its op's newest schema version. For ops whose newest
// version predates opset 7 (GlobalAveragePool, Selu, ...) that is below tbp's range although the
// op reads the same at opset 7, so such tests are imported with their opset raised to 7.

#include "NodeTestSupport.h"

#include "tbp/frontend/onnx/OnnxImporter.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace {

using tbp::conformance::loadProto;

std::string shapeText(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

/// The ONNX TensorProto element type of a tbp dtype.
int dtypeCode(tbp::ir::DType d) {
  using tbp::ir::DType;
  switch (d) {
  case DType::F32: return onnx::TensorProto::FLOAT;
  case DType::F16: return onnx::TensorProto::FLOAT16;
  case DType::BF16: return onnx::TensorProto::BFLOAT16;
  case DType::F64: return onnx::TensorProto::DOUBLE;
  case DType::I8: return onnx::TensorProto::INT8;
  case DType::I16: return onnx::TensorProto::INT16;
  case DType::I32: return onnx::TensorProto::INT32;
  case DType::I64: return onnx::TensorProto::INT64;
  case DType::U8: return onnx::TensorProto::UINT8;
  case DType::U16: return onnx::TensorProto::UINT16;
  case DType::U32: return onnx::TensorProto::UINT32;
  case DType::U64: return onnx::TensorProto::UINT64;
  case DType::Bool: return onnx::TensorProto::BOOL;
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: tbp_node_conformance NODE_TEST_DIR EXCLUSIONS_FILE\n";
    return 2;
  }
  fs::path root = fs::path(argv[1]) / "node";
  std::map<std::string, std::string> exclusions;
  if (!tbp::conformance::readExclusions(argv[2], exclusions)) {
    std::cerr << argv[2] << ": cannot open the exclusions file\n";
    return 2;
  }
  std::vector<std::string> ops = tbp::frontend::supportedOnnxOps();
  std::set<std::string> claimed(ops.begin(), ops.end());
  std::vector<fs::path> dirs = tbp::conformance::listNodeTests(root);
  if (dirs.empty()) {
    std::cerr << "no node tests under " << root << "\n";
    return 1;
  }

  int passed = 0, failed = 0, excluded = 0, unclaimed = 0;
  std::map<std::string, std::pair<int, int>> perOp; // op -> (passed, failed)
  std::set<std::string> unusedExclusions;
  for (const auto& [name, reason] : exclusions) unusedExclusions.insert(name);
  for (const fs::path& dir : dirs) {
    const std::string name = dir.filename().string();
    onnx::ModelProto model;
    if (!loadProto(dir / "model.onnx", model)) continue;
    int opset = -1;
    for (const auto& o : model.opset_import())
      if (o.domain().empty() || o.domain() == "ai.onnx") opset = static_cast<int>(o.version());
    bool isClaimed = opset >= 1 && opset <= tbp::frontend::kMaxOnnxOpset;
    std::set<std::string> testOps;
    for (const auto& n : model.graph().node()) {
      testOps.insert(n.op_type());
      isClaimed = isClaimed && (n.domain().empty() || n.domain() == "ai.onnx") && claimed.count(n.op_type());
    }
    if (!isClaimed) {
      ++unclaimed;
      continue;
    }
    unusedExclusions.erase(name);
    if (exclusions.count(name)) {
      ++excluded;
      continue;
    }
    tbp::Expected<tbp::ir::Graph> graph = tbp::conformance::importNodeTest(dir, model, opset).graph;
    std::string problem;
    if (!graph) {
      problem = graph.status().message();
    } else {
      const auto& outs = graph->outputs();
      for (size_t k = 0; k < outs.size() && problem.empty(); ++k) {
        onnx::TensorProto ref;
        if (!loadProto(dir / "test_data_set_0" / ("output_" + std::to_string(k) + ".pb"), ref)) {
          problem = "missing reference output " + std::to_string(k);
          break;
        }
        std::vector<int64_t> want(ref.dims().begin(), ref.dims().end());
        const tbp::ir::Value& v = graph->value(outs[k]);
        if (v.type.shape != want)
          problem = "output " + std::to_string(k) + " '" + v.name + "' has shape " + shapeText(v.type.shape) +
                    ", the reference " + shapeText(want);
        // numpy has no bfloat16: the generator stores bfloat16 references as uint16.
        else if (dtypeCode(v.type.dtype) != ref.data_type() &&
                 !(v.type.dtype == tbp::ir::DType::BF16 && ref.data_type() == onnx::TensorProto::UINT16))
          problem = "output " + std::to_string(k) + " '" + v.name + "' has element type " +
                    tbp::ir::dtypeName(v.type.dtype) + ", the reference ONNX type " + std::to_string(ref.data_type());
      }
    }
    for (const std::string& op : testOps) (problem.empty() ? perOp[op].first : perOp[op].second)++;
    if (problem.empty()) {
      ++passed;
    } else {
      ++failed;
      std::cout << "FAIL " << name << ": " << problem << "\n";
    }
  }
  std::cout << "\nper op (tests passed/failed):\n";
  for (const auto& [op, counts] : perOp)
    std::cout << "  " << op << " " << counts.first << "/" << counts.second << "\n";
  for (const std::string& stale : unusedExclusions) std::cout << "note: exclusion '" << stale << "' matches no claimed test\n";
  std::cout << "\n" << unclaimed << " tests use ops or opsets tbp does not claim; " << excluded
            << " excluded (see the exclusions file)\n";
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 && passed > 0 ? 0 : 1;
}
