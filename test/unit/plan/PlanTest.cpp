#include "../TestGraphs.h"

#include "tbp/analysis/Memory.h"
#include "tbp/analysis/Order.h"
#include "tbp/ir/OpRules.h"
#include "tbp/plan/Planners.h"
#include "tbp/plan/Simulator.h"
#include "tbp/plan/StageModel.h"
#include "tbp/workloads/Workloads.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <queue>

using namespace tbp;
using namespace tbp::plan;
using tbp::testing::randomDag;
using tbp::testing::reluChain;
using tbp::testing::uniformBlockChain;
using tbp::testing::contractionChain;
using tbp::testing::replayAllStream;

namespace {

std::vector<uint32_t> everyPosition(size_t n, size_t step = 1) {
  std::vector<uint32_t> cuts;
  for (size_t p = step; p < n; p += step) cuts.push_back(static_cast<uint32_t>(p));
  return cuts;
}

StageModel fineModel(const ir::Graph& g, analysis::OrderHeuristic h = analysis::OrderHeuristic::File) {
  std::vector<ir::NodeId> order = analysis::computeOrder(g, h);
  return buildStageModel(g, order, everyPosition(order.size()));
}

size_t forwardSteps(const Stream& s) {
  size_t n = 0;
  for (const Instruction& i : s) n += i.kind == InstrKind::ForwardCheckpoint || i.kind == InstrKind::ForwardNone;
  return n;
}

/// Exhaustive search: the cheapest valid stream whose every instruction fits `budget`
/// (Dijkstra over simulator states; the state fully determines memory). Forwards may cache
/// (stages with contractions), and `F_all k` right before `B k` elides.
std::optional<uint64_t> bruteForce(const StageModel& m, uint64_t budget) {
  const size_t L = m.size();
  REQUIRE(L <= 6);
  auto key = [&](const SimState& s) {
    uint64_t k = s.current() | (s.nextBackward() << 4) | (uint64_t{s.lossDone()} << 8);
    for (size_t i = 1; i <= L; ++i)
      k |= (uint64_t{s.hasCheckpoint(i)} << (9 + i)) | (uint64_t{s.hasTape(i)} << (20 + i)) | (uint64_t{s.hasCache(i)} << (31 + i));
    return k;
  };
  using Entry = std::pair<uint64_t, size_t>; // cost, state index
  std::vector<SimState> states{SimState(m)};
  std::map<uint64_t, uint64_t> best{{key(states[0]), 0}};
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> queue;
  queue.push({0, 0});
  while (!queue.empty()) {
    auto [cost, index] = queue.top();
    queue.pop();
    SimState state = states[index];
    if (best[key(state)] < cost) continue;
    if (state.finished()) return cost;
    std::vector<Instruction> moves{loss(), bwd(static_cast<uint32_t>(std::max<size_t>(state.nextBackward(), 1)))};
    for (uint32_t k = 1; k <= L; ++k) {
      moves.insert(moves.end(), {fck(k), fn(k), fall(k)});
      if (m.stage(k).cacheable.empty()) continue;
      for (Instruction f : {fck(k), fn(k), fall(k)}) { // the same, keeping the contractions' outputs
        f.cache = true;
        moves.push_back(f);
      }
    }
    auto visit = [&](const SimState& next, uint64_t c) {
      uint64_t k = key(next);
      auto it = best.find(k);
      if (it != best.end() && it->second <= c) return;
      best[k] = c;
      states.push_back(next);
      queue.push({c, states.size() - 1});
    };
    for (const Instruction& move : moves) {
      SimState next = state;
      uint64_t during = 0;
      if (!next.apply(move, during).isOk() || during > budget) continue;
      // A forward while the stage's cache is held replays only the cheap ops.
      const uint64_t price = !move.isForward() ? 0 : state.hasCache(move.stage) ? m.stage(move.stage).replayCost : m.stage(move.stage).cost;
      visit(next, cost + price);
    }
    // `F_all k` right before `B k`: one move, whose forward elides the stage's contractions
    // that feed only later stages (elidesForward). The two instructions apart are moves
    // above too, but a stream that has them adjacent always elides.
    if (state.lossDone() && state.nextBackward() >= 1 && !state.hasCache(state.nextBackward())) {
      const uint32_t k = static_cast<uint32_t>(state.nextBackward());
      const Stage& s = m.stage(k);
      SimState next = state;
      uint64_t forwardPeak = 0, backwardPeak = 0;
      if (!s.elidable.empty() && next.apply(fall(k), forwardPeak, true).isOk() && next.apply(bwd(k), backwardPeak).isOk() &&
          std::max(forwardPeak, backwardPeak) <= budget)
        visit(next, cost + s.cost - s.elidableCost);
    }
  }
  return std::nullopt;
}

/// For every budget from the resident bytes to store-all's peak, in 4-byte steps: the dynamic
/// program alone finds a plan exactly when exhaustive search finds a stream, at the same cost.
/// `also` sees each budget and its plan.
void checkDpAgainstExhaustiveSearch(const StageModel& m, const std::function<void(uint64_t, const Plan&)>& also = {}) {
  PlanOptions dpOnly;
  dpOnly.portfolio = false;
  dpOnly.slotBytes = 4;
  std::vector<Candidate> dp = candidates(m, PlannerKind::Optimal, dpOnly);
  uint64_t storeAll = simulate(m, storeAllStream(m.size()))->peakBytes;
  for (uint64_t budget = m.residentBytes; budget <= storeAll; budget += 4) {
    std::optional<uint64_t> exhaustive = bruteForce(m, budget);
    Expected<Plan> plan = chooseCandidate(dp, PlannerKind::Optimal, budget);
    CAPTURE(budget);
    REQUIRE(exhaustive.has_value() == plan.hasValue());
    if (!plan) continue;
    CHECK(plan->chosen.sim.forwardCost == *exhaustive);
    if (also) also(budget, *plan);
  }
}

} // namespace

TEST_CASE("store-all simulation agrees with the analysis estimate") {
  for (unsigned seed = 1; seed <= 60; ++seed) {
    ir::Graph g = randomDag(seed, 30);
    for (analysis::OrderHeuristic h : analysis::kAllOrders) {
      std::vector<ir::NodeId> order = analysis::computeOrder(g, h);
      analysis::MemoryAnalysis mem = analysis::analyzeMemory(g, order);
      StageModel m = buildStageModel(g, order, everyPosition(order.size()));
      Expected<SimResult> sim = simulate(m, storeAllStream(m.size()));
      REQUIRE_MESSAGE(sim.hasValue(), sim.status().message());
      CAPTURE(seed);
      CHECK(sim->peakBytes == mem.storeAllPeakBytes);
      CHECK(sim->recomputeRatio == doctest::Approx(1.0));
    }
  }
}

TEST_CASE("parameter gradients appear in the backward of their stage and stay") {
  ir::Graph g = uniformBlockChain(2); // two blocks of four 256-byte ops, one weight each
  std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
  StageModel m = buildStageModel(g, order, everyPosition(order.size() - 1, 4));
  REQUIRE(m.size() == 2);
  CHECK(m.gradientBytes == 512u);
  CHECK(m.stage(1).gradientBytes == 256u);
  CHECK(m.stage(2).gradientBytes == 256u);
  SimState state(m);
  uint64_t during = 0;
  for (const Instruction& i : {fall(1), fall(2), loss()}) REQUIRE(state.apply(i, during));
  // Before the backward no gradient exists: resident + both tapes (h0 is in both, counted
  // once) + the loss's adjoint.
  const uint64_t tapes = m.stage(1).tapeBytes + m.stage(2).tapeBytes - 256;
  CHECK(state.heldBytes() == m.residentBytes + tapes + 4);
  REQUIRE(state.apply(bwd(2), during));
  // w1's gradient, stage 1's tape and the adjoint of h0 (256 bytes).
  CHECK(state.heldBytes() == m.residentBytes + 256 + m.stage(1).tapeBytes + 256);
  REQUIRE(state.apply(bwd(1), during));
  CHECK(state.finished());
  CHECK(state.heldBytes() == m.residentBytes + m.gradientBytes); // x takes no adjoint
}

TEST_CASE("the simulator names the first bad instruction") {
  ir::Graph g = reluChain(3);
  StageModel m = fineModel(g); // stages: Mul, Relu, Relu, Relu, SumLoss
  REQUIRE(m.size() == 5);
  auto error = [&](Stream s) { return simulate(m, s).status().message(); };
  CHECK(error({fall(1), fall(2), bwd(2)}) == "instruction 3 (B 2): B 2 comes before Loss");
  CHECK(error({fn(2)}) == "instruction 1 (F_n 2): input 'a0' of stage 2 is not held: no checkpoint, tape or current state has it");
  CHECK(error({fall(1), fall(2), fall(3), fall(4), loss()}) ==
        "instruction 5 (Loss): Loss needs the tape of the last stage 5 (run F_all 5 first)");
  Stream ok = storeAllStream(5);
  CHECK(simulate(m, ok).hasValue());
  Stream early(ok.begin(), ok.end() - 1);
  CHECK(error(early) == "the stream ends before stage 1 is backwarded");
  Stream outOfOrder = ok;
  std::swap(outOfOrder[6], outOfOrder[7]);
  CHECK(error(outOfOrder).find("stages are backwarded from the last to the first; stage 5 is next") != std::string::npos);
  CHECK(error({fall(9)}) == "instruction 1 (F_all 9): stage 9 does not exist (the schedule has 5 stages)");
  CHECK(error({fall(1), fall(1)}).find("the tape of stage 1 is already held") != std::string::npos);
  CHECK(parseInstruction("F_ck 12")->stage == 12u);
  CHECK_FALSE(parseInstruction("F_x 1").hasValue());
  CHECK_FALSE(parseInstruction("B 0").hasValue());
  CHECK(formatInstruction(fck(3)) == "F_ck 3");
}

TEST_CASE("revolve reproduces Griewank's t(l, s)") {
  CHECK(revolveForwardSteps(100, 5) == 316u);
  CHECK(revolveForwardSteps(1000, 10) == 3636u);
  CHECK(forwardSteps(revolveStream(100, 5)) == 316u);
  CHECK(forwardSteps(revolveStream(1000, 10)) == 3636u);
  for (size_t l = 1; l <= 40; ++l)
    for (size_t s = 1; s <= 6; ++s) {
      CAPTURE(l);
      CAPTURE(s);
      CHECK(forwardSteps(revolveStream(l, s)) == revolveForwardSteps(l, s));
    }
  // The streams are valid and hold at most s checkpoints.
  ir::Graph g = reluChain(18);
  StageModel m = fineModel(g);
  for (size_t s = 1; s <= 6; ++s) {
    Expected<SimResult> sim = simulate(m, revolveStream(m.size(), s));
    REQUIRE_MESSAGE(sim.hasValue(), sim.status().message());
    CHECK(sim->checkpointsMax <= s);
  }
}

TEST_CASE("every planner's stream validates and fits; optimal is never worse; peaks shrink with budgets") {
  for (unsigned seed = 1; seed <= 200; ++seed) {
    ir::Graph g = seed % 3 == 0 ? reluChain(4 + static_cast<int>(seed % 17)) : randomDag(seed, 12 + static_cast<int>(seed % 20));
    StageModel m = fineModel(g, seed % 2 ? analysis::OrderHeuristic::Greedy : analysis::OrderHeuristic::File);
    uint64_t storeAll = simulate(m, storeAllStream(m.size()))->peakBytes;
    std::map<PlannerKind, std::vector<Candidate>> all;
    for (PlannerKind k : kAllPlanners) all[k] = candidates(m, k);
    std::map<PlannerKind, uint64_t> previousPeak;
    for (int percent = 100; percent >= 20; percent -= 5) {
      uint64_t budget = m.residentBytes + (storeAll - m.residentBytes) * static_cast<uint64_t>(percent) / 100;
      std::optional<uint64_t> optimalCost;
      std::map<PlannerKind, std::optional<uint64_t>> costs;
      for (PlannerKind k : kAllPlanners) {
        CAPTURE(seed);
        CAPTURE(percent);
        CAPTURE(plannerName(k));
        Expected<Plan> plan = chooseCandidate(all[k], k, budget);
        if (!plan) {
          CHECK(plan.status().code() == ErrorCode::Infeasible);
          CHECK(plan.status().message().find("smallest feasible budget") != std::string::npos);
          continue;
        }
        CHECK(plan->chosen.sim.peakBytes <= budget);
        Expected<SimResult> again = simulate(m, plan->chosen.stream);
        REQUIRE(again.hasValue());
        CHECK(again->peakBytes == plan->chosen.sim.peakBytes);
        if (previousPeak.count(k)) CHECK(plan->chosen.sim.peakBytes <= previousPeak[k]);
        previousPeak[k] = plan->chosen.sim.peakBytes;
        costs[k] = plan->chosen.sim.forwardCost;
      }
      for (auto& [k, c] : costs) {
        if (!c) continue;
        CAPTURE(plannerName(k));
        REQUIRE(costs[PlannerKind::Optimal].has_value());
        CHECK(*costs[PlannerKind::Optimal] <= *c);
      }
    }
  }
}

// Revolve counts s snapshots plus a working state that every restore copies into, and its
// memory is the same at every moment. In tbp's stage model a backward can run straight from a
// checkpoint, and memory only has to fit at each instruction, so at Revolve's own peak the
// dynamic program can need fewer forward steps than Griewank's t(l, s) (docs/theory.md) but
// never more.
TEST_CASE("on uniform chains the dynamic program alone follows Revolve's t(l, s)") {
  for (int stages : {6, 10, 16}) {
    ir::Graph g = uniformBlockChain(stages);
    std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
    // Four ops per block; the loss rides in the last stage.
    std::vector<uint32_t> cuts = everyPosition(order.size() - 1, 4);
    StageModel m = buildStageModel(g, order, cuts);
    REQUIRE(m.size() == static_cast<size_t>(stages));
    PlanOptions dpOnly;
    dpOnly.portfolio = false;
    dpOnly.slotBytes = 4;
    std::vector<Candidate> dp = candidates(m, PlannerKind::Optimal, dpOnly);
    for (size_t s = 1; s <= 4; ++s) {
      Expected<SimResult> rev = simulate(m, revolveStream(m.size(), s));
      REQUIRE(rev.hasValue());
      Expected<Plan> plan = chooseCandidate(dp, PlannerKind::Optimal, rev->peakBytes);
      REQUIRE_MESSAGE(plan.hasValue(), plan.status().message());
      CAPTURE(stages);
      CAPTURE(s);
      CHECK(forwardSteps(plan->chosen.stream) <= revolveForwardSteps(m.size(), s));
    }
  }
}

TEST_CASE("on small chains the dynamic program equals exhaustive search") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    // Chains of 2..5 ops with random widths: Relu saves its output, Mul its inputs.
    int n = 2 + static_cast<int>(rng() % 4);
    std::string t = "graph c {\n  input %x : f32[8]\n  param %w : f32[8]\n  %a0 : f32[8] = Mul(%x, %w)\n";
    for (int i = 1; i < n; ++i) {
      const char* op = rng() % 2 ? "Relu" : "Tanh";
      t += "  %a" + std::to_string(i) + " : f32[8] = " + op + "(%a" + std::to_string(i - 1) + ")\n";
    }
    t += "  %loss : f32[] = SumLoss(%a" + std::to_string(n - 1) + ")\n  output %loss\n}\n";
    ir::Graph g = tbp::testing::parseOk(t);
    CAPTURE(trial);
    checkDpAgainstExhaustiveSearch(fineModel(g));
  }
}

TEST_CASE("with contractions on small chains the dynamic program equals exhaustive search, elided forwards included") {
  std::mt19937 rng(11);
  size_t elidingPlans = 0;
  for (int trial = 0; trial < 60; ++trial) {
    // Chains of 3..6 ops on f32[1,8], two ops a stage: MatMul by a square weight keeps its
    // input (its output is elidable when a later stage reads it), Mul by a weight its input
    // too, Relu and Tanh their output. A stage [Mul, MatMul] keeps two maps when its tape is
    // stored and one when it is checkpointed, and then replays the Mul alone.
    int n = 3 + static_cast<int>(rng() % 4);
    std::string t = "graph c {\n  input %x : f32[1,8]\n  param %w : f32[8,8]\n  param %s : f32[1,8]\n"
                    "  %a0 : f32[1,8] = Mul(%x, %s)\n";
    for (int i = 1; i < n; ++i) {
      const std::string prev = "%a" + std::to_string(i - 1);
      const char* ops[] = {"MatMul(", "Mul(", "Relu(", "Tanh("};
      const unsigned pick = rng() % 4;
      t += "  %a" + std::to_string(i) + " : f32[1,8] = " + ops[pick] + prev + (pick == 0 ? ", %w)" : pick == 1 ? ", %s)" : ")") + "\n";
    }
    t += "  %loss : f32[] = SumLoss(%a" + std::to_string(n - 1) + ")\n  output %loss\n}\n";
    ir::Graph g = tbp::testing::parseOk(t);
    CAPTURE(trial);
    CAPTURE(t);
    std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
    const StageModel m = buildStageModel(g, order, everyPosition(order.size(), 2));
    checkDpAgainstExhaustiveSearch(m, [&](uint64_t, const Plan& plan) {
      for (size_t i = 0; i + 1 < plan.chosen.stream.size(); ++i) elidingPlans += elidesForward(m, plan.chosen.stream, i, false);
    });
  }
  CHECK(elidingPlans > 0); // the pair move matters for some budgets
}

TEST_CASE("a forward right before its stage's backward elides the contractions that only feed later stages") {
  // Stage 1: Conv (read by stage 2 only) and Gemm on a second branch (read inside stage 1 by
  // Tanh): only the Conv is elidable. Stage 2 reads the Conv; stage 3 is the loss.
  ir::Graph g = tbp::testing::parseOk(R"(graph e {
  input %x : f32[4,3,8,8]
  param %w : f32[6,3,3,3]
  input %v : f32[4,16]
  param %u : f32[16,16]
  %y : f32[4,6,8,8] = Conv(%x, %w) {pads=[1,1,1,1]}
  %h : f32[4,16] = Gemm(%v, %u)
  %t : f32[4,16] = Tanh(%h)
  %r : f32[4,6,8,8] = Relu(%y)
  %s1 : f32[] = SumLoss(%r)
  %s2 : f32[] = SumLoss(%t)
  %loss : f32[] = Add(%s1, %s2)
  output %loss
}
)");
  std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
  REQUIRE(g.node(order[0]).op == ir::Op::Conv);
  StageModel m = buildStageModel(g, order, {3, 4});
  REQUIRE(m.size() == 3);
  const Stage& s1 = m.stage(1);
  REQUIRE(s1.elidable.size() == 1);
  CHECK(s1.elidable[0] == 0);
  CHECK(s1.elidableFlops == ir::estimateFlops(g, g.node(order[0])));
  CHECK(s1.elidableFlops < s1.forwardFlops);
  // Without the Conv's output (and its kernel scratch) the forward makes less, never more.
  const uint64_t convOut = m.valueBytes[g.node(order[0]).outputs[0]];
  CHECK(s1.forwardAllElidedTransientBytes + convOut <= s1.forwardAllTransientBytes);
  CHECK(m.stage(2).elidable.empty()); // Relu
  CHECK(m.stage(3).elidable.empty());

  // Checkpoint every stage; then F_all 2, B 2, F_all 1, B 1: only F_all 1 elides (stage 2 has
  // nothing to elide), and only there does the forward cost less.
  const Stream stream{fck(1), fck(2), fall(3), loss(), bwd(3), fall(2), bwd(2), fall(1), bwd(1)};
  CHECK_FALSE(elidesForward(m, stream, 5, false));
  CHECK(elidesForward(m, stream, 7, false));
  CHECK_FALSE(elidesForward(m, stream, 7, true)); // its cache held: the kept outputs serve
  CHECK_FALSE(elidesForward(m, stream, 8, false));
  Expected<SimResult> sim = simulate(m, stream);
  REQUIRE_MESSAGE(sim.hasValue(), sim.status().message());
  CHECK(sim->forwardFlops == 2 * m.onePassFlops - m.stage(3).forwardFlops - s1.elidableFlops);
  // The same forward not followed by its backward runs everything: a cache forward in between.
  Stream apart = stream;
  apart[7].cache = true;
  Expected<SimResult> full = simulate(m, apart);
  REQUIRE_MESSAGE(full.hasValue(), full.status().message());
  CHECK(full->forwardFlops == sim->forwardFlops + s1.elidableFlops);
  CHECK(full->timeline[7] > sim->timeline[7]);
}

TEST_CASE("coarsening keeps cuts at small frontiers and balanced stages") {
  ir::Graph g = reluChain(200, 64);
  std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
  std::vector<uint32_t> cuts = chooseCuts(g, order, 16);
  CHECK(cuts.size() == 15u);
  CHECK(std::is_sorted(cuts.begin(), cuts.end()));
  StageModel m = buildStageModel(g, order, cuts);
  CHECK(m.size() == 16u);
  size_t ops = 0;
  for (const Stage& s : m.stages) ops += s.last - s.first + 1;
  CHECK(ops == order.size());
  CHECK(simulate(m, storeAllStream(m.size())).hasValue());
}

TEST_CASE("a forward that caches keeps its contractions' outputs to B k, and replays skip them") {
  ir::Graph g = contractionChain();
  StageModel m = fineModel(g);
  REQUIRE(m.size() == 14); // one stage per op
  size_t cachingStages = 0;
  uint64_t savedFlops = 0;
  for (size_t k = 1; k <= m.size(); ++k) {
    const Stage& s = m.stage(k);
    const ir::Op op = g.node(m.order[s.first]).op;
    const bool contraction = op == ir::Op::Conv || op == ir::Op::Gemm || op == ir::Op::MatMul;
    CAPTURE(k);
    CHECK(s.cacheable.empty() == !contraction);
    if (!contraction) {
      CHECK(s.replayFlops == s.forwardFlops);
      continue;
    }
    ++cachingStages;
    CHECK(s.cacheableBytes == g.value(s.cacheable[0]).bytes);
    CHECK(s.replayFlops == 0);
    CHECK(s.replayCost == 0);
    savedFlops += s.forwardFlops;
  }
  CHECK(cachingStages == 5);

  Expected<SimResult> plain = simulate(m, replayAllStream(m, false));
  Expected<SimResult> cached = simulate(m, replayAllStream(m, true));
  REQUIRE(plain.hasValue());
  REQUIRE_MESSAGE(cached.hasValue(), cached.status().message());
  // The replays skip exactly the contractions (the last stage, SumLoss, is not replayed),
  // less those the plain stream's F_all L-1, right before B L-1, elides anyway.
  const Stage& beforeLast = m.stage(m.size() - 1);
  CHECK(beforeLast.elidableFlops == beforeLast.forwardFlops); // a lone MatMul feeding the loss
  CHECK(plain->forwardFlops - cached->forwardFlops == savedFlops - beforeLast.elidableFlops);
  // At the loss every cached output is held, and only those not held anyway cost more.
  const size_t lossAt = m.size() + 1; // F_ck 1 .. F_n L-1, F_all L, Loss
  uint64_t extra = 0;
  for (size_t k = 1; k <= m.size(); ++k)
    for (ir::ValueId v : m.stage(k).cacheable)
      if (!std::binary_search(m.frontier(m.size() + 1).begin(), m.frontier(m.size() + 1).end(), v) &&
          !std::binary_search(m.stage(m.size()).tape.begin(), m.stage(m.size()).tape.end(), v))
        extra += m.valueBytes[v];
  CHECK(extra > 0);
  CHECK(cached->timeline[lossAt - 1] - plain->timeline[lossAt - 1] == extra);
  // A backward frees its stage's cache before it runs: B 1 costs what it costs without one.
  CHECK(cached->timeline.back() == plain->timeline.back());

  auto error = [&](Stream s) { return simulate(m, s).status().message(); };
  Instruction relu = fn(2);
  relu.cache = true;
  Instruction conv = fck(1);
  conv.cache = true;
  CHECK(error({conv, relu}).find("stage 2 has no cacheable outputs") != std::string::npos);
  Instruction again = fall(1);
  again.cache = true;
  CHECK(error({conv, again}).find("the cache of stage 1 is already held") != std::string::npos);
  CHECK(formatInstruction(conv) == "F_ck 1 cache");
  CHECK(*parseInstruction("F_all 7 cache") == Instruction{InstrKind::ForwardAll, 7, true});
  CHECK_FALSE(parseInstruction("B 7 cache").hasValue());
  CHECK_FALSE(parseInstruction("F_n cache").hasValue());
}

TEST_CASE("selective recomputation lowers the optimal planner's cost, never raises it") {
  Expected<ir::Graph> g = workloads::buildWorkload("unet", workloads::Profile::Small, false);
  REQUIRE(g.hasValue());
  std::vector<ir::NodeId> order = analysis::computeOrder(*g, analysis::OrderHeuristic::File);
  StageModel m = buildStageModel(*g, order, chooseCuts(*g, order, 24));
  uint64_t storeAll = simulate(m, storeAllStream(m.size()))->peakBytes;
  PlanOptions plain, selective;
  plain.selective = false;
  plain.portfolio = selective.portfolio = false;
  std::vector<Candidate> without = candidates(m, PlannerKind::Optimal, plain);
  std::vector<Candidate> with = candidates(m, PlannerKind::Optimal, selective);
  size_t cheaper = 0;
  for (uint64_t pct = 30; pct <= 100; pct += 10) {
    uint64_t budget = storeAll * pct / 100;
    Expected<Plan> a = chooseCandidate(without, PlannerKind::Optimal, budget);
    Expected<Plan> b = chooseCandidate(with, PlannerKind::Optimal, budget);
    CAPTURE(pct);
    if (!a) continue;
    REQUIRE(b.hasValue());
    CHECK(b->chosen.sim.forwardCost <= a->chosen.sim.forwardCost);
    CHECK(b->chosen.sim.peakBytes <= budget);
    if (b->chosen.sim.forwardCost < a->chosen.sim.forwardCost) {
      ++cheaper;
      CHECK(std::any_of(b->chosen.stream.begin(), b->chosen.stream.end(), [](const Instruction& i) { return i.cache; }));
    }
  }
  CHECK(cheaper >= 3);
}

TEST_CASE("measured node costs price the stages, and the dynamic program stays exact under them") {
  ir::Graph g = reluChain(4, 8);
  std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
  StageModel estimate = buildStageModel(g, order, everyPosition(order.size()));
  CHECK_FALSE(estimate.measuredCosts);
  // A cost table of the wrong length is not a measurement: the estimate stays.
  StageModel wrong = buildStageModel(g, order, everyPosition(order.size()), NodeCosts(g.numNodes() - 1, 7));
  CHECK_FALSE(wrong.measuredCosts);
  CHECK(wrong.onePassCost == estimate.onePassCost);

  std::mt19937 rng(11);
  for (int trial = 0; trial < 20; ++trial) {
    NodeCosts costs(g.numNodes());
    for (uint64_t& c : costs) c = 1 + rng() % 1000;
    StageModel m = buildStageModel(g, order, everyPosition(order.size()), costs);
    REQUIRE(m.measuredCosts);
    uint64_t total = 0;
    for (size_t k = 1; k <= m.size(); ++k) {
      uint64_t sum = 0;
      for (uint32_t p = m.stage(k).first; p <= m.stage(k).last; ++p) sum += costs[order[p]];
      CHECK(m.stage(k).cost == sum);
      CHECK(m.stage(k).replayCost == sum); // nothing cacheable in a Mul/ReLU chain
      total += sum;
    }
    CHECK(m.onePassCost == total);
    // FLOPs are still FLOPs: the recompute ratio does not change with the prices.
    CHECK(m.onePassFlops == estimate.onePassFlops);
    CAPTURE(trial);
    checkDpAgainstExhaustiveSearch(m, [&](uint64_t budget, const Plan& plan) {
      // The plan the estimate picks, priced in the measured costs, is never cheaper.
      Expected<Plan> byEstimate = planForBudget(estimate, PlannerKind::Optimal, budget);
      REQUIRE(byEstimate.hasValue());
      CHECK(simulate(m, byEstimate->chosen.stream)->forwardCost >= plan.chosen.sim.forwardCost);
    });
  }
}

TEST_CASE("a budget refines the optimal planner's memory grid") {
  // Few slots, so that the grid is coarse against these small graphs and refining it shows.
  // The finer grid is not a superset of the coarser one (its slot need not divide theirs, and
  // it stops near the budget), so a plan can come out costlier; taken together they must not.
  PlanOptions coarse;
  coarse.memorySlots = 24;
  size_t better = 0, worse = 0, infeasibleChecked = 0;
  long double onStoreAllCost = 0, onBudgetCost = 0;
  for (unsigned seed = 1; seed <= 60; ++seed) {
    ir::Graph g = randomDag(seed, 14 + static_cast<int>(seed % 14));
    StageModel m = fineModel(g, analysis::OrderHeuristic::File);
    const uint64_t storeAll = simulate(m, storeAllStream(m.size()))->peakBytes;
    const std::vector<Candidate> onStoreAllGrid = candidates(m, PlannerKind::Optimal, coarse);
    for (uint64_t percent = 90; percent >= 10; percent -= 10) {
      const uint64_t budget = m.residentBytes + (storeAll - m.residentBytes) * percent / 100;
      PlanOptions fine = coarse;
      fine.budgetBytes = budget;
      const std::vector<Candidate> onBudgetGrid = candidates(m, PlannerKind::Optimal, fine);
      Expected<Plan> a = chooseCandidate(onStoreAllGrid, PlannerKind::Optimal, budget);
      Expected<Plan> b = chooseCandidate(onBudgetGrid, PlannerKind::Optimal, budget);
      CAPTURE(seed);
      CAPTURE(percent);
      if (a) CHECK(b.hasValue());
      if (!b) {
        // Nothing fits: the smallest feasible budget named is the store-all grid's (or lower).
        CHECK(minFeasibleBytes(onBudgetGrid) <= minFeasibleBytes(onStoreAllGrid));
        ++infeasibleChecked;
        continue;
      }
      CHECK(b->chosen.sim.peakBytes <= budget);
      if (!a) continue;
      better += b->chosen.sim.forwardCost < a->chosen.sim.forwardCost;
      worse += b->chosen.sim.forwardCost > a->chosen.sim.forwardCost;
      onStoreAllCost += a->chosen.sim.forwardCost;
      onBudgetCost += b->chosen.sim.forwardCost;
    }
  }
  MESSAGE("budget grid cheaper in " << better << " plans, costlier in " << worse << "; total forward cost "
                                    << static_cast<double>(onBudgetCost) << " against " << static_cast<double>(onStoreAllCost));
  CHECK(better > worse);
  CHECK(onBudgetCost < onStoreAllCost);
  CHECK(infeasibleChecked > 0);
}

TEST_CASE("with measured costs the planner keeps what is slow and replays what is fast") {
  // Eight stages; the estimate prices them alike, the measurement says stage 3 is slow.
  ir::Graph g = uniformBlockChain(8);
  std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
  std::vector<uint32_t> cuts = everyPosition(order.size() - 1, 4);
  NodeCosts costs(g.numNodes(), 10);
  for (uint32_t p = 8; p < 12; ++p) costs[order[p]] = 100000;
  StageModel m = buildStageModel(g, order, cuts, costs);
  REQUIRE(m.size() == 8);
  REQUIRE(m.stage(3).cost == 400000);
  uint64_t storeAll = simulate(m, storeAllStream(m.size()))->peakBytes;
  size_t recomputing = 0;
  for (uint64_t pct = 40; pct < 100; pct += 10) {
    const uint64_t budget = m.residentBytes + (storeAll - m.residentBytes) * pct / 100;
    Expected<Plan> p = planForBudget(m, PlannerKind::Optimal, budget);
    if (!p) continue;
    size_t forwardsOf3 = 0, forwards = 0;
    for (const Instruction& i : p->chosen.stream) {
      forwards += i.isForward();
      forwardsOf3 += i.isForward() && i.stage == 3;
    }
    CAPTURE(pct);
    CHECK(forwardsOf3 == 1);
    recomputing += forwards > m.size();
  }
  CHECK(recomputing >= 2);
}

TEST_CASE("replayed stages hold their BatchNorm statistics from the first forward to the end") {
  ir::Graph g = tbp::testing::convBatchNormChain(2);
  std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
  std::vector<uint32_t> cuts;
  for (uint32_t p = 1; p < order.size(); ++p) cuts.push_back(p);
  StageModel m = buildStageModel(g, order, cuts);
  // The same model without the state: the difference is exactly what the state adds.
  StageModel bare = m;
  uint64_t state = 0;
  for (Stage& s : bare.stages) {
    state += s.replayStateBytes;
    s.replayStateBytes = 0;
    s.tapeSharedStateBytes = 0;
  }
  REQUIRE(state == 2u * 8 * 16);
  // Store-all replays nothing: no state.
  CHECK(simulate(m, storeAllStream(m.size()))->timeline == simulate(bare, storeAllStream(m.size()))->timeline);
  Stream stream = replayAllStream(m, false);
  std::vector<uint64_t> with = simulate(m, stream)->timeline, without = simulate(bare, stream)->timeline;
  REQUIRE(with.size() == without.size());
  // The first BatchNorm's stage is stage 2 (Conv, BatchNormalization, Relu, ...): from its
  // first forward (instruction 2) on it holds 128 bytes; the second's (stage 5) from its first
  // forward; a tape of a stage holding state shares the mean (64 bytes) while it is held.
  CHECK(with[0] == without[0]);
  CHECK(with[1] == without[1] + 128);
  CHECK(with[4] == without[4] + 256);
  // B 1 at the end: both states held, no BatchNorm tape.
  CHECK(with.back() == without.back() + 256);
  // B 2 (the one before): stage 2's tape is held while it runs and shares its mean.
  CHECK(with[with.size() - 2] == without[without.size() - 2] + 256 - 64);
}

TEST_CASE("the static estimate prices FLOPs and 4 per byte moved; views move nothing") {
  ir::Graph g = tbp::testing::parseOk(R"(graph priced {
    input %x : f32[8,16,32,32]
    param %w : f32[32,16,3,3]
    const %flat : i64[2] = [8, -1]
    %c : f32[8,32,32,32] = Conv(%x, %w) {pads=[1,1,1,1]}
    %r : f32[8,32,32,32] = Relu(%c)
    %f : f32[8,32768] = Reshape(%r, %flat)
    %loss : f32[] = SumLoss(%f)
    output %loss
  })");
  auto node = [&g](const char* out) { return g.node(g.value(*g.findValue(out)).producer); };
  const uint64_t map = 8 * 32 * 32 * 32 * 4;
  // Conv: its FLOPs, and x, w and y moved once (the constant shape tensor is not counted).
  const ir::Node& conv = node("c");
  CHECK(plan::estimatedCost(g, conv) == ir::estimateFlops(g, conv) + plan::kCostPerByte * (8 * 16 * 32 * 32 * 4 + 32 * 16 * 9 * 4 + map));
  // Relu reads and writes one map: the bytes outweigh its FLOPs.
  const ir::Node& relu = node("r");
  CHECK(plan::estimatedCost(g, relu) == ir::estimateFlops(g, relu) + plan::kCostPerByte * 2 * map);
  CHECK(plan::estimatedCost(g, relu) > 8 * ir::estimateFlops(g, relu));
  // The Reshape is a view of r's buffer: nothing moves.
  const ir::Node& view = node("f");
  REQUIRE(plan::isBufferView(g, view));
  CHECK(plan::estimatedCost(g, view) == ir::estimateFlops(g, view));
}

TEST_CASE("a device's prices weight matrix products and bytes, and the optimal planner plans by them") {
  ir::Graph g = tbp::testing::parseOk(R"(graph products {
    input %x : f32[64,128]
    param %w : f32[128,256]
    param %k : f32[256,16,3,3]
    const %shape : i64[4] = [1, 256, 8, 8]
    %m : f32[64,256] = MatMul(%x, %w)
    %r : f32[64,256] = Relu(%m)
    %v : f32[1,256,8,8] = Reshape(%r, %shape)
    %c : f32[1,16,8,8] = Conv(%v, %k) {pads=[1,1,1,1]}
    %loss : f32[] = SumLoss(%c)
    output %loss
  })");
  auto node = [&g](const char* out) -> const ir::Node& { return g.node(g.value(*g.findValue(out)).producer); };
  const EstimatePrices device = devicePrices(/*cpu=*/true, /*referenceBlas=*/true);
  CHECK(device.perByte == kDeviceCostPerByte);
  CHECK(device.matrixProductWeight == kReferenceBlasProductWeight);
  CHECK(device.poolWindowWeight == kCpuPoolWindowWeight);
  CHECK(devicePrices(true, false).matrixProductWeight == 1);
  CHECK(devicePrices(false, false) == EstimatePrices{kDeviceCostPerByte, 1, 1});
  CHECK(EstimatePrices{} == EstimatePrices{kCostPerByte, 1, 1});
  // The MatMul's FLOPs are weighted, its bytes priced per byte; a Conv's FLOPs are not.
  const ir::Node& mm = node("m");
  const uint64_t mmBytes = (64 * 128 + 128 * 256 + 64 * 256) * 4; // x, the parameter w, m
  CHECK(estimatedCost(g, mm, device) == 25 * ir::estimateFlops(g, mm) + 16 * mmBytes);
  CHECK(estimatedCost(g, mm) == ir::estimateFlops(g, mm) + 4 * mmBytes);
  const ir::Node& conv = node("c");
  const uint64_t convBytes = (256 * 64 + 16 * 256 * 9 + 16 * 64) * 4;
  CHECK(estimatedCost(g, conv, device) == ir::estimateFlops(g, conv) + 16 * convBytes);
  const ir::Node& relu = node("r");
  CHECK(estimatedCost(g, relu, device) == ir::estimateFlops(g, relu) + 16 * 2 * 64 * 256 * 4);
  // Stage costs follow the prices they were built with.
  std::vector<ir::NodeId> order = analysis::computeOrder(g, analysis::OrderHeuristic::File);
  StageModel plain = buildStageModel(g, order, everyPosition(order.size()));
  StageModel priced = buildStageModel(g, order, everyPosition(order.size()), {}, device);
  REQUIRE(plain.size() == priced.size());
  CHECK(priced.stage(1).cost == estimatedCost(g, mm, device));
  CHECK(plain.stage(1).cost == estimatedCost(g, mm));
  CHECK(priced.onePassCost > plain.onePassCost);
}

TEST_CASE("pooling windows are priced per element on a CPU") {
  ir::Graph g = tbp::testing::parseOk(R"(graph pools {
    input %x : f32[2,8,16,16]
    %m : f32[2,8,8,8] = MaxPool(%x) {kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]}
    %a : f32[2,8,4,4] = AveragePool(%m) {kernel_shape=[2,2], strides=[2,2]}
    %r : f32[2,8,4,4] = Relu(%a)
    %loss : f32[] = SumLoss(%r)
    output %loss
  })");
  auto node = [&g](const char* out) -> const ir::Node& { return g.node(g.value(*g.findValue(out)).producer); };
  const EstimatePrices cpu = devicePrices(/*cpu=*/true, /*referenceBlas=*/false);
  const EstimatePrices cuda = devicePrices(/*cpu=*/false, /*referenceBlas=*/false);
  const ir::Node& mp = node("m");
  const ir::Node& ap = node("a");
  // One FLOP per window element: 3x3 windows over 2*8*8*8 outputs, 2x2 over 2*8*4*4.
  REQUIRE(ir::estimateFlops(g, mp) == 9 * 2 * 8 * 8 * 8);
  REQUIRE(ir::estimateFlops(g, ap) == 4 * 2 * 8 * 4 * 4);
  CHECK(estimatedCost(g, mp, cpu) == kCpuPoolWindowWeight * 9 * 2 * 8 * 8 * 8 + 16 * (2 * 8 * 16 * 16 + 2 * 8 * 8 * 8) * 4);
  CHECK(estimatedCost(g, ap, cpu) == kCpuPoolWindowWeight * 4 * 2 * 8 * 4 * 4 + 16 * (2 * 8 * 8 * 8 + 2 * 8 * 4 * 4) * 4);
  CHECK(estimatedCost(g, mp, cuda) == 9 * 2 * 8 * 8 * 8 + 16 * (2 * 8 * 16 * 16 + 2 * 8 * 8 * 8) * 4);
  // Other ops are not weighted.
  CHECK(estimatedCost(g, node("r"), cpu) == estimatedCost(g, node("r"), cuda));
}

TEST_CASE("the optimal planner's schedule under a device's prices is the cheapest by those prices") {
  // The built-in GPT-2 at 50 %: the two price sets choose different schedules, and each is
  // cheaper than the other's by its own prices (the matrix products' weight moved the choice).
  Expected<ir::Graph> g = workloads::buildWorkload("gpt2", workloads::Profile::Small, false);
  REQUIRE(g.hasValue());
  std::vector<ir::NodeId> order = analysis::computeOrder(*g, analysis::OrderHeuristic::File);
  std::vector<uint32_t> cuts = chooseCuts(*g, order, 64);
  StageModel plain = buildStageModel(*g, order, cuts);
  StageModel device = buildStageModel(*g, order, cuts, {}, devicePrices(true, true));
  const uint64_t storeAll = simulate(plain, storeAllStream(plain.size()))->peakBytes;
  REQUIRE(simulate(device, storeAllStream(device.size()))->peakBytes == storeAll);
  const uint64_t budget = storeAll / 2;
  Expected<Plan> a = planForBudget(plain, PlannerKind::Optimal, budget);
  Expected<Plan> b = planForBudget(device, PlannerKind::Optimal, budget);
  REQUIRE(a.hasValue());
  REQUIRE(b.hasValue());
  CHECK(a->chosen.stream != b->chosen.stream);
  auto cost = [](const StageModel& m, const Stream& s) { return simulate(m, s)->forwardCost; };
  CHECK(cost(device, b->chosen.stream) < cost(device, a->chosen.stream));
  CHECK(cost(plain, a->chosen.stream) < cost(plain, b->chosen.stream));
  CHECK(b->chosen.sim.peakBytes <= budget);
}

TEST_CASE("the tightest schedule plans again on the finer grid of its own peak") {
  // `--budget min`: the optimal planner's grid is finer under a budget, so the smallest peak of
  // a plain search can be beaten by planning at it; the tightest search must end where an
  // infeasible budget's search says the smallest feasible budget is.
  size_t lower = 0;
  for (const char* name : {"gpt2", "transformer", "resnet", "long_context", "unet"}) {
    CAPTURE(name);
    Expected<ir::Graph> g = workloads::buildWorkload(name, workloads::Profile::Small, false);
    REQUIRE(g.hasValue());
    std::vector<ir::NodeId> order = analysis::computeOrder(*g, analysis::OrderHeuristic::File);
    StageModel m = buildStageModel(*g, order, chooseCuts(*g, order, 64));
    const uint64_t plain = minFeasibleBytes(candidates(m, PlannerKind::Optimal));
    const uint64_t tight = minFeasibleBytes(tightestCandidates(m, PlannerKind::Optimal));
    CHECK(tight <= plain);
    if (tight < plain) ++lower;
    Expected<Plan> at = planForBudget(m, PlannerKind::Optimal, tight);
    REQUIRE(at.hasValue());
    CHECK(at->chosen.sim.peakBytes == tight);
    Expected<Plan> below = planForBudget(m, PlannerKind::Optimal, tight - 1);
    REQUIRE_FALSE(below.hasValue());
    CHECK(below.status().code() == ErrorCode::Infeasible);
    CHECK(below.status().message().find("(" + std::to_string(tight) + " bytes)") != std::string::npos);
    const std::string line = std::string(name) + ": plain search " + std::to_string(plain) + " bytes, tightest " + std::to_string(tight);
    MESSAGE(line);
  }
  CHECK(lower > 0);
}
