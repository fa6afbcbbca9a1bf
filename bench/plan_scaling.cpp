// Plan time and peak RSS of the planning pipeline on synthetic graphs (issue figures; not a
// test). One graph per process so peak RSS belongs to that graph:
//
//   tbp_bench_plan KIND NODES [PLANNER]     KIND: chain | transformer | random
//
// Prints one JSON line: build, order, stage model and planner times, and peak RSS.

#include "tbp/analysis/Memory.h"
#include "tbp/analysis/Order.h"
#include "tbp/ir/Loss.h"
#include "tbp/ir/Verify.h"
#include "tbp/plan/Planners.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>

using namespace tbp;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Builder {
  ir::Graph g{"synthetic"};
  size_t next = 0;
  ir::ValueId act(int64_t width) {
    return *g.addValue("v" + std::to_string(next++), ir::ValueKind::Activation, {ir::DType::F32, {32, width}});
  }
  ir::ValueId param(int64_t rows, int64_t cols) {
    return *g.addValue("p" + std::to_string(next++), ir::ValueKind::Parameter, {ir::DType::F32, {rows, cols}});
  }
  ir::ValueId op(ir::Op op, std::vector<ir::ValueId> ins, int64_t width) {
    ir::ValueId out = act(width);
    g.addNode("", op, std::move(ins), {out});
    return out;
  }
};

ir::Graph build(const std::string& kind, size_t nodes) {
  Builder b;
  const int64_t w = 256;
  ir::ValueId x = *b.g.addValue("x", ir::ValueKind::Input, {ir::DType::F32, {32, w}});
  ir::ValueId h = x;
  std::mt19937 rng(42);
  if (kind == "chain") {
    ir::ValueId scale = b.param(32, w);
    h = b.op(ir::Op::Mul, {h, scale}, w);
    while (b.g.numNodes() < nodes) h = b.op(b.g.numNodes() % 2 ? ir::Op::Tanh : ir::Op::Relu, {h}, w);
  } else if (kind == "transformer") {
    // Pre-norm blocks: LayerNorm, MatMul (qkv), MatMul (scores), Softmax, MatMul, MatMul (proj),
    // residual Add, LayerNorm, MatMul (up), Relu, MatMul (down), residual Add: 12 ops a block.
    while (b.g.numNodes() + 12 <= nodes || b.g.numNodes() == 0) {
      ir::ValueId ln1 = b.op(ir::Op::LayerNormalization, {h, b.param(1, w)}, w);
      ir::ValueId qkv = b.op(ir::Op::MatMul, {ln1, b.param(w, w)}, w);
      ir::ValueId scores = b.op(ir::Op::MatMul, {qkv, b.param(w, 32)}, 32);
      ir::ValueId probs = b.op(ir::Op::Softmax, {scores}, 32);
      ir::ValueId ctx = b.op(ir::Op::MatMul, {probs, b.param(32, w)}, w);
      ir::ValueId proj = b.op(ir::Op::MatMul, {ctx, b.param(w, w)}, w);
      ir::ValueId r1 = b.op(ir::Op::Add, {h, proj}, w);
      ir::ValueId ln2 = b.op(ir::Op::LayerNormalization, {r1, b.param(1, w)}, w);
      ir::ValueId up = b.op(ir::Op::MatMul, {ln2, b.param(w, 4 * w)}, 4 * w);
      ir::ValueId act = b.op(ir::Op::Relu, {up}, 4 * w);
      ir::ValueId down = b.op(ir::Op::MatMul, {act, b.param(4 * w, w)}, w);
      h = b.op(ir::Op::Add, {r1, down}, w);
    }
  } else {
    std::vector<ir::ValueId> acts{b.op(ir::Op::Mul, {x, b.param(32, w)}, w)};
    while (b.g.numNodes() < nodes) {
      auto pick = [&] {
        size_t back = rng() % 16 == 0 ? rng() % std::min<size_t>(acts.size(), 4096) : rng() % std::min<size_t>(4, acts.size());
        return acts[acts.size() - 1 - back];
      };
      ir::ValueId out = rng() % 2 ? b.op(ir::Op::Add, {pick(), pick()}, w) : b.op(ir::Op::Tanh, {pick()}, w);
      acts.push_back(out);
    }
    h = acts.back();
  }
  b.g.addOutput(h);
  TBP_CHECK(ir::appendLoss(b.g, ir::LossKind::Mean, "synthetic").isOk());
  return std::move(b.g);
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tbp_bench_plan chain|transformer|random NODES [PLANNER]\n");
    return 2;
  }
  std::string kind = argv[1];
  size_t nodes = std::stoul(argv[2]);
  plan::PlannerKind planner = argc > 3 ? *plan::parsePlanner(argv[3]) : plan::PlannerKind::Optimal;

  auto t0 = Clock::now();
  ir::Graph g = build(kind, nodes);
  TBP_CHECK(ir::verify(g, "synthetic").isOk());
  double buildS = since(t0);

  // The same pipeline as `tbp plan`: every order heuristic, the best store-all peak wins.
  auto t1 = Clock::now();
  std::vector<ir::NodeId> best;
  uint64_t bestPeak = UINT64_MAX;
  for (analysis::OrderHeuristic h : analysis::kAllOrders) {
    std::vector<ir::NodeId> order = analysis::computeOrder(g, h);
    uint64_t peak = analysis::analyzeMemory(g, order).storeAllPeakBytes;
    if (peak < bestPeak) {
      bestPeak = peak;
      best = std::move(order);
    }
  }
  double orderS = since(t1);
  auto t2 = Clock::now();
  plan::StageModel model = plan::buildStageModel(g, best, plan::chooseCuts(g, best, 64));
  double stagesS = since(t2);
  auto t3 = Clock::now();
  uint64_t storeAll = plan::simulate(model, plan::storeAllStream(model.size()))->peakBytes;
  uint64_t budget = model.residentBytes + (storeAll - model.residentBytes) / 2;
  Expected<plan::Plan> p = plan::planForBudget(model, planner, budget);
  double planS = since(t3);

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("{\"graph\": \"%s\", \"nodes\": %zu, \"stages\": %zu, \"planner\": \"%s\", \"build_s\": %.3f, \"orders_s\": %.3f, "
              "\"stage_model_s\": %.3f, \"plan_s\": %.3f, \"total_plan_s\": %.3f, \"peak_rss_bytes\": %ld, \"feasible\": %s, "
              "\"recompute_ratio\": %.3f}\n",
              kind.c_str(), g.numNodes(), model.size(), plan::plannerName(planner), buildS, orderS, stagesS, planS,
              orderS + stagesS + planS, usage.ru_maxrss * 1024L, p ? "true" : "false", p ? p->chosen.sim.recomputeRatio : 0.0);
  return 0;
}
