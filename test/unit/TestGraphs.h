#pragma once
// Graph builders shared by the unit tests.

#include "tbp/ir/Loss.h"
#include "tbp/ir/TextFormat.h"

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
