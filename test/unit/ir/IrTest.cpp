#include "tbp/ir/Loss.h"
#include "tbp/ir/OpRules.h"
#include "tbp/ir/TextFormat.h"
#include "tbp/ir/Verify.h"

#include "../TestGraphs.h"

#include <doctest/doctest.h>

#include <algorithm>

using namespace tbp;
using namespace tbp::ir;

namespace {
using tbp::testing::parseOk;

const char* kMlp = R"(graph mlp {
  input %x : f32[4,8]
  param %w1 : f32[16,8]
  param %b1 : f32[16]
  const %shape : i64[2] = [4, -1]
  %h : f32[4,16] = Gemm(%x, %w1, %b1) {alpha=1.0, transB=1} loc("fc1")
  %r : f32[4,16] = Relu(%h)
  %y : f32[4,16] = Reshape(%r, %shape)
  output %y
}
)";
} // namespace

TEST_CASE("every op in the vocabulary has complete rules") {
  for (size_t i = 0; i < kNumOps; ++i) {
    Op op = static_cast<Op>(i);
    const OpInfo& info = opInfo(op);
    CAPTURE(info.name);
    REQUIRE(info.name != nullptr);
    CHECK(opFromName(info.name) == op); // names are unique and round-trip
    bool usesMultiplier = info.flops == FlopRule::OutElem || info.flops == FlopRule::InElem ||
                          info.flops == FlopRule::Pool || info.flops == FlopRule::MatMul ||
                          info.flops == FlopRule::Gemm || info.flops == FlopRule::Conv ||
                          info.flops == FlopRule::ConvTranspose || info.flops == FlopRule::Einsum;
    if (usesMultiplier) CHECK(info.flopsPerElem > 0);
    else CHECK(info.flopsPerElem == 0);
    // An op that saves an input must be able to take a gradient somewhere.
    if (info.savedInputs || info.savedOutputs || info.extra != ExtraSaved::None)
      CHECK(info.noGradInputs != 0xffffffffu);

    // Apply the rules to a concrete node with two f32[2,3,4,4] inputs and one output.
    Graph g("probe");
    ValueId a = *g.addValue("a", ValueKind::Activation, {DType::F32, {2, 3, 4, 4}});
    ValueId w = *g.addValue("w", ValueKind::Parameter, {DType::F32, {3, 3, 1, 1}});
    ValueId in = *g.addValue("in", ValueKind::Input, {DType::F32, {2, 3, 4, 4}});
    g.addNode("src", Op::Relu, {in}, {a});
    ValueId out = *g.addValue("out", ValueKind::Activation, {DType::F32, {2, 3, 4, 4}});
    Attributes attrs;
    attrs["kernel_shape"] = std::vector<int64_t>{2, 2};
    attrs["equation"] = std::string("bchw,dcij->bdhw");
    NodeId n = g.addNode("probe", op, {a, w}, {out}, attrs);
    uint64_t flops = estimateFlops(g, g.node(n));
    if (info.flops == FlopRule::Zero) CHECK(flops == 0);
    else CHECK(flops > 0);
    SavedForBackward saved = savedForBackward(g, g.node(n));
    if (info.noGradInputs == 0xffffffffu) {
      CHECK(saved.values.empty());
      CHECK(saved.extraBytes == 0);
    }
    if (info.savedOutputs & 1u) CHECK(std::count(saved.values.begin(), saved.values.end(), out) == 1);
    if ((info.savedInputs & 1u) && info.noGradInputs != 0xffffffffu)
      CHECK(std::count(saved.values.begin(), saved.values.end(), a) == 1);
    if (info.extra != ExtraSaved::None) CHECK(saved.extraBytes > 0);
  }
}

TEST_CASE("saved tensors follow autograd") {
  Graph g = parseOk(kMlp);
  const Node& gemm = g.node(0);
  const Node& relu = g.node(1);
  const Node& reshape = g.node(2);
  SavedForBackward s = savedForBackward(g, gemm);
  // x is a graph input: w1's gradient needs it, and nothing needs w1 (addmm keeps mat2 only
  // for mat1's gradient).
  CHECK(s.values == std::vector<ValueId>{*g.findValue("x")});
  CHECK(savedForBackward(g, relu).values == std::vector<ValueId>{*g.findValue("r")});
  CHECK(savedForBackward(g, reshape).values.empty());
  CHECK(estimateFlops(g, gemm) == 2u * 8 * 4 * 16 + 4 * 16);
  CHECK(estimateFlops(g, relu) == 64u);
  CHECK(estimateFlops(g, reshape) == 0u);
  CHECK_FALSE(inputTakesGradient(reshape, 1));
  CHECK(inputTakesGradient(reshape, 0));
}

TEST_CASE("cross-saved operands are kept only for the other operand's gradient") {
  Graph g = parseOk(R"(graph x {
    input %x : f32[4,8]
    param %w : f32[8,8]
    param %b : f32[8]
    const %c : f32[] = [0.5]
    %h : f32[4,8] = MatMul(%x, %w)
    %s : f32[4,8] = Mul(%h, %c)
    %t : f32[4,8] = Mul(%h, %s)
    %d : f32[4,8] = Div(%t, %c)
    %e : f32[4,8] = Div(%c, %t)
    %a : f32[4,8] = Gemm(%x, %w, %b)
    output %e
  })");
  auto saved = [&](size_t node) { return savedForBackward(g, g.node(node)).values; };
  auto id = [&](const char* name) { return *g.findValue(name); };
  // x @ w with a graph input x: w's gradient needs x; x needs no gradient, so w is not kept
  // for it (w is resident anyway, but the rule must say what autograd does).
  CHECK(saved(0) == std::vector<ValueId>{id("x")});
  // h * 0.5 keeps only the constant; h * s keeps both.
  CHECK(saved(1) == std::vector<ValueId>{id("c")});
  CHECK(saved(2) == std::vector<ValueId>{id("h"), id("s")});
  // t / c keeps c; c / t keeps both.
  CHECK(saved(3) == std::vector<ValueId>{id("c")});
  CHECK(saved(4) == std::vector<ValueId>{id("c"), id("t")});
  // Gemm: the bias takes a gradient, but A and B are kept only for each other.
  CHECK(saved(5) == std::vector<ValueId>{id("x")});
  // With an explicit requires-gradient set: nothing requires one, nothing cross-saved is kept.
  std::vector<bool> none(g.numValues(), false);
  CHECK(savedForBackward(g, g.node(2), &none).values.empty());
}

TEST_CASE("backward scratch follows the measured temporaries of each backward formula") {
  Graph g = parseOk(R"(graph s {
    input %x : f32[4,8]
    param %w : f32[8,8]
    const %c : f32[] = [0.5]
    %h : f32[4,8] = MatMul(%x, %w)
    %e : f32[4,8] = Erf(%h)
    %d : f32[4,8] = Div(%e, %c)
    %q : f32[4,8] = Div(%c, %d)
    %r : f32[4,8] = Relu(%q)
    output %r
  })");
  const uint64_t out = 4 * 8 * 4;
  CHECK(backwardScratchBytes(g, g.node(1)) == 4 * out); // 2/sqrt(pi) * exp(-x^2) * g
  CHECK(backwardScratchBytes(g, g.node(2)) == 0);       // a constant divisor: g / c only
  CHECK(backwardScratchBytes(g, g.node(3)) == 3 * out); // the divisor's gradient
  CHECK(backwardScratchBytes(g, g.node(4)) == 0);
  CHECK(backwardScratchBytes(g, g.node(0)) == 0);
}

TEST_CASE("conv and layer norm rules") {
  Graph g = parseOk(R"(graph c {
    input %x : f32[2,3,8,8]
    param %w : f32[4,3,3,3]
    param %s : f32[4]
    %y : f32[2,4,8,8] = Conv(%x, %w) {pads=[1,1,1,1]}
    %z : f32[2,4,8,8] = LayerNormalization(%y, %s) {axis=-1}
    output %z
  })");
  CHECK(estimateFlops(g, g.node(0)) == 2u * (2 * 4 * 8 * 8) * 3 * 9);
  SavedForBackward ln = savedForBackward(g, g.node(1));
  CHECK(ln.extraBytes == 8u * 2 * 4 * 8); // mean and inverse std per row
}

TEST_CASE("text form round-trips byte for byte") {
  Graph g = parseOk(kMlp);
  std::string printed = printGraph(g);
  CHECK(printed == kMlp);
  Graph again = parseOk(printed);
  CHECK(printGraph(again) == printed);
  CHECK(g.value(*g.findValue("shape")).data->size() == 16u);
  CHECK(g.node(0).attrFloat("alpha", 0) == 1.0);
  CHECK(g.node(0).attrInt("transB", 0) == 1);
  CHECK(g.node(0).name == "fc1");
}

TEST_CASE("text form quotes odd names and keeps absent inputs") {
  Graph g = parseOk(R"(graph "odd name" {
    input %"a b" : f32[2]
    %"c,d" : f32[2] = Clip(%"a b", _, _) {note="x\"y"}
    output %"c,d"
  })");
  std::string printed = printGraph(g);
  CHECK(printed.find("%\"a b\"") != std::string::npos);
  CHECK(printed.find("Clip(%\"a b\", _, _)") != std::string::npos);
  CHECK(printGraph(parseOk(printed)) == printed);
}

TEST_CASE("parse errors carry line and column") {
  auto err = [](const std::string& text) { return parseGraph(text, "t.tbp").status().message(); };
  CHECK(err("graph g {\n  input %x : f32[2]\n  %y : f32[2] = Nope(%x)\n}") == "t.tbp:3:17: unknown op 'Nope'");
  CHECK(err("graph g {\n  %y : f32[2] = Relu(%x)\n}") == "t.tbp:2:22: input '%x' is not defined before its use");
  CHECK(err("graph g {\n  input %x : q7[2]\n}").find("t.tbp:2:") == 0);
  CHECK(err("graph g {\n  input %x : f32[2]\n  input %x : f32[2]\n}") ==
        "t.tbp:3:9: value 'x' is defined twice");
  CHECK(err("graph g {\n  const %c : i64[2] = [1]\n}").find("constant has 1 elements") != std::string::npos);
  CHECK(err("graph g {").find("expected '}'") != std::string::npos);
}

TEST_CASE("sizes are checked for overflow and negative dimensions") {
  Graph g;
  Expected<ValueId> huge = g.addValue("huge", ValueKind::Input, {DType::F32, {1ll << 40, 1ll << 40}});
  CHECK(huge.status().code() == ErrorCode::BadInput);
  CHECK(huge.status().message().find("more elements than 64 bits hold") != std::string::npos);
  Expected<ValueId> neg = g.addValue("neg", ValueKind::Input, {DType::F32, {2, -3}});
  CHECK(neg.status().message().find("negative dimension -3") != std::string::npos);
  Expected<ValueId> bytes = g.addValue("b", ValueKind::Input, {DType::F64, {1ll << 31, 1ll << 31}});
  CHECK(bytes.status().message().find("overflows 64 bits") != std::string::npos);
}

TEST_CASE("verify rejects cycles, undefined inputs and empty graphs") {
  Graph empty("e");
  (void)empty.addValue("x", ValueKind::Input, {DType::F32, {1}});
  CHECK(verify(empty, "e.tbp").message() == "e.tbp: the graph has no nodes");

  Graph cyc("c");
  ValueId a = *cyc.addValue("a", ValueKind::Activation, {DType::F32, {1}});
  ValueId b = *cyc.addValue("b", ValueKind::Activation, {DType::F32, {1}});
  cyc.addNode("n1", Op::Relu, {b}, {a});
  cyc.addNode("n2", Op::Relu, {a}, {b});
  cyc.addOutput(b);
  CHECK(verify(cyc, "c.tbp").message() == "c.tbp: the graph has a cycle through node 'n1' (Relu)");

  Graph undef("u");
  ValueId ghost = *undef.addValue("ghost", ValueKind::Activation, {DType::F32, {1}});
  ValueId out = *undef.addValue("out", ValueKind::Activation, {DType::F32, {1}});
  undef.addNode("", Op::Relu, {ghost}, {out});
  undef.addOutput(out);
  CHECK(verify(undef, "u.tbp").message() ==
        "u.tbp: node #0 (Relu): input 0 'ghost' is not defined by any node, input or initializer");

  CHECK(verify(parseOk(kMlp), "m.tbp").isOk());
}

TEST_CASE("verify names operands that do not fit their op") {
  auto problem = [](const char* text) { return verify(parseOk(text), "c.tbp").message(); };
  CHECK(problem(R"(graph c {
    input %x : f32[2,3,8,8]
    param %w : f32[4,3,3,3]
    param %b : f32[5]
    %y : f32[2,4,6,6] = Conv(%x, %w, %b)
    output %y
  })").find("(Conv): bias [5] must hold one value per channel: [4]") != std::string::npos);
  CHECK(problem(R"(graph c {
    input %x : f32[2,4,8]
    param %s : f32[4]
    %y : f32[2,4,8] = LayerNormalization(%x, %s) {axis=-1}
    output %y
  })").find("scale [4] does not broadcast to the normalized shape [8]") != std::string::npos);
  CHECK(problem(R"(graph c {
    input %x : f32[2,4,8]
    param %s : f32[8]
    %y : f32[2,4,8] = LayerNormalization(%x, %s) {axis=-4}
    output %y
  })").find("attribute 'axis' is -4, outside [-3, 2]") != std::string::npos);
  CHECK(verify(parseOk(R"(graph c {
    input %x : f32[2,4,8]
    param %s : f32[4,8]
    %y : f32[2,4,8] = LayerNormalization(%x, %s) {axis=-2}
    output %y
  })"), "c.tbp").isOk());
}

TEST_CASE("losses are appended once") {
  Graph g = parseOk(kMlp);
  CHECK_FALSE(hasLoss(g));
  REQUIRE(appendLoss(g, LossKind::CrossEntropy, "m").isOk());
  CHECK(hasLoss(g));
  const Value& labels = g.value(*g.findValue("loss_labels"));
  CHECK(labels.type == TensorType{DType::I64, {4}});
  CHECK(g.outputs().size() == 1);
  CHECK(g.value(g.outputs()[0]).type.shape.empty());
  CHECK(parseLossKind("mse") == LossKind::Mse);
  CHECK_FALSE(parseLossKind("hinge").has_value());

  Graph m = parseOk(kMlp);
  REQUIRE(appendLoss(m, LossKind::Mse, "m").isOk());
  CHECK(g.node(g.numNodes() - 1).op == Op::CrossEntropyLoss);
  CHECK(m.value(*m.findValue("loss_target")).type == TensorType{DType::F32, {4, 16}});
}

TEST_CASE("integers survive the text form exactly") {
  Graph g = parseOk(R"(graph big {
    input %x : f32[4]
    const %ends : i64[2] = [9223372036854775807, -9223372036854775807]
    %y : f32[4] = Slice(%x, %ends, %ends) {huge=9007199254740993}
    output %y
  })");
  std::string printed = printGraph(g);
  CHECK(printed.find("[9223372036854775807, -9223372036854775807]") != std::string::npos);
  CHECK(printed.find("huge=9007199254740993") != std::string::npos);
  CHECK(g.node(0).attrInt("huge", 0) == 9007199254740993LL);
  CHECK(printGraph(parseOk(printed)) == printed);
}
