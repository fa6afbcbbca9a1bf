#include "tbp/analysis/Dot.h"
#include "tbp/analysis/Memory.h"
#include "tbp/analysis/Order.h"
#include "tbp/analysis/Report.h"
#include "tbp/ir/Loss.h"
#include "tbp/ir/TextFormat.h"
#include "tbp/ir/Verify.h"

#include "../TestGraphs.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>

using namespace tbp;
using namespace tbp::analysis;
using namespace tbp::ir;

namespace {

using tbp::testing::parseOk;

/// x -> Relu -> ... (n times) -> SumLoss, all f32[k] (4k bytes each), one parameter scale.
Graph chain(int n, int k = 256) {
  std::string t = "graph chain {\n  input %x : f32[" + std::to_string(k) + "]\n  param %w : f32[" + std::to_string(k) + "]\n";
  t += "  %a0 : f32[" + std::to_string(k) + "] = Mul(%x, %w)\n";
  for (int i = 1; i <= n; ++i)
    t += "  %a" + std::to_string(i) + " : f32[" + std::to_string(k) + "] = Relu(%a" + std::to_string(i - 1) + ")\n";
  t += "  %loss : f32[] = SumLoss(%a" + std::to_string(n) + ")\n  output %loss\n}\n";
  return parseOk(t);
}

bool isTopological(const Graph& g, const std::vector<NodeId>& order) {
  if (order.size() != g.numNodes()) return false;
  std::vector<int64_t> pos(g.numNodes(), -1);
  for (size_t i = 0; i < order.size(); ++i) pos[order[i]] = static_cast<int64_t>(i);
  for (NodeId id = 0; id < g.numNodes(); ++id) {
    if (pos[id] < 0) return false;
    for (ValueId in : g.node(id).inputs)
      if (in != kNone && g.value(in).producer != kNone && pos[g.value(in).producer] >= pos[id]) return false;
  }
  return true;
}

/// A seeded random DAG: each node adds or multiplies one or two earlier activations.
Graph randomDag(unsigned seed, int nodes) {
  std::mt19937 rng(seed);
  Graph g("dag" + std::to_string(seed));
  ValueId x = *g.addValue("x", ValueKind::Input, {DType::F32, {64}});
  ValueId w = *g.addValue("w", ValueKind::Parameter, {DType::F32, {64}});
  std::vector<ValueId> acts;
  ValueId first = *g.addValue("v0", ValueKind::Activation, {DType::F32, {64}});
  g.addNode("n0", Op::Mul, {x, w}, {first});
  acts.push_back(first);
  for (int i = 1; i < nodes; ++i) {
    int64_t width = 16 * (1 + static_cast<int64_t>(rng() % 8));
    ValueId out = *g.addValue("v" + std::to_string(i), ValueKind::Activation, {DType::F32, {64}});
    (void)width;
    ValueId a = acts[rng() % acts.size()];
    if (rng() % 2) g.addNode("n" + std::to_string(i), Op::Relu, {a}, {out});
    else g.addNode("n" + std::to_string(i), Op::Add, {a, acts[rng() % acts.size()]}, {out});
    acts.push_back(out);
  }
  g.addOutput(acts.back());
  REQUIRE(appendLoss(g, LossKind::Sum, "dag").isOk());
  return g;
}

} // namespace

TEST_CASE("every heuristic yields a topological order, on random DAGs too") {
  for (unsigned seed = 1; seed <= 50; ++seed) {
    Graph g = randomDag(seed, 40);
    REQUIRE(verify(g, "dag").isOk());
    for (OrderHeuristic h : kAllOrders) {
      CAPTURE(seed);
      CAPTURE(orderName(h));
      CHECK(isTopological(g, computeOrder(g, h)));
    }
  }
  CHECK(parseOrder("greedy") == OrderHeuristic::Greedy);
  CHECK_FALSE(parseOrder("random").has_value());
}

TEST_CASE("a chain's frontier is one activation wide") {
  Graph g = chain(10);
  FrontierProfile p = frontierProfile(g, computeOrder(g, OrderHeuristic::File));
  REQUIRE(p.bytes.size() == g.numNodes());
  // After the first node: x (still... no: x's only use is node 0) -> only a0 live.
  for (size_t i = 0; i + 1 < p.bytes.size(); ++i) CHECK(p.bytes[i] == 1024u);
  CHECK(p.bytes.back() == 4u); // the scalar loss output
  CHECK(p.peakBytes == 1024u);
}

TEST_CASE("store-all peak and bounds on a chain are exact") {
  const int n = 10;
  Graph g = chain(n);
  MemoryAnalysis m = analyzeMemory(g, computeOrder(g, OrderHeuristic::File));
  // Resident: x (1 KiB) + w and its gradient (2 KiB); the gradient appears in the backward
  // of w's only user, the first op, so it is not there at the backward's peak.
  CHECK(m.residentBytes == 3072u);
  CHECK(m.baseResidentBytes == 2048u);
  CHECK(m.gradientBytes == 1024u);
  CHECK(m.parameterBytes == 1024u);
  // Activations a0..an (n+1 of 1 KiB) plus the 4-byte loss.
  CHECK(m.activationBytes == (n + 1) * 1024u + 4u);
  // Relu saves its output: a1..an are taped; a0 is saved by no one (Mul saves x and w).
  CHECK(m.tapeBytes == n * 1024u);
  // Forward peak at the loss: the n taped outputs plus the scalar loss. Backward peak at the
  // last Relu: all n tapes plus the adjoints of its output and its input -> n + 2 KiB.
  CHECK(m.storeAllPeakBytes == m.baseResidentBytes + (n + 2) * 1024u);
  CHECK(m.storeAllPeakInBackward);
  CHECK(m.storeAllPeakPosition == static_cast<size_t>(n));
  // A single op needs its input and output (2 KiB) forward, or tape + 2 adjoints backward.
  CHECK(m.maxOpWorkingSetBytes == 3072u);
  CHECK(m.lowerBoundBytes >= m.residentBytes + 2048u);
  CHECK(m.lowerBoundBytes <= m.storeAllPeakBytes);
  CHECK(m.values[*g.findValue("a3")].requiresGrad);
  CHECK_FALSE(m.values[*g.findValue("x")].requiresGrad);
}

TEST_CASE("lower bound never exceeds the store-all peak") {
  for (unsigned seed = 1; seed <= 100; ++seed) {
    Graph g = randomDag(seed, 60);
    for (OrderHeuristic h : kAllOrders) {
      MemoryAnalysis m = analyzeMemory(g, computeOrder(g, h));
      CAPTURE(seed);
      CHECK(m.lowerBoundBytes <= m.storeAllPeakBytes);
      CHECK(m.residentBytes <= m.lowerBoundBytes);
      CHECK(m.frontier.peakBytes <= m.activationBytes + g.bytesOfKind(ValueKind::Input));
    }
  }
}

TEST_CASE("greedy beats file order on a graph written badly") {
  // Two independent branches written interleaved keep both live in file order; greedy and
  // dfs finish one branch before starting the other.
  std::string t = "graph wide {\n  input %x : f32[4]\n  param %w : f32[1024]\n";
  t += "  %a0 : f32[1024] = Add(%x, %w)\n  %b0 : f32[1024] = Add(%x, %w)\n";
  for (int i = 1; i <= 6; ++i) {
    t += "  %a" + std::to_string(i) + " : f32[1024] = Relu(%a" + std::to_string(i - 1) + ")\n";
    t += "  %b" + std::to_string(i) + " : f32[1024] = Relu(%b" + std::to_string(i - 1) + ")\n";
  }
  t += "  %s : f32[1024] = Add(%a6, %b6)\n  %loss : f32[] = SumLoss(%s)\n  output %loss\n}\n";
  Graph g = parseOk(t);
  FrontierProfile file = frontierProfile(g, computeOrder(g, OrderHeuristic::File));
  FrontierProfile dfs = frontierProfile(g, computeOrder(g, OrderHeuristic::Dfs));
  CHECK(dfs.meanBytes < file.meanBytes);
}

TEST_CASE("the report names skips, fan-out and a verdict") {
  // U-Net-like: the first activation is used at the very end.
  std::string t = "graph skip {\n  input %x : f32[256]\n  param %w : f32[256]\n  %a0 : f32[256] = Mul(%x, %w)\n";
  for (int i = 1; i <= 30; ++i) t += "  %a" + std::to_string(i) + " : f32[256] = Relu(%a" + std::to_string(i - 1) + ")\n";
  t += "  %s : f32[256] = Add(%a30, %a0)\n  %loss : f32[] = MeanLoss(%s)\n  output %loss\n}\n";
  Graph g = parseOk(t);
  AnalysisReport r = analyzeGraph(g, {});
  CHECK(r.nodes == 33u);
  CHECK(r.skipLength.max == 31u);
  CHECK(r.skipLength.maxValue == "a0");
  CHECK(r.skipLength.countAbove == 1u);
  CHECK(r.fanOut.max == 2u);
  CHECK(r.orders.size() == 3u);
  CHECK(r.opCounts.front() == std::pair<std::string, size_t>{"Relu", 30});
  CHECK(r.largestTensors.size() == 10u);
  CHECK_FALSE(r.compressibility.verdict.empty());
  CHECK(r.compressibility.potential >= 1.0);
  bool mentionsSkip = false;
  for (const auto& reason : r.compressibility.reasons) mentionsSkip = mentionsSkip || reason.find("long skip") != std::string::npos;
  CHECK(mentionsSkip);

  AnalyzeOptions dfs;
  dfs.order = OrderHeuristic::Dfs;
  CHECK(analyzeGraph(g, dfs).chosen == OrderHeuristic::Dfs);
}

TEST_CASE("a long chain is highly compressible, a single op is not") {
  AnalysisReport deep = analyzeGraph(chain(200, 4096), {});
  CHECK(deep.compressibility.verdict == "highly compressible");
  Graph tiny = parseOk("graph t {\n input %x : f32[4]\n param %w : f32[4]\n %y : f32[4] = Mul(%x, %w)\n %loss : f32[] = SumLoss(%y)\n output %loss\n}\n");
  AnalysisReport shallow = analyzeGraph(tiny, {});
  CHECK(shallow.compressibility.verdict == "not compressible");
}

TEST_CASE("dot output labels and shades nodes") {
  Graph g = chain(3);
  std::string dot = renderDot(g);
  CHECK(dot.rfind("digraph \"chain\" {", 0) == 0);
  CHECK(dot.find("Relu\\nf32[256] (1.00 KiB)") != std::string::npos);
  CHECK(dot.find("fillcolor=\"#ff") != std::string::npos);
  CHECK(dot.find("n0 -> n1") != std::string::npos);
}

TEST_CASE("gradients handed through Add and reshapes share one buffer") {
  Graph g = tbp::testing::parseOk(R"(graph residual {
    input %x : f32[8,16]
    param %w : f32[16,16]
    const %shape : i64[2] = [16, 8]
    %a : f32[8,16] = MatMul(%x, %w)
    %b : f32[8,16] = Tanh(%a)
    %c : f32[8,16] = Add(%a, %b)
    %d : f32[8,16] = Sub(%c, %a)
    %r : f32[16,8] = Reshape(%d, %shape)
    %t : f32[8,16] = Transpose(%r)
    %s : f32[16,8] = Reshape(%t, %shape)
    %u : f32[16,8] = Tanh(%s)
    %loss : f32[] = SumLoss(%u)
    output %loss
  })");
  MemoryAnalysis m = analyzeMemory(g, computeOrder(g, OrderHeuristic::File));
  auto group = [&](const char* name) { return m.gradGroup[*g.findValue(name)]; };
  // A reshape of a dense gradient is a view of it.
  CHECK(group("t") == group("s"));
  // Transpose's backward makes its own (strided) gradient, and the reshape below it must copy
  // that one.
  CHECK(group("r") != group("t"));
  CHECK(group("d") != group("r"));
  // Sub hands its output's gradient to its first input; the second gets a negated copy.
  CHECK(group("c") == group("d"));
  // Add hands it to both inputs. a's first gradient comes from Sub's negation, so a stays
  // apart; b joins.
  CHECK(group("b") == group("c"));
  CHECK(group("a") != group("c"));
  CHECK(m.gradGroup[*g.findValue("x")] == ir::kNone); // no gradient at all
}
