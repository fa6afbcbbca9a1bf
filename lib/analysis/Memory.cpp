#include "tbp/analysis/Memory.h"

#include "tbp/ir/OpRules.h"
#include "tbp/support/Bytes.h"

#include <algorithm>

namespace tbp::analysis {

using ir::Graph;
using ir::kNone;
using ir::NodeId;
using ir::ValueId;
using ir::ValueKind;

namespace {

/// Adds `bytes` to every slot of [from, to] through a difference array of size n+1.
void addRange(std::vector<int64_t>& diff, int64_t from, int64_t to, uint64_t bytes) {
  if (from > to || bytes == 0) return;
  diff[static_cast<size_t>(from)] += static_cast<int64_t>(bytes);
  diff[static_cast<size_t>(to) + 1] -= static_cast<int64_t>(bytes);
}

std::vector<uint64_t> prefixSums(const std::vector<int64_t>& diff, size_t n) {
  std::vector<uint64_t> out(n);
  int64_t running = 0;
  for (size_t i = 0; i < n; ++i) {
    running += diff[i];
    out[i] = static_cast<uint64_t>(std::max<int64_t>(running, 0));
  }
  return out;
}

std::vector<int64_t> positionsOf(const Graph& g, const std::vector<NodeId>& order) {
  std::vector<int64_t> pos(g.numNodes(), -1);
  for (size_t i = 0; i < order.size(); ++i) pos[order[i]] = static_cast<int64_t>(i);
  return pos;
}

void summarize(FrontierProfile& p) {
  p.peakBytes = 0;
  p.peakPosition = 0;
  long double sum = 0;
  for (size_t i = 0; i < p.bytes.size(); ++i) {
    if (p.bytes[i] > p.peakBytes) {
      p.peakBytes = p.bytes[i];
      p.peakPosition = i;
    }
    sum += p.bytes[i];
  }
  p.meanBytes = p.bytes.empty() ? 0.0 : static_cast<double>(sum / p.bytes.size());
}

bool isReshape(ir::Op op) {
  return op == ir::Op::Reshape || op == ir::Op::Flatten || op == ir::Op::Squeeze || op == ir::Op::Unsqueeze;
}

/// Input slots whose gradient is the output's gradient tensor itself (same size assumed):
/// both inputs of Add, the first of Sub and Identity. Reshapes hand out a view of it, which
/// is the same buffer only while that gradient is dense (see groupGradients).
bool passesGradientThrough(const ir::Node& node, size_t slot, bool withReshapes) {
  if (node.op == ir::Op::Add) return slot < 2;
  return slot == 0 && (node.op == ir::Op::Sub || node.op == ir::Op::Identity || (withReshapes && isReshape(node.op)));
}

/// Fills m.gradGroup (see Memory.h). Needs positions, gradient paths and gradLastUsePos.
void groupGradients(const Graph& g, MemoryAnalysis& m) {
  const size_t n = m.order.size();
  m.gradGroup.assign(g.numValues(), kNone);
  std::vector<std::vector<ValueId>> members(g.numValues());
  std::vector<std::vector<int64_t>> partials(g.numValues()); // positions where a later partial is added
  for (ValueId v = 0; v < g.numValues(); ++v)
    if (m.values[v].requiresGrad && g.value(v).kind == ValueKind::Activation) {
      m.gradGroup[v] = v;
      members[v] = {v};
    }
  for (size_t i = 0; i < n; ++i) {
    const ir::Node& node = g.node(m.order[i]);
    if (!m.keepsTape[m.order[i]]) continue;
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      ValueId in = node.inputs[k];
      if (in == kNone || !ir::inputTakesGradient(node, k) || m.gradGroup[in] == kNone) continue;
      if (m.values[in].gradLastUsePos != static_cast<int64_t>(i)) partials[in].push_back(static_cast<int64_t>(i));
    }
  }
  // a's partial at q lands while b's gradient is alive: the sum cannot be taken in place.
  auto clash = [&](ValueId a, ValueId b) {
    for (int64_t q : partials[a])
      if (m.values[b].producerPos < q && q <= m.values[b].gradLastUsePos) return true;
    return false;
  };
  // Whether a gradient is a dense buffer of its own layout: the backward of Transpose and
  // Concat hands out strided views, Einsum's can come out permuted like its product (and the
  // sum losses an expanded scalar), which a reshape's backward must copy.
  // m.denseGradient is the same without the losses' expanded scalar, which a contraction's
  // backward reads as it is.
  std::vector<bool> dense(g.numValues(), true);
  m.denseGradient.assign(g.numValues(), true);
  for (size_t i = n; i-- > 0;) {
    const ir::Node& node = g.node(m.order[i]);
    if (!m.keepsTape[m.order[i]] || node.outputs.empty()) continue;
    const ValueId out = node.outputs[0];
    const bool strided = node.op == ir::Op::Transpose || node.op == ir::Op::Concat || node.op == ir::Op::Einsum ||
                         node.op == ir::Op::SumLoss || node.op == ir::Op::MeanLoss;
    const bool permuted = node.op == ir::Op::Transpose || node.op == ir::Op::Concat || node.op == ir::Op::Einsum;
    for (ValueId in : node.inputs)
      if (in != kNone && m.values[in].gradLastUsePos == static_cast<int64_t>(i)) {
        dense[in] = !strided;
        m.denseGradient[in] = !permuted;
      }
    if (m.gradGroup[out] == kNone) continue;
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      ValueId in = node.inputs[k];
      if (in == kNone || !passesGradientThrough(node, k, true) || m.gradGroup[in] == kNone) continue;
      if (m.values[in].gradLastUsePos != static_cast<int64_t>(i) || g.value(in).bytes != g.value(out).bytes) continue;
      if (std::count(node.inputs.begin(), node.inputs.end(), in) != 1) continue; // Add(a, a) sums
      // A reshape of a strided gradient is copied unless the strides allow a view (BERT's key
      // behind its (0,2,3,1) transpose: viewable, so its MatMul got the strided one): counted
      // as a buffer of its own, and as strided for the contraction that reads it.
      if (isReshape(node.op) && !dense[out]) {
        m.denseGradient[in] = m.denseGradient[out];
        continue;
      }
      dense[in] = dense[out];
      m.denseGradient[in] = m.denseGradient[out];
      ValueId a = m.gradGroup[in], b = m.gradGroup[out];
      if (a == b) continue;
      bool ok = true;
      for (ValueId x : members[a])
        for (ValueId y : members[b]) ok = ok && !clash(x, y) && !clash(y, x);
      if (!ok) continue;
      for (ValueId x : members[a]) m.gradGroup[x] = b;
      members[b].insert(members[b].end(), members[a].begin(), members[a].end());
      members[a].clear();
    }
  }
}

/// Adds the live range of every gradient group (once per group) to `diff`.
void addGradientGroups(const Graph& g, const MemoryAnalysis& m, std::vector<int64_t>& diff) {
  std::vector<int64_t> from(g.numValues(), INT64_MAX), to(g.numValues(), -1);
  for (ValueId v = 0; v < g.numValues(); ++v) {
    ValueId r = m.gradGroup[v];
    if (r == kNone) continue;
    from[r] = std::min(from[r], m.values[v].producerPos);
    to[r] = std::max(to[r], m.values[v].gradLastUsePos);
  }
  for (ValueId r = 0; r < g.numValues(); ++r)
    if (to[r] >= 0) addRange(diff, from[r], to[r], g.value(r).bytes);
}

} // namespace

FrontierProfile frontierProfile(const Graph& g, const std::vector<NodeId>& order) {
  const size_t n = order.size();
  std::vector<int64_t> pos = positionsOf(g, order);
  std::vector<int64_t> diff(n + 1, 0);
  std::vector<bool> isOutput(g.numValues(), false);
  for (ValueId o : g.outputs()) isOutput[o] = true;
  for (ValueId v = 0; v < g.numValues(); ++v) {
    const ir::Value& val = g.value(v);
    if (val.kind != ValueKind::Activation && val.kind != ValueKind::Input) continue;
    int64_t from = val.producer == kNone ? 0 : pos[val.producer];
    int64_t last = -1;
    for (NodeId u : val.users) last = std::max(last, pos[u]);
    if (isOutput[v]) last = static_cast<int64_t>(n); // outputs stay live to the end
    // Live across cut i|i+1 for from <= i < last.
    addRange(diff, from, std::min<int64_t>(last - 1, static_cast<int64_t>(n) - 1), val.bytes);
  }
  FrontierProfile p;
  p.bytes = prefixSums(diff, n);
  summarize(p);
  return p;
}

MemoryAnalysis analyzeMemory(const Graph& g, std::vector<NodeId> order) {
  MemoryAnalysis m;
  const size_t n = order.size();
  m.order = std::move(order);
  m.frontier = frontierProfile(g, m.order);
  std::vector<int64_t> pos = positionsOf(g, m.order);
  m.values.resize(g.numValues());

  // Producer and last-use positions.
  for (ValueId v = 0; v < g.numValues(); ++v) {
    const ir::Value& val = g.value(v);
    ValueLiveness& l = m.values[v];
    l.producerPos = val.producer == kNone ? -1 : pos[val.producer];
    for (NodeId u : val.users) l.lastUsePos = std::max(l.lastUsePos, pos[u]);
  }
  for (ValueId o : g.outputs()) m.values[o].lastUsePos = static_cast<int64_t>(n) - 1;

  // Gradient paths. Forward: which values depend on a parameter through gradient-taking
  // inputs. Backward: which of those reach the loss; only nodes on such a path run a backward,
  // keep a tape, and hand gradients to their inputs.
  std::vector<bool> dependsOnParam(g.numValues(), false);
  for (NodeId id : m.order) {
    const ir::Node& node = g.node(id);
    bool any = false;
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      ValueId in = node.inputs[k];
      if (in == kNone || !ir::inputTakesGradient(node, k)) continue;
      any = any || g.value(in).kind == ValueKind::Parameter || dependsOnParam[in];
    }
    for (ValueId out : node.outputs) dependsOnParam[out] = any && ir::isFloat(g.value(out).type.dtype);
  }
  std::vector<bool> reachesLoss(g.numValues(), false);
  // Per parameter: the last position whose backward hands it a gradient (-1: none). Its
  // gradient buffer appears there, in the backward sweep, and stays to the end of the step.
  std::vector<int64_t> paramGradPos(g.numValues(), -1);
  for (ValueId o : g.outputs()) reachesLoss[o] = true;
  m.keepsTape.assign(g.numNodes(), false);
  for (size_t i = n; i-- > 0;) {
    const ir::Node& node = g.node(m.order[i]);
    bool onPath = false;
    for (ValueId out : node.outputs) onPath = onPath || (reachesLoss[out] && dependsOnParam[out]);
    if (!onPath) continue;
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      ValueId in = node.inputs[k];
      if (in == kNone || !ir::inputTakesGradient(node, k)) continue;
      const ir::Value& v = g.value(in);
      if (v.kind == ValueKind::Parameter) {
        m.keepsTape[m.order[i]] = true;
        paramGradPos[in] = std::max<int64_t>(paramGradPos[in], static_cast<int64_t>(i));
      }
      if (!dependsOnParam[in]) continue;
      m.keepsTape[m.order[i]] = true;
      reachesLoss[in] = true;
      ValueLiveness& l = m.values[in];
      l.gradLastUsePos = std::max<int64_t>(l.gradLastUsePos, static_cast<int64_t>(i));
    }
  }
  for (ValueId v = 0; v < g.numValues(); ++v) {
    ValueLiveness& l = m.values[v];
    l.requiresGrad = dependsOnParam[v] && reachesLoss[v];
    if (l.requiresGrad && l.gradLastUsePos < 0) l.gradLastUsePos = static_cast<int64_t>(n) - 1; // a graph output
  }
  for (ValueId v = 0; v < g.numValues(); ++v)
    if (paramGradPos[v] >= 0) m.values[v].gradLastUsePos = paramGradPos[v];
  groupGradients(g, m);
  m.needsGrad.assign(g.numValues(), false);
  for (ValueId v = 0; v < g.numValues(); ++v)
    m.needsGrad[v] = m.values[v].requiresGrad || g.value(v).kind == ValueKind::Parameter;

  // Tapes: which node saves what, and the extra state each node owns.
  std::vector<uint64_t> extraAt(n, 0), savedAt(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (!m.keepsTape[m.order[i]]) continue;
    ir::SavedForBackward saved = ir::savedForBackward(g, g.node(m.order[i]), &m.needsGrad);
    extraAt[i] = saved.extraBytes;
    for (ValueId v : saved.values) {
      const ir::Value& val = g.value(v);
      if (val.kind != ValueKind::Activation) continue;
      savedAt[i] = saturatingAdd(savedAt[i], val.bytes);
      ValueLiveness& l = m.values[v];
      if (l.firstSaverPos < 0 || static_cast<int64_t>(i) < l.firstSaverPos) l.firstSaverPos = static_cast<int64_t>(i);
    }
  }

  // Resident bytes and totals.
  for (ValueId id = 0; id < g.numValues(); ++id) {
    const ir::Value& v = g.value(id);
    switch (v.kind) {
    case ValueKind::Parameter:
      m.parameterBytes = saturatingAdd(m.parameterBytes, v.bytes);
      m.residentBytes = saturatingAdd(m.residentBytes, v.bytes);
      if (paramGradPos[id] >= 0) m.gradientBytes = saturatingAdd(m.gradientBytes, v.bytes);
      break;
    case ValueKind::Constant:
    case ValueKind::Input: m.residentBytes = saturatingAdd(m.residentBytes, v.bytes); break;
    case ValueKind::Activation: m.activationBytes = saturatingAdd(m.activationBytes, v.bytes); break;
    }
  }

  const uint64_t baseResident = m.residentBytes;
  m.residentBytes = saturatingAdd(m.residentBytes, m.gradientBytes);

  // Store-all step: forward positions 0..n-1, then backward positions n-1..0. Parameter
  // gradients exist from the backward of their last user on.
  std::vector<int64_t> fwd(n + 1, 0), bwd(n + 1, 0), grads(n + 1, 0);
  for (ValueId v = 0; v < g.numValues(); ++v)
    if (paramGradPos[v] >= 0) addRange(grads, 0, paramGradPos[v], g.value(v).bytes);
  const std::vector<uint64_t> gradsLive = prefixSums(grads, n);
  for (ValueId v = 0; v < g.numValues(); ++v) {
    const ir::Value& val = g.value(v);
    if (val.kind != ValueKind::Activation) continue;
    const ValueLiveness& l = m.values[v];
    int64_t end = std::max(l.lastUsePos, l.producerPos);
    if (l.firstSaverPos >= 0) {
      end = static_cast<int64_t>(n) - 1;                    // held through the forward
      addRange(bwd, l.firstSaverPos, static_cast<int64_t>(n) - 1, val.bytes); // until its backward
      m.tapeBytes = saturatingAdd(m.tapeBytes, val.bytes);
    }
    addRange(fwd, l.producerPos, end, val.bytes);
  }
  addGradientGroups(g, m, bwd); // adjoints, one buffer per gradient group
  // Autograd sums the partial gradients of a value with several gradient-passing uses: when a
  // use's backward makes its partial, the adjoint made by a later use is still there. One
  // extra buffer at every such use but the last, which makes the adjoint (Mul(a, a) too),
  // unless the partial is the output's gradient handed through (Add, reshapes): that one is
  // added in place and costs nothing. Plus the op's own backward scratch.
  m.backwardExtraBytes.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const ir::Node& node = g.node(m.order[i]);
    if (!m.keepsTape[m.order[i]]) continue;
    uint64_t extra = ir::backwardScratchBytes(g, node, &m.needsGrad);
    // A contraction's backward copies a strided output gradient into a contiguous one (GPT-2's
    // attention: the gradient of p @ v comes through the head Transpose; one map over at
    // every block's attention B, 2026-12-05).
    const bool contraction = node.op == ir::Op::MatMul || node.op == ir::Op::Gemm || node.op == ir::Op::Conv;
    if (contraction && node.outputs.size() == 1 && !m.denseGradient[node.outputs[0]])
      extra = saturatingAdd(extra, g.value(node.outputs[0]).bytes);
    std::vector<ValueId> adjointMade;
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      ValueId in = node.inputs[k];
      if (in == kNone || !ir::inputTakesGradient(node, k) || g.value(in).kind != ValueKind::Activation || !m.values[in].requiresGrad) continue;
      if (m.values[in].gradLastUsePos == static_cast<int64_t>(i) &&
          std::find(adjointMade.begin(), adjointMade.end(), in) == adjointMade.end()) {
        adjointMade.push_back(in);
        continue;
      }
      if (passesGradientThrough(node, k, false) && !node.outputs.empty() && g.value(in).bytes == g.value(node.outputs[0]).bytes)
        continue;
      extra = saturatingAdd(extra, g.value(in).bytes);
    }
    m.backwardExtraBytes[i] = extra;
    addRange(bwd, static_cast<int64_t>(i), static_cast<int64_t>(i), extra);
  }
  for (size_t i = 0; i < n; ++i) addRange(bwd, static_cast<int64_t>(i), static_cast<int64_t>(i), gradsLive[i]);
  for (size_t i = 0; i < n; ++i) {
    // The store-all forward records autograd: a padded copy of the input is saved (extraAt).
    const ir::Node& node = g.node(m.order[i]);
    const uint64_t scratch = ir::forwardScratchBytes(g, node);
    addRange(fwd, static_cast<int64_t>(i), static_cast<int64_t>(i),
             m.keepsTape[m.order[i]] ? scratch - std::min(scratch, ir::paddedInputBytes(g, node)) : scratch);
  }
  for (size_t i = 0; i < n; ++i) {
    addRange(fwd, static_cast<int64_t>(i), static_cast<int64_t>(n) - 1, extraAt[i]);
    addRange(bwd, static_cast<int64_t>(i), static_cast<int64_t>(n) - 1, extraAt[i]);
    m.tapeBytes = saturatingAdd(m.tapeBytes, extraAt[i]);
  }
  std::vector<uint64_t> fwdLive = prefixSums(fwd, n), bwdLive = prefixSums(bwd, n);
  uint64_t peak = m.gradientBytes; // the end of the step: every gradient made
  for (size_t i = 0; i < n; ++i) {
    if (fwdLive[i] > peak) { peak = fwdLive[i]; m.storeAllPeakPosition = i; m.storeAllPeakInBackward = false; }
  }
  for (size_t i = n; i-- > 0;) {
    if (bwdLive[i] > peak) { peak = bwdLive[i]; m.storeAllPeakPosition = i; m.storeAllPeakInBackward = true; }
  }
  m.storeAllPeakBytes = saturatingAdd(baseResident, peak);

  // Lower bounds. Working set of one op: forward = non-resident inputs + outputs;
  // backward = its tape + adjoints of its outputs and of its gradient-taking inputs.
  std::vector<int64_t> adj(n + 1, 0);
  addGradientGroups(g, m, adj);
  std::vector<uint64_t> adjLive = prefixSums(adj, n);
  for (size_t i = 0; i < n; ++i) {
    const ir::Node& node = g.node(m.order[i]);
    uint64_t fwdSet = 0, bwdSet = saturatingAdd(savedAt[i], extraAt[i]);
    std::vector<ValueId> seen;
    auto once = [&seen](ValueId v) {
      if (std::find(seen.begin(), seen.end(), v) != seen.end()) return false;
      seen.push_back(v);
      return true;
    };
    for (ValueId in : node.inputs)
      if (in != kNone && g.value(in).kind == ValueKind::Activation && once(in)) fwdSet = saturatingAdd(fwdSet, g.value(in).bytes);
    for (ValueId out : node.outputs) fwdSet = saturatingAdd(fwdSet, g.value(out).bytes);
    fwdSet = saturatingAdd(fwdSet, ir::forwardScratchBytes(g, node));
    seen.clear();
    for (ValueId out : node.outputs)
      if (m.values[out].requiresGrad) bwdSet = saturatingAdd(bwdSet, g.value(out).bytes);
    for (ValueId in : node.inputs)
      if (in != kNone && m.values[in].requiresGrad && once(in) && m.keepsTape[m.order[i]])
        bwdSet = saturatingAdd(bwdSet, g.value(in).bytes);
    // The first forward of an op runs before any gradient exists; its backward runs with the
    // gradients of every parameter used at or after it, and its scratch and the partial
    // gradients it makes are part of it in every schedule.
    bwdSet = saturatingAdd(saturatingAdd(bwdSet, gradsLive[i]), m.backwardExtraBytes[i]);
    uint64_t ws = std::max(fwdSet, bwdSet);
    if (ws > m.maxOpWorkingSetBytes || m.maxOpWorkingSetNode == kNone) {
      m.maxOpWorkingSetBytes = ws;
      m.maxOpWorkingSetNode = m.order[i];
    }
    uint64_t adjointSet = saturatingAdd(saturatingAdd(adjLive[i], gradsLive[i]), saturatingAdd(savedAt[i], extraAt[i]));
    adjointSet = saturatingAdd(adjointSet, m.backwardExtraBytes[i]);
    if (adjointSet > m.adjointBoundBytes) {
      m.adjointBoundBytes = adjointSet;
      m.adjointBoundPosition = i;
    }
  }
  m.baseResidentBytes = baseResident;
  m.lowerBoundBytes = std::max(m.residentBytes, saturatingAdd(baseResident, std::max(m.maxOpWorkingSetBytes, m.adjointBoundBytes)));
  return m;
}

} // namespace tbp::analysis
