#include "tbp/plan/StageModel.h"

#include "tbp/ir/OpRules.h"
#include "tbp/support/Bytes.h"

#include <algorithm>
#include <iterator>
#include <map>

namespace tbp::plan {

using ir::kNone;
using ir::NodeId;
using ir::ValueId;
using ir::ValueKind;

namespace {

uint64_t elements(const ir::Value& v) {
  uint64_t n = 1;
  for (int64_t d : v.type.shape) n = checkedMul(n, static_cast<uint64_t>(d)).value_or(UINT64_MAX);
  return n;
}

/// A contraction whose backward the runtime can run from a kept output (runtime
/// `replayKept`): the op that dominates a stage's recomputation.
bool cacheableOp(const ir::Graph& g, const ir::Node& node) {
  if (node.op != ir::Op::MatMul && node.op != ir::Op::Gemm && node.op != ir::Op::Conv) return false;
  if (node.outputs.size() != 1) return false;
  const ir::Value& out = g.value(node.outputs[0]);
  return out.kind == ValueKind::Activation && ir::isFloat(out.type.dtype) && out.bytes > 0;
}

/// estimatedCost for a node whose FLOPs (ir::estimateFlops) are already known.
uint64_t costOf(const ir::Graph& g, const ir::Node& node, uint64_t flops, const EstimatePrices& prices) {
  uint64_t c = flops;
  if (isMatrixProduct(node.op)) c = saturatingMul(c, prices.matrixProductWeight);
  if (isWindowPool(node.op)) c = saturatingMul(c, prices.poolWindowWeight);
  if (isBufferView(g, node)) return c; // shares its input's buffer: moves nothing
  uint64_t bytes = 0;
  for (ValueId in : node.inputs)
    if (in != kNone && g.value(in).kind != ValueKind::Constant) bytes = saturatingAdd(bytes, g.value(in).bytes);
  for (ValueId out : node.outputs) bytes = saturatingAdd(bytes, g.value(out).bytes);
  return saturatingAdd(c, saturatingMul(prices.perByte, bytes));
}

} // namespace

bool isMatrixProduct(ir::Op op) { return op == ir::Op::MatMul || op == ir::Op::Gemm || op == ir::Op::Einsum; }

bool isWindowPool(ir::Op op) { return op == ir::Op::MaxPool || op == ir::Op::AveragePool; }

EstimatePrices devicePrices(bool cpu, bool referenceBlas) {
  return EstimatePrices{kDeviceCostPerByte, cpu && referenceBlas ? kReferenceBlasProductWeight : 1, cpu ? kCpuPoolWindowWeight : 1};
}

uint64_t estimatedCost(const ir::Graph& g, const ir::Node& node, const EstimatePrices& prices) {
  return costOf(g, node, ir::estimateFlops(g, node), prices);
}

bool isBufferView(const ir::Graph& g, const ir::Node& node) {
  if (node.op != ir::Op::Reshape && node.op != ir::Op::Flatten && node.op != ir::Op::Squeeze && node.op != ir::Op::Unsqueeze &&
      node.op != ir::Op::Identity)
    return false;
  if (node.inputs.empty() || node.inputs[0] == kNone || node.outputs.size() != 1) return false;
  const ir::Value& in = g.value(node.inputs[0]);
  const ir::Value& out = g.value(node.outputs[0]);
  return in.type.dtype == out.type.dtype && elements(in) == elements(out);
}

StageModel buildStageModel(const ir::Graph& g, const std::vector<NodeId>& order,
                           const std::vector<uint32_t>& cuts, const plan::NodeCosts& costs, const EstimatePrices& prices) {
  StageModel m;
  m.graph = &g;
  m.measuredCosts = costs.size() == g.numNodes() && !costs.empty();
  m.order = order;
  const size_t n = order.size();
  const size_t numValues = g.numValues();
  analysis::MemoryAnalysis mem = analysis::analyzeMemory(g, order);
  m.residentBytes = mem.baseResidentBytes;
  m.gradientBytes = mem.gradientBytes;
  m.valueBytes.resize(numValues);
  m.requiresGrad.resize(numValues);
  m.producerPos.resize(numValues);
  m.lastUsePos.resize(numValues);
  m.gradLastUsePos.resize(numValues);
  m.keepsTape = mem.keepsTape;
  m.gradGroup = mem.gradGroup;
  for (ValueId v = 0; v < numValues; ++v) {
    const ir::Value& val = g.value(v);
    m.valueBytes[v] = val.kind == ValueKind::Activation ? val.bytes : 0;
    m.requiresGrad[v] = mem.values[v].requiresGrad;
    m.producerPos[v] = mem.values[v].producerPos;
    m.lastUsePos[v] = mem.values[v].lastUsePos;
    m.gradLastUsePos[v] = mem.values[v].gradLastUsePos;
  }

  std::vector<int64_t> positionOf(g.numNodes(), -1);
  for (size_t p = 0; p < n; ++p) positionOf[order[p]] = static_cast<int64_t>(p);
  m.storageOf.resize(numValues);
  for (ValueId v = 0; v < numValues; ++v) m.storageOf[v] = v;
  for (NodeId id : order) // topological: an input's buffer is known before its views
    if (isBufferView(g, g.node(id))) m.storageOf[g.node(id).outputs[0]] = m.storageOf[g.node(id).inputs[0]];
  std::vector<uint32_t> sharers(numValues, 0); // values per buffer
  for (ValueId v = 0; v < numValues; ++v) ++sharers[m.storageOf[v]];

  // Stage boundaries and the stage of every position.
  std::vector<uint32_t> starts{0};
  for (uint32_t c : cuts)
    if (c > starts.back() && c < n) starts.push_back(c);
  const size_t L = starts.size();
  m.stages.resize(L);
  std::vector<uint32_t> stageOf(n);
  for (size_t k = 0; k < L; ++k) {
    Stage& s = m.stages[k];
    s.first = starts[k];
    s.last = static_cast<uint32_t>((k + 1 < L ? starts[k + 1] : n) - 1);
    for (uint32_t p = s.first; p <= s.last; ++p) stageOf[p] = static_cast<uint32_t>(k);
  }

  // Parameter gradients: made by the backward of the stage of their last user.
  for (ValueId v = 0; v < numValues; ++v)
    if (g.value(v).kind == ValueKind::Parameter && mem.values[v].gradLastUsePos >= 0) {
      Stage& s = m.stages[stageOf[static_cast<size_t>(mem.values[v].gradLastUsePos)]];
      s.gradientBytes = saturatingAdd(s.gradientBytes, g.value(v).bytes);
    }

  // Frontiers: a value made before stage k (graph inputs count) and used at or after it.
  std::vector<bool> isOutput(numValues, false);
  for (ValueId o : g.outputs()) isOutput[o] = true;
  for (ValueId v = 0; v < numValues; ++v) {
    const ir::Value& val = g.value(v);
    if (val.kind != ValueKind::Activation && val.kind != ValueKind::Input) continue;
    if (m.lastUsePos[v] < 0 && !isOutput[v]) continue;
    size_t from = val.kind == ValueKind::Input ? 0 : stageOf[static_cast<size_t>(m.producerPos[v])] + 1;
    size_t to = isOutput[v] ? L : stageOf[static_cast<size_t>(m.lastUsePos[v])];
    for (size_t k = from; k <= to && k < L; ++k) m.stages[k].inputFrontier.push_back(v);
    if (isOutput[v]) m.outputFrontier.push_back(v);
  }

  for (size_t k = 0; k < L; ++k) {
    Stage& s = m.stages[k];
    for (ValueId v : s.inputFrontier) s.inputFrontierBytes = saturatingAdd(s.inputFrontierBytes, m.valueBytes[v]);
    // Frontiers are sorted by value id.
    auto contains = [](const std::vector<ValueId>& list, ValueId v) { return std::binary_search(list.begin(), list.end(), v); };
    const std::vector<ValueId>& next = m.frontier(k + 2);
    std::set_difference(next.begin(), next.end(), s.inputFrontier.begin(), s.inputFrontier.end(), std::back_inserter(s.born));
    std::set_difference(s.inputFrontier.begin(), s.inputFrontier.end(), next.begin(), next.end(), std::back_inserter(s.dying));

    // Per-op quantities inside the stage.
    const size_t ops = s.last - s.first + 1;
    std::vector<uint64_t> extraAt(ops, 0);
    std::vector<int64_t> fwdDiff(ops + 1, 0), allDiff(ops + 1, 0), bwdDiff(ops + 1, 0);
    std::vector<int64_t> fwdCacheDiff(ops + 1, 0), allCacheDiff(ops + 1, 0); // forwards marked `cache`
    std::vector<int64_t> allElidedDiff(ops + 1, 0); // `F_all k` right before `B k`
    auto range = [](std::vector<int64_t>& diff, int64_t a, int64_t b, uint64_t bytes) {
      if (a > b || bytes == 0) return;
      diff[static_cast<size_t>(a)] += static_cast<int64_t>(bytes);
      diff[static_cast<size_t>(b) + 1] -= static_cast<int64_t>(bytes);
    };
    std::vector<ValueId> tape;
    std::map<ValueId, uint32_t> firstSaver; // tape value -> its saver earliest in the order
    for (uint32_t p = s.first; p <= s.last; ++p) {
      const ir::Node& node = g.node(order[p]);
      const uint64_t flops = ir::estimateFlops(g, node);
      s.forwardFlops = saturatingAdd(s.forwardFlops, flops);
      s.stochastic = s.stochastic || node.op == ir::Op::Dropout;
      const uint64_t stats = ir::batchStatsBytes(g, node);
      s.replayStateBytes = saturatingAdd(s.replayStateBytes, stats);
      ir::SavedForBackward saved = m.keepsTape[order[p]] ? ir::savedForBackward(g, node, &mem.needsGrad) : ir::SavedForBackward{};
      if (m.keepsTape[order[p]]) s.tapeSharedStateBytes = saturatingAdd(s.tapeSharedStateBytes, std::min(saved.extraBytes, stats / 2));
      extraAt[p - s.first] = saved.extraBytes;
      s.tapeExtraBytes = saturatingAdd(s.tapeExtraBytes, saved.extraBytes);
      for (ValueId v : saved.values)
        if (g.value(v).kind == ValueKind::Activation) {
          tape.push_back(v);
          firstSaver.try_emplace(v, p); // positions ascend: the first one seen is the earliest
        }
      const uint64_t nodeCost = m.measuredCosts ? costs[order[p]] : costOf(g, node, flops, prices);
      for (ValueId out : node.outputs) s.produced.push_back(out);
      s.cost = saturatingAdd(s.cost, nodeCost);
      // Elidable: a contraction whose every reader is in a later stage (not a graph output:
      // the loss reads those).
      const bool contraction = cacheableOp(g, node);
      bool elided = contraction && !isOutput[node.outputs[0]] && m.lastUsePos[node.outputs[0]] > static_cast<int64_t>(s.last);
      if (elided)
        for (NodeId user : g.value(node.outputs[0]).users) elided = elided && positionOf[user] > static_cast<int64_t>(s.last);
      if (elided) {
        s.elidable.push_back(p);
        s.elidableFlops = saturatingAdd(s.elidableFlops, flops);
        s.elidableCost = saturatingAdd(s.elidableCost, nodeCost);
      }
      if (contraction && m.lastUsePos[node.outputs[0]] >= 0) {
        s.cacheable.push_back(node.outputs[0]);
        s.cacheableBytes = saturatingAdd(s.cacheableBytes, m.valueBytes[node.outputs[0]]);
      } else {
        s.replayFlops = saturatingAdd(s.replayFlops, flops);
        s.replayCost = saturatingAdd(s.replayCost, nodeCost);
      }
      // The kernel's own temporaries, while the op runs.
      const uint64_t scratch = ir::forwardScratchBytes(g, node);
      // With autograd, a padded copy of the input is saved (extraAt), not scratch.
      const uint64_t scratchAll = m.keepsTape[order[p]] ? scratch - std::min(scratch, ir::paddedInputBytes(g, node)) : scratch;
      for (std::vector<int64_t>* diff : {&fwdDiff, &fwdCacheDiff}) range(*diff, p - s.first, p - s.first, scratch);
      for (std::vector<int64_t>* diff : {&allDiff, &allCacheDiff}) range(*diff, p - s.first, p - s.first, scratchAll);
      if (!elided) range(allElidedDiff, p - s.first, p - s.first, scratchAll);
      // An elided op's stand-in output: one element, to the stage's end.
      else range(allElidedDiff, p - s.first, s.last - s.first, ir::dtypeSize(g.value(node.outputs[0]).type.dtype));
      // The runtime's max pool makes its int64 indices even when no gradient is recorded, and a
      // Dropout draws its bool mask: with autograd they are the saved extra (extraAt), without
      // they are scratch of the op.
      if ((node.op == ir::Op::MaxPool || node.op == ir::Op::Dropout) && node.outputs.size() == 1)
        for (std::vector<int64_t>* diff : {&fwdDiff, &fwdCacheDiff})
          range(*diff, p - s.first, p - s.first,
                saturatingMul(elements(g.value(node.outputs[0])), node.op == ir::Op::MaxPool ? 8 : 1));
    }
    if (s.stochastic) s.replayStateBytes = saturatingAdd(s.replayStateBytes, kRngStateBytes);
    std::sort(s.cacheable.begin(), s.cacheable.end());
    std::sort(tape.begin(), tape.end());
    tape.erase(std::unique(tape.begin(), tape.end()), tape.end());
    s.tape = tape;
    s.tapeBytes = s.tapeExtraBytes;
    for (ValueId v : tape) s.tapeBytes = saturatingAdd(s.tapeBytes, m.valueBytes[v]);
    s.backwardFlops = saturatingAdd(s.forwardFlops, s.forwardFlops);

    // Transients. Forward: tensors made in the stage, live from their producer to their last
    // use inside the stage (to the end when they leave the stage). With autograd, taped ones
    // stay to the end and extras accumulate.
    for (ValueId v : s.produced) {
      int64_t a = m.producerPos[v] - s.first;
      int64_t lastIn = contains(next, v) || m.lastUsePos[v] > static_cast<int64_t>(s.last)
                           ? static_cast<int64_t>(ops) - 1
                           : std::max(m.lastUsePos[v], m.producerPos[v]) - s.first;
      const int64_t end = static_cast<int64_t>(ops) - 1;
      const bool taped = std::binary_search(tape.begin(), tape.end(), v);
      const bool kept = std::binary_search(s.cacheable.begin(), s.cacheable.end(), v);
      range(fwdDiff, a, lastIn, m.valueBytes[v]);
      range(allDiff, a, taped ? end : lastIn, m.valueBytes[v]);
      range(fwdCacheDiff, a, kept ? end : lastIn, m.valueBytes[v]);
      range(allCacheDiff, a, taped || kept ? end : lastIn, m.valueBytes[v]);
      if (!std::binary_search(s.elidable.begin(), s.elidable.end(), static_cast<uint32_t>(m.producerPos[v])))
        range(allElidedDiff, a, taped ? end : lastIn, m.valueBytes[v]);
    }
    for (size_t i = 0; i < ops; ++i)
      for (std::vector<int64_t>* diff : {&allDiff, &allCacheDiff, &allElidedDiff})
        range(*diff, static_cast<int64_t>(i), static_cast<int64_t>(ops) - 1, extraAt[i]);
    // Backward: gradients of values made or consumed here that are not already held as
    // adjoints of F_{k+1}; each lives from its producer (or the stage start) to its last use
    // inside the stage. Gradients of one group (analysis::MemoryAnalysis::gradGroup) share a
    // buffer: counted once over their joint span, and not at all when the group's buffer is
    // an adjoint of F_{k+1}, which the simulator holds through B k.
    std::map<ValueId, std::pair<int64_t, int64_t>> spans;
    std::vector<ValueId> heldGroups;
    auto extend = [&spans](ValueId group, int64_t from, int64_t to) {
      auto [it, fresh] = spans.try_emplace(group, from, to);
      if (!fresh) it->second = {std::min(it->second.first, from), std::max(it->second.second, to)};
    };
    for (ValueId v : s.produced) {
      if (!m.requiresGrad[v]) continue;
      if (m.gradLastUsePos[v] > static_cast<int64_t>(s.last)) {
        heldGroups.push_back(mem.gradGroup[v]);
        continue;
      }
      extend(mem.gradGroup[v], m.producerPos[v] - s.first, m.gradLastUsePos[v] - s.first);
    }
    for (ValueId v : s.inputFrontier) {
      if (!m.requiresGrad[v]) continue;
      if (m.gradLastUsePos[v] < static_cast<int64_t>(s.first) || m.gradLastUsePos[v] > static_cast<int64_t>(s.last)) continue;
      s.newAdjoints.push_back(v);
      extend(mem.gradGroup[v], 0, m.gradLastUsePos[v] - s.first);
    }
    for (const auto& [group, span] : spans)
      if (std::find(heldGroups.begin(), heldGroups.end(), group) == heldGroups.end())
        range(bwdDiff, span.first, span.second, g.value(group).bytes);
    // Partial gradients and backward scratch, as analyzeMemory counts them.
    for (uint32_t p = s.first; p <= s.last; ++p) range(bwdDiff, p - s.first, p - s.first, mem.backwardExtraBytes[p]);
    // A value whose adjoint is already held when B k starts (a later use gave it one) and to
    // which a node of this stage passes a gradient too: autograd cannot add into the held
    // adjoint (the runtime still holds it until B k ends), so the partial made at that node
    // stays a second buffer, carrying the sum on to the stage's start (a GPT-2 residual
    // feeding the stage's LayerNorm and a later Add). analyzeMemory counts it at the node.
    // For a value made in the stage, autograd's engine takes the sum itself, when that node's
    // backward hands the partial over: the held adjoint is still referenced (by the executor),
    // so the sum is a new buffer next to the partial, both alive at that node (GPT-2's
    // residual stream into ln_2: one map over at every block's B, 2026-12-05). A frontier
    // value's partial is summed by the executor after the whole backward (Executor
    // accumulate), when the node's scratch is gone.
    auto heldPartial = [&](ValueId v, bool madeHere) {
      if (!m.requiresGrad[v] || m.gradLastUsePos[v] <= static_cast<int64_t>(s.last)) return;
      int64_t u = -1;
      for (NodeId user : g.value(v).users) {
        const int64_t p = positionOf[user];
        if (p < static_cast<int64_t>(s.first) || p > static_cast<int64_t>(s.last) || !m.keepsTape[user]) continue;
        const ir::Node& node = g.node(user);
        for (size_t i = 0; i < node.inputs.size(); ++i)
          if (node.inputs[i] == v && ir::inputTakesGradient(node, i)) u = std::max(u, p);
      }
      if (u < 0) return;
      const int64_t last = madeHere ? u - s.first : u - 1 - s.first;
      if (last >= 0) range(bwdDiff, 0, last, m.valueBytes[v]);
    };
    for (ValueId v : s.produced) heldPartial(v, true);
    for (ValueId v : s.inputFrontier) heldPartial(v, false);
    // Autograd frees what a node saved once the node's backward has run: a tape tensor made
    // and used only inside the stage is gone once its earliest saver's backward is done, so
    // the stage's nodes before it run without it (x̄_k is the tape at the start of B k).
    std::vector<int64_t> releaseDiff(ops + 1, 0);
    for (const auto& [v, q] : firstSaver) {
      if (contains(next, v) || contains(s.inputFrontier, v) || m.producerPos[v] < static_cast<int64_t>(s.first)) continue;
      if (sharers[m.storageOf[v]] > 1) continue; // its buffer may outlive it (a view, or a value with views)
      if (q > s.first) range(releaseDiff, 0, static_cast<int64_t>(q) - 1 - s.first, m.valueBytes[v]);
    }
    // Each working set's peak: the largest running sum of its differences over the stage.
    auto peakOf = [ops](const std::vector<int64_t>& diff) {
      int64_t run = 0;
      uint64_t peak = 0;
      for (size_t i = 0; i < ops; ++i) {
        run += diff[i];
        peak = std::max<uint64_t>(peak, static_cast<uint64_t>(std::max<int64_t>(run, 0)));
      }
      return peak;
    };
    for (size_t i = 0; i < ops; ++i) bwdDiff[i] -= releaseDiff[i];
    s.forwardTransientBytes = peakOf(fwdDiff);
    s.forwardAllTransientBytes = peakOf(allDiff);
    s.forwardCacheTransientBytes = peakOf(fwdCacheDiff);
    s.forwardAllCacheTransientBytes = peakOf(allCacheDiff);
    s.forwardAllElidedTransientBytes = peakOf(allElidedDiff);
    s.backwardTransientBytes = peakOf(bwdDiff);
    m.onePassFlops = saturatingAdd(m.onePassFlops, s.forwardFlops);
    m.onePassCost = saturatingAdd(m.onePassCost, s.cost);
  }
  return m;
}

bool isOptimizerName(std::string_view name) { return name == "none" || name == "sgd" || name == "adam"; }

OptimizerMemory optimizerMemory(const ir::Graph& graph, std::string_view optimizer) {
  OptimizerMemory o;
  if (optimizer != "adam") return o;
  for (const ir::Value& v : graph.values())
    if (v.kind == ValueKind::Parameter) {
      o.stateBytes += 2 * v.bytes;
      o.updateBytes = std::max(o.updateBytes, v.bytes);
    }
  return o;
}

void addOptimizer(StageModel& model, const OptimizerMemory& optimizer) {
  model.residentBytes += optimizer.stateBytes;
  model.finalTransientBytes = std::max(model.finalTransientBytes, optimizer.updateBytes);
}

std::vector<uint32_t> chooseCuts(const ir::Graph& g, const std::vector<NodeId>& order, size_t maxStages) {
  const size_t n = order.size();
  if (maxStages == 0 || n <= maxStages) {
    std::vector<uint32_t> all;
    for (uint32_t p = 1; p < n; ++p) all.push_back(p);
    return all;
  }
  analysis::FrontierProfile profile = analysis::frontierProfile(g, order);
  // Cumulative estimated cost to balance stages.
  std::vector<long double> cumulative(n + 1, 0);
  for (size_t p = 0; p < n; ++p) {
    const ir::Node& node = g.node(order[p]);
    const uint64_t c = estimatedCost(g, node);
    cumulative[p + 1] = cumulative[p] + static_cast<long double>(c) + 1.0L;
  }
  const long double total = cumulative[n];
  const size_t window = std::max<size_t>(1, n / (2 * maxStages));
  std::vector<uint32_t> cuts;
  size_t p = 1;
  for (size_t j = 1; j < maxStages; ++j) {
    long double target = total * static_cast<long double>(j) / static_cast<long double>(maxStages);
    while (p < n && cumulative[p] < target) ++p;
    size_t lo = std::max<size_t>(cuts.empty() ? 1 : cuts.back() + 1, p > window ? p - window : 1);
    size_t hi = std::min(n - 1, std::max(lo, p + window));
    if (lo > hi) break; // no positions left for more cuts
    size_t best = lo;
    // A cut before position c is the frontier after position c-1.
    for (size_t c = lo; c <= hi; ++c) {
      uint64_t here = profile.bytes[c - 1], bestBytes = profile.bytes[best - 1];
      size_t dc = c > p ? c - p : p - c, db = best > p ? best - p : p - best;
      if (here < bestBytes || (here == bestBytes && dc < db)) best = c;
    }
    cuts.push_back(static_cast<uint32_t>(best));
  }
  return cuts;
}

} // namespace tbp::plan
