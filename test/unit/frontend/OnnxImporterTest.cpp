#include "tbp/analysis/Memory.h"
#include "tbp/analysis/Order.h"
#include "../TestGraphs.h"
#include "tbp/frontend/onnx/OnnxExporter.h"
#include "tbp/frontend/onnx/OnnxImporter.h"
#include "tbp/ir/TextFormat.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <tuple>

#include <string>

using namespace tbp;
using namespace tbp::frontend;

namespace {

std::string fixture(const std::string& rel) { return std::string(TBP_SOURCE_DIR) + "/test/fixtures/" + rel; }

Expected<ir::Graph> import(const std::string& rel, std::map<std::string, int64_t> dims = {},
                           std::vector<std::string> freeze = {}) {
  OnnxImportOptions options;
  options.dims = std::move(dims);
  options.freeze = std::move(freeze);
  return importOnnxFile(fixture(rel), options);
}

std::string errorOf(const std::string& rel, std::map<std::string, int64_t> dims = {}) {
  Expected<ir::Graph> g = import(rel, std::move(dims));
  REQUIRE_FALSE(g.hasValue());
  CHECK(g.status().code() == ErrorCode::BadInput);
  std::string message = g.status().message();
  // Every message names the file first.
  CHECK(message.rfind(fixture(rel) + ": ", 0) == 0);
  return message.substr(fixture(rel).size() + 2);
}

size_t countKind(const ir::Graph& g, ir::ValueKind kind) {
  size_t n = 0;
  for (const ir::Value& v : g.values()) n += v.kind == kind;
  return n;
}

} // namespace

TEST_CASE("the MLP imports with bound batch and concrete shapes") {
  Expected<ir::Graph> g = import("onnx/mlp.onnx", {{"batch", 8}});
  REQUIRE_MESSAGE(g.hasValue(), g.status().message());
  std::vector<ir::ValueId> inputs = g->inputs();
  REQUIRE(inputs.size() == 1);
  CHECK(g->value(inputs[0]).type.shape.front() == 8);
  for (const ir::Value& v : g->values()) {
    CAPTURE(v.name);
    CHECK(v.bytes == *ir::checkedByteSize(v.type, v.name));
  }
  CHECK(countKind(*g, ir::ValueKind::Parameter) == 8); // 4 Gemm layers: weight + bias
  for (const ir::Value& v : g->values())
    if (v.kind == ir::ValueKind::Parameter) CHECK(static_cast<bool>(v.data));
}

TEST_CASE("a symbolic dimension left unbound names the input and the fix") {
  Expected<ir::Graph> g = import("onnx/mlp.onnx");
  REQUIRE_FALSE(g.hasValue());
  CHECK(g.status().message().find("is the symbolic 'batch', which is unbound: pass --dim batch=N") != std::string::npos);
  Expected<ir::Graph> wrong = import("onnx/mlp.onnx", {{"batch", 2}, {"seq", 4}});
  REQUIRE_FALSE(wrong.hasValue());
  CHECK(wrong.status().code() == ErrorCode::Usage);
  CHECK(wrong.status().message().find("no symbolic dimension 'seq' (they have: batch)") != std::string::npos);
}

TEST_CASE("freezing turns parameters into constants") {
  Expected<ir::Graph> base = import("onnx/mlp.onnx", {{"batch", 2}});
  REQUIRE(base.hasValue());
  std::string someParam;
  for (const ir::Value& v : base->values())
    if (v.kind == ir::ValueKind::Parameter) { someParam = v.name; break; }
  Expected<ir::Graph> frozen = import("onnx/mlp.onnx", {{"batch", 2}}, {someParam});
  REQUIRE(frozen.hasValue());
  CHECK(frozen->value(*frozen->findValue(someParam)).kind == ir::ValueKind::Constant);
  Expected<ir::Graph> bad = import("onnx/mlp.onnx", {{"batch", 2}}, {"nope"});
  CHECK(bad.status().code() == ErrorCode::Usage);
}

TEST_CASE("training-mode exports: BatchNorm statistics are constants, shape subgraphs fold") {
  for (const char* name : {"onnx/gpt2_tiny_op17_train.onnx", "onnx/bert_tiny_op17_train.onnx",
                           "onnx/unet_tiny_op17_train.onnx", "onnx/gpt2_tiny_op17_eval.onnx",
                           "onnx/bert_tiny_op17_eval.onnx", "onnx/unet_tiny_op17_eval.onnx"}) {
    CAPTURE(name);
    std::map<std::string, int64_t> dims{{"batch", 2}};
    if (std::string(name).find("unet") == std::string::npos) dims["seq"] = 16;
    Expected<ir::Graph> g = import(name, dims);
    REQUIRE_MESSAGE(g.hasValue(), g.status().message());
    CHECK(countKind(*g, ir::ValueKind::Parameter) > 0);
    // Folding removes every Shape node: all shapes are concrete once dims are bound.
    for (const ir::Node& n : g->nodes()) CHECK(n.op != ir::Op::Shape);
    for (const ir::Value& v : g->values())
      if (v.kind == ir::ValueKind::Parameter) CHECK(ir::isFloat(v.type.dtype));
  }
}

TEST_CASE("external data loads from inside the model's folder only") {
  Expected<ir::Graph> g = import("bad/external_data/model.onnx");
  REQUIRE_MESSAGE(g.hasValue(), g.status().message());
  bool found = false;
  for (const ir::Value& v : g->values())
    if (v.kind == ir::ValueKind::Parameter) {
      found = true;
      REQUIRE(static_cast<bool>(v.data));
      CHECK(v.data->size() == v.bytes);
    }
  CHECK(found);
  CHECK(errorOf("bad/external_escape/model.onnx").find("points outside the model's folder") != std::string::npos);
}

TEST_CASE("bad models fail with a message naming file and place") {
  CHECK(errorOf("bad/not_protobuf.onnx").rfind("not an ONNX protobuf", 0) == 0);
  CHECK(errorOf("bad/truncated.onnx").rfind("truncated: field 7 at byte offset", 0) == 0);
  CHECK(errorOf("bad/empty_graph.onnx") == "the graph has no nodes");
  CHECK(errorOf("bad/cycle.onnx").rfind("the graph has a cycle through node", 0) == 0);
  CHECK(errorOf("bad/undefined_input.onnx") ==
        "node 'add' (Add): input 1 'ghost' is not defined by any node, graph input or initializer");
  CHECK(errorOf("bad/negative_dim.onnx") == "graph input 'X' dimension 0 has negative size -3");
  CHECK(errorOf("bad/overflow.onnx").find("more elements than 64 bits hold") != std::string::npos);
  CHECK(errorOf("bad/opset_out_of_range.onnx").rfind("ai.onnx opset 6 is out of range", 0) == 0);
  CHECK(errorOf("bad/opset_too_new.onnx").rfind("ai.onnx opset 99 is out of range", 0) == 0);
  std::string unsupported = errorOf("bad/unsupported_ops.onnx");
  CHECK(unsupported.rfind("3 nodes use 2 op types that tbp does not support:", 0) == 0);
  CHECK(unsupported.find("com.example.FooOp x2") != std::string::npos);
  CHECK(unsupported.find("com.example.BarOp x1") != std::string::npos);
  Expected<ir::Graph> missing = import("bad/does_not_exist.onnx");
  CHECK(missing.status().message() == fixture("bad/does_not_exist.onnx") + ": no such file");
}

TEST_CASE("the supported op list is sorted and includes Constant") {
  std::vector<std::string> ops = supportedOnnxOps();
  CHECK(std::is_sorted(ops.begin(), ops.end()));
  CHECK(std::count(ops.begin(), ops.end(), "Constant") == 1);
  CHECK(std::count(ops.begin(), ops.end(), "Conv") == 1);
}

TEST_CASE("expanded GELUs fuse into Gelu, near misses stay as written") {
  auto opsOf = [](const ir::Graph& g) {
    std::map<std::string, int> count;
    for (const ir::Node& n : g.nodes()) ++count[ir::opName(n.op)];
    return count;
  };
  Expected<ir::Graph> fused = import("onnx/gelu_patterns.onnx");
  REQUIRE_MESSAGE(fused.hasValue(), fused.status().message());
  std::vector<std::tuple<std::string, std::string, std::string, std::string>> gelus; // name, in, out, approximate
  for (const ir::Node& n : fused->nodes())
    if (n.op == ir::Op::Gelu)
      gelus.emplace_back(n.name, fused->value(n.inputs.at(0)).name, fused->value(n.outputs.at(0)).name,
                         n.attrString("approximate"));
  using G = std::tuple<std::string, std::string, std::string, std::string>;
  CHECK(gelus == std::vector<G>{G{"/g1/Gelu", "h0", "g1", "none"}, G{"/g2/Gelu", "g1", "g2", "tanh"},
                                G{"/g3/Gelu", "g2", "g3", "tanh"}, G{"/g4/Gelu", "g3", "g4", "none"},
                                G{"/g5/Gelu", "g4", "g5", "none"}});
  // n1 multiplies by 0.6, n3 reads its 1 + erf again, n4's [1,1,1] constant broadcasts x to
  // rank 3, and n2's erf is a graph output: each keeps its five nodes.
  std::map<std::string, int> ops = opsOf(*fused);
  CHECK(ops == std::map<std::string, int>{{"MatMul", 1}, {"Gelu", 5}, {"Div", 4}, {"Erf", 4}, {"Add", 5}, {"Mul", 8}});
  // The pattern's Constant nodes go with it; the near misses keep theirs.
  CHECK_FALSE(fused->findValue("/g1/sqrt2").has_value());
  CHECK_FALSE(fused->findValue("/g3/three").has_value());
  CHECK_FALSE(fused->findValue("/g5/two").has_value());
  CHECK(fused->findValue("/n1/sqrt2").has_value());
  CHECK(fused->findValue("/n4/sqrt2").has_value());
  CHECK_FALSE(fused->findValue("/g2/tanh").has_value());

  OnnxImportOptions asWritten;
  asWritten.fuse = false;
  Expected<ir::Graph> plain = importOnnxFile(fixture("onnx/gelu_patterns.onnx"), asWritten);
  REQUIRE_MESSAGE(plain.hasValue(), plain.status().message());
  ops = opsOf(*plain);
  CHECK(ops.count("Gelu") == 0);
  CHECK(ops["Erf"] == 7);
  CHECK(ops["Tanh"] == 2);
  CHECK(ops["Pow"] == 1);

  // One Gelu keeps one tensor for the backward where the erf expansion keeps three (the
  // input, x/√2 for Erf, 1 + erf for the product) and the tanh one more.
  auto tape = [](const ir::Graph& g) {
    return analysis::analyzeMemory(g, analysis::computeOrder(g, analysis::OrderHeuristic::File)).tapeBytes;
  };
  const uint64_t tensor = 4 * 8 * 4;
  CHECK(tape(*fused) < tape(*plain));
  CHECK(tape(*plain) - tape(*fused) >= 8 * tensor);
}

TEST_CASE("x * sigmoid(x) fuses into Silu either way round; a shared sigmoid or another factor does not") {
  // Written as tbp text IR, exported to ONNX (Sigmoid and Mul as torch.onnx writes nn.SiLU)
  // and imported again.
  ir::Graph g = tbp::testing::parseOk(R"(graph silus {
    input %x : f32[4,8]
    input %z : f32[4,8]
    %s1 : f32[4,8] = Sigmoid(%x)
    %a : f32[4,8] = Mul(%x, %s1)
    %s2 : f32[4,8] = Sigmoid(%a)
    %b : f32[4,8] = Mul(%s2, %a)
    %s3 : f32[4,8] = Sigmoid(%b)
    %c : f32[4,8] = Mul(%b, %s3)
    %d : f32[4,8] = Add(%c, %s3)
    %s4 : f32[4,8] = Sigmoid(%d)
    %e : f32[4,8] = Mul(%z, %s4)
    output %e
  })");
  Expected<std::string> bytes = exportOnnx(g, "silus");
  REQUIRE_MESSAGE(bytes.hasValue(), bytes.status().message());
  auto importAs = [&](bool fuse) {
    OnnxImportOptions options;
    options.fuse = fuse;
    Expected<ir::Graph> back = importOnnxBytes(*bytes, "silus", options);
    REQUIRE_MESSAGE(back.hasValue(), back.status().message());
    return std::move(*back);
  };
  const ir::Graph fused = importAs(true), plain = importAs(false);
  std::vector<std::pair<std::string, std::string>> silus; // input, output
  std::map<std::string, int> ops;
  for (const ir::Node& n : fused.nodes()) {
    ++ops[ir::opName(n.op)];
    if (n.op == ir::Op::Silu) silus.emplace_back(fused.value(n.inputs.at(0)).name, fused.value(n.outputs.at(0)).name);
  }
  // s3 is also read by the Add, and s4 multiplies z: those pairs stay as written.
  CHECK(silus == std::vector<std::pair<std::string, std::string>>{{"x", "a"}, {"a", "b"}});
  CHECK(ops == std::map<std::string, int>{{"Silu", 2}, {"Sigmoid", 2}, {"Mul", 2}, {"Add", 1}});
  CHECK_FALSE(fused.findValue("s1").has_value());
  CHECK(plain.numNodes() == g.numNodes());
  // A Silu exports as the pair again and comes back the same.
  Expected<std::string> again = exportOnnx(fused, "silus");
  REQUIRE_MESSAGE(again.hasValue(), again.status().message());
  Expected<ir::Graph> twice = importOnnxBytes(*again, "silus", OnnxImportOptions{});
  REQUIRE_MESSAGE(twice.hasValue(), twice.status().message());
  CHECK(ir::printGraph(*twice) == ir::printGraph(fused));
  // Silu keeps x for its backward where the pair keeps x and sigmoid(x).
  ir::Graph loss = tbp::testing::parseOk(R"(graph one {
    input %x : f32[64,64]
    param %w : f32[64,64]
    %h : f32[64,64] = MatMul(%x, %w)
    %s : f32[64,64] = Sigmoid(%h)
    %y : f32[64,64] = Mul(%h, %s)
    %l : f32[] = SumLoss(%y)
    output %l
  })");
  ir::Graph fusedLoss = tbp::testing::parseOk(R"(graph one {
    input %x : f32[64,64]
    param %w : f32[64,64]
    %h : f32[64,64] = MatMul(%x, %w)
    %y : f32[64,64] = Silu(%h)
    %l : f32[] = SumLoss(%y)
    output %l
  })");
  auto tape = [](const ir::Graph& graph) {
    return analysis::analyzeMemory(graph, analysis::computeOrder(graph, analysis::OrderHeuristic::File)).tapeBytes;
  };
  CHECK(tape(loss) - tape(fusedLoss) == 64 * 64 * 4);
}

TEST_CASE("torch.onnx's GroupNorm chain fuses into GroupNorm; a scaled InstanceNorm does not") {
  // Two chains as torch.onnx writes nn.GroupNorm before opset 18 (the second reshapes back by
  // Shape(x)), and a near miss whose InstanceNormalization has a scale of its own.
  ir::Graph g = tbp::testing::parseOk(R"(graph groups {
    input %x : f32[2,8,4,4]
    const %ones : f32[2] = [1, 1]
    const %zeros : f32[2] = [0, 0]
    const %twos : f32[2] = [2, 2]
    const %grouped : i64[3] = [2, 2, -1]
    const %back : i64[4] = [2, 8, 4, 4]
    const %gm : f32[8,1,1] = [1, 2, 3, 4, 5, 6, 7, 8]
    const %bt : f32[8,1,1] = [0, 1, 0, 1, 0, 1, 0, 1]
    %r1 : f32[2,2,64] = Reshape(%x, %grouped)
    %i1 : f32[2,2,64] = InstanceNormalization(%r1, %ones, %zeros) {epsilon=1e-3}
    %b1 : f32[2,8,4,4] = Reshape(%i1, %back)
    %m1 : f32[2,8,4,4] = Mul(%b1, %gm)
    %y1 : f32[2,8,4,4] = Add(%m1, %bt)
    %r2 : f32[2,2,64] = Reshape(%y1, %grouped)
    %i2 : f32[2,2,64] = InstanceNormalization(%r2, %ones, %zeros)
    %sh : i64[4] = Shape(%y1)
    %b2 : f32[2,8,4,4] = Reshape(%i2, %sh)
    %m2 : f32[2,8,4,4] = Mul(%gm, %b2)
    %y2 : f32[2,8,4,4] = Add(%bt, %m2)
    %r3 : f32[2,2,64] = Reshape(%y2, %grouped)
    %i3 : f32[2,2,64] = InstanceNormalization(%r3, %twos, %zeros)
    %b3 : f32[2,8,4,4] = Reshape(%i3, %back)
    %m3 : f32[2,8,4,4] = Mul(%b3, %gm)
    %y3 : f32[2,8,4,4] = Add(%m3, %bt)
    input %z : f32[2,4,4,4]
    const %zg : i64[3] = [2, 2, -1]
    const %zb : i64[4] = [2, 4, 4, 4]
    const %w4 : f32[4] = [1, 2, 3, 4]
    %r4 : f32[2,2,32] = Reshape(%z, %zg)
    %i4 : f32[2,2,32] = InstanceNormalization(%r4, %ones, %zeros)
    %b4 : f32[2,4,4,4] = Reshape(%i4, %zb)
    %m4 : f32[2,4,4,4] = Mul(%b4, %w4)
    %y4 : f32[2,4,4,4] = Add(%m4, %w4)
    output %y3
    output %y4
  })");
  Expected<std::string> bytes = exportOnnx(g, "groups");
  REQUIRE_MESSAGE(bytes.hasValue(), bytes.status().message());
  Expected<ir::Graph> fused = importOnnxBytes(*bytes, "groups", OnnxImportOptions{});
  REQUIRE_MESSAGE(fused.hasValue(), fused.status().message());
  std::map<std::string, int> ops;
  std::vector<std::tuple<std::string, std::string, int64_t, double>> norms; // in, out, groups, epsilon
  for (const ir::Node& n : fused->nodes()) {
    ++ops[ir::opName(n.op)];
    if (n.op == ir::Op::GroupNorm)
      norms.emplace_back(fused->value(n.inputs.at(0)).name, fused->value(n.outputs.at(0)).name, n.attrInt("num_groups", 0),
                         n.attrFloat("epsilon", 0));
  }
  REQUIRE(norms.size() == 2);
  CHECK(std::get<0>(norms[0]) == "x");
  CHECK(std::get<1>(norms[0]) == "y1");
  CHECK(std::get<2>(norms[0]) == 2);
  CHECK(std::get<3>(norms[0]) == doctest::Approx(1e-3));
  CHECK(std::get<0>(norms[1]) == "y1");
  CHECK(std::get<1>(norms[1]) == "y2");
  CHECK(std::get<3>(norms[1]) == doctest::Approx(1e-5));
  // The near misses keep their five nodes: y3's InstanceNormalization scales by 2, and y4's
  // [4] factors broadcast along the last axis, not the channels. The fused chains' Shape goes
  // with them.
  CHECK(ops == std::map<std::string, int>{{"GroupNorm", 2}, {"Reshape", 4}, {"InstanceNormalization", 2}, {"Mul", 2}, {"Add", 2}});
  OnnxImportOptions asWritten;
  asWritten.fuse = false;
  Expected<ir::Graph> plain = importOnnxBytes(*bytes, "groups", asWritten);
  REQUIRE_MESSAGE(plain.hasValue(), plain.status().message());
  std::map<std::string, int> plainOps;
  for (const ir::Node& n : plain->nodes()) ++plainOps[ir::opName(n.op)];
  CHECK(plainOps["InstanceNormalization"] == 4);
  CHECK(plainOps.count("GroupNorm") == 0);
}

TEST_CASE("Dropouts that pass their input through are elided, the others stay") {
  for (bool fuse : {true, false}) {
    CAPTURE(fuse);
    OnnxImportOptions options;
    options.fuse = fuse;
    Expected<ir::Graph> g = importOnnxFile(fixture("onnx/inert_dropouts.onnx"), options);
    REQUIRE_MESSAGE(g.hasValue(), g.status().message());
    std::vector<std::string> dropouts;
    for (const ir::Node& n : g->nodes()) {
      CHECK(n.op != ir::Op::Identity);
      if (n.op == ir::Op::Dropout) dropouts.push_back(n.name);
    }
    // drop4's mask is read, drop5 trains at 0.5 and drop6's training_mode is an input.
    CHECK(dropouts == std::vector<std::string>{"drop4", "drop5", "drop6"});
    for (const char* gone : {"d1", "d2", "d3", "d3_mask"}) CHECK_FALSE(g->findValue(gone).has_value());
    // drop4 reads h0 directly.
    const ir::Node& drop4 = g->node(g->value(*g->findValue("d4")).producer);
    CHECK(g->value(drop4.inputs.at(0)).name == "h0");
  }
}
