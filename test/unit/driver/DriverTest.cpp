#include "tbp/driver/Driver.h"

#include "Commands.h" // lib/driver: the helpers the commands share
#include "tbp/plan/Planners.h"
#include "tbp/workloads/Workloads.h"

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

TEST_CASE("the stage counts tried: the given one, or the automatic ones up to the op count") {
  using V = std::vector<size_t>;
  CHECK(driver::stageCountsToTry(40, 500, true) == V{40});
  CHECK(driver::stageCountsToTry(0, 500, true) == V{64, 96, 128});
  CHECK(driver::stageCountsToTry(0, 80, true) == V{64, 96});  // 96 stages of 80 ops: every op one
  CHECK(driver::stageCountsToTry(0, 64, true) == V{64});
  CHECK(driver::stageCountsToTry(0, 500, false) == V{64}); // store-all does not search
}

TEST_CASE("the optimal planner keeps the cheapest of the stage counts it tries") {
  // The built-in resnet (96 ops without its loss): 64 and 96 stages.
  Expected<ir::Graph> g = workloads::buildWorkload("resnet", workloads::Profile::Small, false);
  REQUIRE(g.hasValue());
  const plan::EstimatePrices prices = plan::devicePrices(true, true);
  auto at = [&](size_t count) { return std::make_shared<const driver::PreparedStages>(driver::prepare(*g, "file", count, {}, prices)); };
  const std::vector<size_t> counts = driver::stageCountsToTry(0, g->numNodes(), true);
  REQUIRE(counts.size() == 2);
  const uint64_t storeAll = at(64)->storeAllPeak;
  struct One {
    size_t stages;
    uint64_t cost, instructions, peak, minFeasible;
  };
  auto each = [&](std::optional<uint64_t> budget, bool tightest) {
    std::vector<One> out;
    for (size_t count : counts) {
      plan::PlanOptions options;
      if (budget) options.budgetBytes = *budget;
      driver::GranularPlan one = driver::planAcrossStageCounts({count}, at, plan::PlannerKind::Optimal, options, budget, tightest);
      REQUIRE(one.plan.hasValue());
      out.push_back({one.stages->model.size(), one.plan->chosen.sim.forwardCost, one.plan->chosen.stream.size(), one.plan->chosen.sim.peakBytes,
                     one.minFeasible});
    }
    return out;
  };
  SUBCASE("under a budget: the lowest recompute cost plus the instruction overhead") {
    const uint64_t budget = storeAll / 2;
    plan::PlanOptions options;
    options.budgetBytes = budget;
    driver::GranularPlan chosen = driver::planAcrossStageCounts(counts, at, plan::PlannerKind::Optimal, options, budget, false);
    REQUIRE(chosen.plan.hasValue());
    CHECK(chosen.stagesTried == std::vector<size_t>{64, 96});
    CHECK(chosen.plan->chosen.sim.peakBytes <= budget);
    const std::vector<One> all = each(budget, false);
    auto score = [](uint64_t cost, uint64_t instructions) {
      return static_cast<long double>(cost) + static_cast<long double>(driver::kInstructionOverheadCost) * static_cast<long double>(instructions);
    };
    const long double mine = score(chosen.plan->chosen.sim.forwardCost, chosen.plan->chosen.stream.size());
    bool matchesOne = false;
    for (const One& o : all) {
      CHECK(mine <= score(o.cost, o.instructions));
      matchesOne |= o.stages == chosen.stages->model.size() && o.cost == chosen.plan->chosen.sim.forwardCost;
    }
    CHECK(matchesOne);
    // The counts do differ here, or the test would not tell a choice from the first count.
    CHECK(all[0].cost != all[1].cost);
  }
  SUBCASE("--budget min: the smallest peak") {
    driver::GranularPlan chosen = driver::planAcrossStageCounts(counts, at, plan::PlannerKind::Optimal, {}, std::nullopt, true);
    REQUIRE(chosen.plan.hasValue());
    for (const One& o : each(std::nullopt, true)) CHECK(chosen.minFeasible <= o.minFeasible);
    CHECK(chosen.plan->chosen.sim.peakBytes == chosen.minFeasible);
  }
  SUBCASE("nothing fits: the error of the count with the smallest feasible peak") {
    const uint64_t budget = at(64)->model.residentBytes + 1;
    plan::PlanOptions options;
    options.budgetBytes = budget;
    driver::GranularPlan chosen = driver::planAcrossStageCounts(counts, at, plan::PlannerKind::Optimal, options, budget, false);
    REQUIRE_FALSE(chosen.plan.hasValue());
    CHECK(chosen.plan.status().code() == ErrorCode::Infeasible);
    uint64_t smallest = UINT64_MAX;
    for (size_t count : counts) {
      plan::PlanOptions o = options;
      smallest = std::min(smallest, driver::planAcrossStageCounts({count}, at, plan::PlannerKind::Optimal, o, budget, false).minFeasible);
    }
    CHECK(chosen.minFeasible == smallest);
    CHECK(chosen.plan.status().message().find(std::to_string(smallest) + " bytes") != std::string::npos);
  }
}
