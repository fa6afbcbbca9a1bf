#pragma once
// Graph builders shared by the unit tests.

#include "tbp/ir/Loss.h"
#include "tbp/ir/TextFormat.h"
#include "tbp/plan/StageModel.h"
#include "tbp/plan/Schedule.h"

#include <doctest/doctest.h>

#include <random>
#include <string>

namespace tbp::testing {

/// Parses text IR or fails the test.
inline ir::Graph parseOk(const std::string& text) {
  Expected<ir::Graph> g = ir::parseGraph(text, "test.tbp");
  if (!g) FAIL(g.status().message());
  return std::move(*g);
}

/// x -> Mul(w) -> Relu x n -> SumLoss, all f32[k].
inline ir::Graph reluChain(int n, int k = 256) {
  std::string ks = std::to_string(k);
  std::string t = "graph chain {\n  input %x : f32[" + ks + "]\n  param %w : f32[" + ks + "]\n";
  t += "  %a0 : f32[" + ks + "] = Mul(%x, %w)\n";
  for (int i = 1; i <= n; ++i)
    t += "  %a" + std::to_string(i) + " : f32[" + ks + "] = Relu(%a" + std::to_string(i - 1) + ")\n";
  t += "  %loss : f32[] = SumLoss(%a" + std::to_string(n) + ")\n  output %loss\n}\n";
  return parseOk(t);
}

/// Every contraction the runtime can replay from a kept output: a Conv with asymmetric padding,
/// a Gemm with transB and a bias, MatMuls with a weight, with two activations and with a 1-D
/// operand, and cheap ops between them.
inline ir::Graph contractionChain() {
  return parseOk(R"(graph contractions {
  input %x : f32[16,3,16,16]
  param %w : f32[4,3,3,3]
  param %b : f32[4]
  param %w2 : f32[32,4]
  param %c2 : f32[32]
  param %w3 : f32[32,32]
  param %v : f32[16]
  %y : f32[16,4,15,15] = Conv(%x, %w, %b) {pads=[1,1,0,0]}
  %a : f32[16,4,15,15] = Tanh(%y)
  %c : f32[16,4,15,15] = Sigmoid(%a)
  %r : f32[16,4,15,15] = Relu(%c)
  %p : f32[16,4,1,1] = GlobalAveragePool(%r)
  %f : f32[16,4] = Flatten(%p) {axis=1}
  %h : f32[16,32] = Gemm(%f, %w2, %c2) {transB=1}
  %t : f32[16,32] = Tanh(%h)
  %m : f32[16,32] = MatMul(%t, %w3)
  %mt : f32[32,16] = Transpose(%m) {perm=[1,0]}
  %u : f32[16,16] = MatMul(%m, %mt)
  %s : f32[16,16] = Tanh(%u)
  %z : f32[16] = MatMul(%s, %v)
  %loss : f32[] = SumLoss(%z)
  output %loss
}
)");
}

/// Conv -> BatchNormalization (training) -> Relu, `blocks` times, on f32[8,16,32,32]: a
/// resnet's stem in small (16 channels: oneDNN pads fewer to its blocked layout, which the
/// Conv rule does not count). Running statistics are constants with data (zero mean, unit
/// variance).
inline ir::Graph convBatchNormChain(int blocks) {
  const std::string zeros = "[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", ones = "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]";
  std::string t = "graph convbn {\n  input %x : f32[8,16,32,32]\n  const %rm : f32[16] = " + zeros + "\n  const %rv : f32[16] = " + ones + "\n";
  std::string prev = "x";
  for (int i = 0; i < blocks; ++i) {
    const std::string s = std::to_string(i);
    t += "  param %w" + s + " : f32[16,16,3,3]\n  param %g" + s + " : f32[16]\n  param %b" + s + " : f32[16]\n";
    t += "  %c" + s + " : f32[8,16,32,32] = Conv(%" + prev + ", %w" + s + ") {pads=[1,1,1,1]}\n";
    t += "  %n" + s + " : f32[8,16,32,32] = BatchNormalization(%c" + s + ", %g" + s + ", %b" + s +
         ", %rm, %rv) {epsilon=1e-05, momentum=0.9, training_mode=1}\n";
    t += "  %r" + s + " : f32[8,16,32,32] = Relu(%n" + s + ")\n";
    prev = "r" + s;
  }
  t += "  %loss : f32[] = SumLoss(%" + prev + ")\n  output %loss\n}\n";
  return parseOk(t);
}

/// One stage per op: the first forward of every stage that has cacheable outputs caches them
/// (checkpointing stage 1), the last stage keeps its tape; then every other stage is replayed
/// with autograd from the checkpoint and backwarded.
inline plan::Stream replayAllStream(const plan::StageModel& m, bool cache) {
  const uint32_t L = static_cast<uint32_t>(m.size());
  plan::Stream s;
  for (uint32_t k = 1; k < L; ++k) {
    plan::Instruction i = k == 1 ? plan::fck(k) : plan::fn(k);
    i.cache = cache && !m.stage(k).cacheable.empty();
    s.push_back(i);
  }
  s.push_back(plan::fall(L));
  s.push_back(plan::loss());
  s.push_back(plan::bwd(L));
  for (uint32_t k = 1; k < L; ++k) s.push_back(plan::fall(k));
  for (uint32_t k = L - 1; k >= 1; --k) s.push_back(plan::bwd(k));
  return s;
}

/// A chain of `stages` blocks, each Mul(param) -> Tanh -> Sigmoid -> Tanh on f32[k]: the tape of
/// a block is four times its input frontier, as in Revolve's setting where storing a tape is
/// much dearer than a checkpoint. Returns the graph; cut every 4 positions for uniform stages.
inline ir::Graph uniformBlockChain(int stages, int k = 64) {
  std::string ks = std::to_string(k);
  std::string t = "graph blocks {\n  input %x : f32[" + ks + "]\n";
  std::string prev = "x";
  for (int i = 0; i < stages; ++i) {
    std::string s = std::to_string(i);
    t += "  param %w" + s + " : f32[" + ks + "]\n";
    t += "  %m" + s + " : f32[" + ks + "] = Mul(%" + prev + ", %w" + s + ")\n";
    t += "  %t" + s + " : f32[" + ks + "] = Tanh(%m" + s + ")\n";
    t += "  %s" + s + " : f32[" + ks + "] = Sigmoid(%t" + s + ")\n";
    t += "  %h" + s + " : f32[" + ks + "] = Tanh(%s" + s + ")\n";
    prev = "h" + s;
  }
  t += "  %loss : f32[] = SumLoss(%" + prev + ")\n  output %loss\n}\n";
  return parseOk(t);
}

/// A seeded random DAG of `nodes` ops over f32 tensors of random widths: each op adds or
/// multiplies one or two earlier activations (so long skips appear), or applies Relu/Tanh.
inline ir::Graph randomDag(unsigned seed, int nodes) {
  std::mt19937 rng(seed);
  ir::Graph g("dag" + std::to_string(seed));
  const int64_t width = 16 * (1 + static_cast<int64_t>(rng() % 4));
  ir::ValueId x = *g.addValue("x", ir::ValueKind::Input, {ir::DType::F32, {width}});
  ir::ValueId w = *g.addValue("w", ir::ValueKind::Parameter, {ir::DType::F32, {width}});
  std::vector<ir::ValueId> acts;
  ir::ValueId first = *g.addValue("v0", ir::ValueKind::Activation, {ir::DType::F32, {width}});
  g.addNode("n0", ir::Op::Mul, {x, w}, {first});
  acts.push_back(first);
  for (int i = 1; i < nodes; ++i) {
    ir::ValueId out = *g.addValue("v" + std::to_string(i), ir::ValueKind::Activation, {ir::DType::F32, {width}});
    // Prefer recent values so the graph is deep, with occasional long skips.
    auto pick = [&] {
      size_t back = rng() % 8 == 0 ? rng() % acts.size() : rng() % std::min<size_t>(3, acts.size());
      return acts[acts.size() - 1 - back];
    };
    switch (rng() % 4) {
    case 0: g.addNode("n" + std::to_string(i), ir::Op::Relu, {pick()}, {out}); break;
    case 1: g.addNode("n" + std::to_string(i), ir::Op::Tanh, {pick()}, {out}); break;
    case 2: g.addNode("n" + std::to_string(i), ir::Op::Add, {pick(), pick()}, {out}); break;
    default: g.addNode("n" + std::to_string(i), ir::Op::Mul, {pick(), pick()}, {out}); break;
    }
    acts.push_back(out);
  }
  g.addOutput(acts.back());
  REQUIRE(ir::appendLoss(g, ir::LossKind::Sum, "dag").isOk());
  return g;
}

} // namespace tbp::testing
