#include "tbp/driver/Driver.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace tbp;

namespace {

struct Result {
  int code;
  std::string out, err;
};

Result tbpRun(std::vector<std::string> args) {
  args.insert(args.begin(), "tbp");
  std::ostringstream out, err;
  int code = driver::run(args, out, err);
  return {code, out.str(), err.str()};
}

std::string fixture(const std::string& rel) { return std::string(TBP_SOURCE_DIR) + "/test/fixtures/" + rel; }

} // namespace

TEST_CASE("analyze --format json carries the documented keys") {
  Result r = tbpRun({"analyze", fixture("onnx/mlp.onnx"), "--dim", "batch=4", "--format", "json"});
  REQUIRE_MESSAGE(r.code == 0, r.err);
  nlohmann::json j = nlohmann::json::parse(r.out);
  for (const char* key : {"nodes", "parameter_bytes", "activation_bytes", "store_all_peak_bytes", "lower_bound_bytes", "frontier"})
    CHECK_MESSAGE(j.contains(key), key);
  CHECK(j["frontier"].contains("peak_bytes"));
  CHECK(j["frontier"].contains("mean_bytes"));
  CHECK(j["frontier"]["profile"].size() == j["nodes"].get<size_t>());
  CHECK(j["lower_bound_bytes"].get<uint64_t>() <= j["store_all_peak_bytes"].get<uint64_t>());
  // Deterministic: the same run gives the same bytes.
  CHECK(tbpRun({"analyze", fixture("onnx/mlp.onnx"), "--dim", "batch=4", "--format", "json"}).out == r.out);
}

TEST_CASE("analyze --dot writes a file atomically") {
  namespace fs = std::filesystem;
  fs::path dot = fs::temp_directory_path() / "tbp_driver_test.dot";
  fs::remove(dot);
  Result r = tbpRun({"analyze", fixture("onnx/mlp.onnx"), "--dim", "batch=4", "--dot", dot.string(), "-q"});
  REQUIRE_MESSAGE(r.code == 0, r.err);
  std::ifstream in(dot);
  std::string first;
  std::getline(in, first);
  CHECK(first.rfind("digraph", 0) == 0);
  fs::remove(dot);
}

TEST_CASE("usage errors exit 2 with a hint") {
  Result typo = tbpRun({"analyse", "x.onnx"});
  CHECK(typo.code == 2);
  CHECK(typo.err.find("did you mean 'analyze'?") != std::string::npos);
  Result missingArg = tbpRun({"analyze"});
  CHECK(missingArg.code == 2);
  Result badDim = tbpRun({"analyze", fixture("onnx/mlp.onnx"), "--dim", "batch"});
  CHECK(badDim.code == 2);
  CHECK(badDim.err.find("expected NAME=VALUE") != std::string::npos);
  Result badFormat = tbpRun({"analyze", fixture("onnx/mlp.onnx"), "--format", "yaml"});
  CHECK(badFormat.code == 2);
  CHECK(tbpRun({}).code == 2);
  CHECK(tbpRun({"--help"}).code == 0);
  Result version = tbpRun({"--version"});
  CHECK(version.code == 0);
  CHECK(version.out.rfind("tbp ", 0) == 0);
}

TEST_CASE("bad input exits 3 and writes no output file") {
  namespace fs = std::filesystem;
  fs::path dot = fs::temp_directory_path() / "tbp_driver_bad.dot";
  fs::remove(dot);
  Result r = tbpRun({"analyze", fixture("bad/cycle.onnx"), "--dot", dot.string()});
  CHECK(r.code == 3);
  CHECK(r.err.rfind("tbp: error: " + fixture("bad/cycle.onnx") + ": ", 0) == 0);
  CHECK_FALSE(fs::exists(dot));
  CHECK(tbpRun({"analyze", fixture("bad/model.xyz")}).code == 3);
}

TEST_CASE("dump prints text IR that analyze reads back with the same numbers") {
  namespace fs = std::filesystem;
  Result dump = tbpRun({"dump", fixture("onnx/mlp.onnx"), "--dim", "batch=4"});
  REQUIRE_MESSAGE(dump.code == 0, dump.err);
  CHECK(dump.out.rfind("graph ", 0) == 0);
  fs::path text = fs::temp_directory_path() / "tbp_driver_mlp.tbp";
  { std::ofstream(text) << dump.out; }
  Result fromText = tbpRun({"analyze", text.string(), "--format", "json"});
  Result fromOnnx = tbpRun({"analyze", fixture("onnx/mlp.onnx"), "--dim", "batch=4", "--format", "json"});
  REQUIRE_MESSAGE(fromText.code == 0, fromText.err);
  nlohmann::json a = nlohmann::json::parse(fromText.out), b = nlohmann::json::parse(fromOnnx.out);
  for (const char* key : {"nodes", "parameter_bytes", "activation_bytes", "store_all_peak_bytes", "lower_bound_bytes", "frontier"})
    CHECK_MESSAGE(a[key] == b[key], key);
  fs::remove(text);
}
