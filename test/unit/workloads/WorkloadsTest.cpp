// The built-in workloads: they build, verify, match the PyTorch twins' parameter counts, and
// survive ONNX export and import unchanged.

#include "tbp/frontend/onnx/OnnxExporter.h"
#include "tbp/frontend/onnx/OnnxImporter.h"
#include "tbp/ir/TextFormat.h"
#include "tbp/ir/Verify.h"
#include "tbp/workloads/Workloads.h"

#include <doctest/doctest.h>

#include <map>

using namespace tbp;
using workloads::Profile;

namespace {

uint64_t parameterCount(const ir::Graph& g) {
  uint64_t n = 0;
  for (const ir::Value& v : g.values())
    if (v.kind == ir::ValueKind::Parameter) n += v.bytes / ir::dtypeSize(v.type.dtype);
  return n;
}

} // namespace

TEST_CASE("every workload builds and verifies at small and medium") {
  for (const std::string& name : workloads::workloadNames())
    for (Profile p : {Profile::Small, Profile::Medium}) {
      CAPTURE(name);
      CAPTURE(workloads::profileName(p));
      Expected<ir::Graph> g = workloads::buildWorkload(name, p, /*withData=*/false);
      REQUIRE(g.hasValue());
      CHECK(ir::verify(*g, name).isOk());
      CHECK(g->inputs().size() == 1);
      CHECK(g->outputs().size() == 1);
      CHECK(g->bytesOfKind(ir::ValueKind::Activation) > g->bytesOfKind(ir::ValueKind::Parameter));
      CHECK_FALSE(workloads::describe(name, p).empty());
    }
  CHECK_FALSE(workloads::describe("gpt2", Profile::Large).empty());
}

TEST_CASE("parameter counts agree with bench/pytorch_baseline.py --list") {
  // Printed by the PyTorch twins (bench/pytorch_baseline.py --list), which build the same
  // architectures from docs/benchmarks.md independently of tbp.
  const std::map<std::pair<std::string, Profile>, uint64_t> pytorch = {
      {{"gpt2", Profile::Small}, 940800},          {{"gpt2", Profile::Medium}, 5328896},
      {{"transformer", Profile::Small}, 940544},   {{"transformer", Profile::Medium}, 5328384},
      {{"long_context", Profile::Small}, 398336},  {{"long_context", Profile::Medium}, 1583104},
      {{"resnet", Profile::Small}, 1105716},       {{"resnet", Profile::Medium}, 4389380},
      {{"unet", Profile::Small}, 117715},          {{"unet", Profile::Medium}, 1928483},
      {{"chain", Profile::Small}, 264192},         {{"chain", Profile::Medium}, 1579008},
  };
  for (const auto& [key, count] : pytorch) {
    CAPTURE(key.first);
    Expected<ir::Graph> g = workloads::buildWorkload(key.first, key.second, /*withData=*/false);
    REQUIRE(g.hasValue());
    CHECK(parameterCount(*g) == count);
  }
}

TEST_CASE("a workload survives ONNX export and import unchanged") {
  for (const std::string& name : workloads::workloadNames()) {
    CAPTURE(name);
    Expected<ir::Graph> g = workloads::buildWorkload(name, Profile::Small);
    REQUIRE(g.hasValue());
    // Export the imported graph again (Constant nodes, BatchNorm's extra outputs, attributes
    // read back as floats) and read it back: the same graph, data included.
    Expected<std::string> bytes = frontend::exportOnnx(*g, name);
    REQUIRE(bytes.hasValue());
    Expected<ir::Graph> again = frontend::importOnnxBytes(*bytes, name, frontend::OnnxImportOptions{});
    REQUIRE(again.hasValue());
    CHECK(ir::printGraph(*again) == ir::printGraph(*g));
    for (ir::ValueId v = 0; v < g->numValues(); ++v)
      if (g->value(v).data) {
        const bool has = again->value(v).data != nullptr;
        REQUIRE(has);
        CHECK(*again->value(v).data == *g->value(v).data);
      }
    // Parameters keep their kind: the float constants (attention scale, masks) are not taken for
    // trainable weights on the way back.
    CHECK(parameterCount(*again) == parameterCount(*g));
  }
}

TEST_CASE("exports are deterministic") {
  Expected<std::string> a = workloads::exportWorkload("unet", Profile::Small), b = workloads::exportWorkload("unet", Profile::Small);
  REQUIRE(a.hasValue());
  REQUIRE(b.hasValue());
  CHECK(*a == *b);
}

TEST_CASE("gpt2 small has the documented shapes") {
  Expected<ir::Graph> g = workloads::buildWorkload("gpt2", Profile::Small, false);
  REQUIRE(g.hasValue());
  CHECK(g->value(g->outputs()[0]).type.shape == ir::Shape{8, 128, 512});
  CHECK(g->value(g->inputs()[0]).type.dtype == ir::DType::I64);
}

TEST_CASE("unknown workloads and unexportable graphs are errors") {
  Expected<ir::Graph> g = workloads::buildWorkload("resnet9000", Profile::Small);
  REQUIRE_FALSE(g.hasValue());
  CHECK(g.status().code() == ErrorCode::Usage);
  CHECK(g.status().message().find("gpt2") != std::string::npos);
  CHECK_FALSE(workloads::parseProfile("huge"));

  Expected<ir::Graph> chain = workloads::buildWorkload("chain", Profile::Small, false);
  REQUIRE(chain.hasValue());
  Expected<std::string> noData = frontend::exportOnnx(*chain, "chain");
  REQUIRE_FALSE(noData.hasValue());
  CHECK(noData.status().message().find("has no data") != std::string::npos);
}
