#include "tbp/analysis/Report.h"

#include "tbp/ir/OpRules.h"
#include "tbp/support/Bytes.h"

#include <algorithm>
#include <map>

namespace tbp::analysis {

using ir::Graph;
using ir::kNone;
using ir::ValueId;
using ir::ValueKind;

namespace {

Distribution distribution(std::vector<std::pair<uint64_t, ValueId>> samples, const Graph& g,
                          uint64_t threshold) {
  Distribution d;
  d.threshold = threshold;
  if (samples.empty()) return d;
  std::stable_sort(samples.begin(), samples.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  long double sum = 0;
  for (const auto& s : samples) {
    sum += s.first;
    if (s.first > threshold) ++d.countAbove;
  }
  d.mean = static_cast<double>(sum / samples.size());
  d.max = samples.back().first;
  // First value (by id) attaining the max, for a stable name.
  ValueId best = samples.back().second;
  for (const auto& s : samples)
    if (s.first == d.max) best = std::min(best, s.second);
  d.maxValue = g.value(best).name;
  d.p50 = samples[(samples.size() - 1) / 2].first;
  d.p90 = samples[(samples.size() - 1) * 9 / 10].first;
  return d;
}

std::string pct(double fraction) { return formatFixed(100.0 * fraction, 1) + "%"; }

Compressibility judge(const AnalysisReport& r) {
  Compressibility c;
  const MemoryAnalysis& m = r.memory;
  const uint64_t resident = m.residentBytes;
  // Parameter gradients appear during the backward sweep: the part that a schedule can move
  // is everything above the parameters, constants and inputs.
  const uint64_t dynamicPeak = m.storeAllPeakBytes - m.baseResidentBytes;
  const uint64_t dynamicBound = std::max<uint64_t>(m.lowerBoundBytes - m.baseResidentBytes, 1);
  c.potential = static_cast<double>(dynamicPeak) / static_cast<double>(dynamicBound);
  // The frontier includes graph inputs, so compare it with activations plus inputs.
  const uint64_t tensorBytes = checkedAdd(r.activationBytes, r.inputBytes).value_or(UINT64_MAX);
  const double frontierShare = tensorBytes ? static_cast<double>(m.frontier.peakBytes) / static_cast<double>(tensorBytes) : 1.0;
  const double residentShare = m.storeAllPeakBytes ? static_cast<double>(resident) / static_cast<double>(m.storeAllPeakBytes) : 1.0;
  // The whole step can shrink at most to the lower bound: a graph whose memory is mostly
  // resident weights gains little however compressible its activations are.
  const double stepSaving = m.storeAllPeakBytes ? 1.0 - static_cast<double>(m.lowerBoundBytes) / static_cast<double>(m.storeAllPeakBytes) : 0.0;

  if (c.potential >= 4.0 && frontierShare <= 0.25 && stepSaving >= 0.30) c.verdict = "highly compressible";
  else if (c.potential >= 2.0 && stepSaving >= 0.15) c.verdict = "compressible";
  else if (c.potential >= 1.25 && stepSaving >= 0.05) c.verdict = "weakly compressible";
  else c.verdict = "not compressible";

  c.reasons.push_back("memory above the parameters, constants and inputs could shrink up to " + formatFixed(c.potential, 2) +
                      "x: store-all needs " + formatBytes(dynamicPeak) + " beyond them, the lower bound " +
                      formatBytes(dynamicBound));
  c.reasons.push_back("at best the whole step's peak drops by " + pct(stepSaving) + ", from " +
                      formatBytes(m.storeAllPeakBytes) + " to the lower bound " + formatBytes(m.lowerBoundBytes));
  c.reasons.push_back("the widest cut frontier holds " + pct(frontierShare) + " of all activation and input bytes (" +
                      formatBytes(m.frontier.peakBytes) + " of " + formatBytes(tensorBytes) + ")" +
                      (frontierShare <= 0.25 ? ", so checkpoints at cuts are cheap" : ", so every checkpoint is expensive"));
  if (r.skipLength.countAbove > 0)
    c.reasons.push_back(std::to_string(r.skipLength.countAbove) + " long skip" + (r.skipLength.countAbove == 1 ? "" : "s") +
                        " (spanning more than " + std::to_string(r.skipLength.threshold) +
                        " positions, longest " + std::to_string(r.skipLength.max) + " from '" + r.skipLength.maxValue +
                        "') stay live across many cuts and raise every frontier they cross");
  else
    c.reasons.push_back("no long skips: values die soon after they are made (chain-like)");
  if (residentShare >= 0.5)
    c.reasons.push_back("resident memory (parameters, gradients, constants, inputs) is " + pct(residentShare) +
                        " of the store-all peak; rematerialization cannot reduce it");
  if (r.nodes < 8) c.reasons.push_back("only " + std::to_string(r.nodes) + " nodes: too shallow to split into many stages");
  return c;
}

} // namespace

AnalysisReport analyzeGraph(const Graph& g, const AnalyzeOptions& options) {
  AnalysisReport r;
  r.graphName = g.name();
  r.nodes = g.numNodes();
  r.values = g.numValues();

  std::map<std::string, size_t> ops;
  for (const ir::Node& n : g.nodes()) {
    ++ops[ir::opName(n.op)];
    r.forwardFlops = checkedAdd(r.forwardFlops, ir::estimateFlops(g, n)).value_or(UINT64_MAX);
  }
  r.opCounts.assign(ops.begin(), ops.end());
  std::stable_sort(r.opCounts.begin(), r.opCounts.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });

  std::vector<ValueId> acts;
  for (ValueId v = 0; v < g.numValues(); ++v) {
    const ir::Value& val = g.value(v);
    switch (val.kind) {
    case ValueKind::Input: ++r.inputs; r.inputBytes = saturatingAdd(r.inputBytes, val.bytes); break;
    case ValueKind::Parameter: ++r.parameters; r.parameterBytes = saturatingAdd(r.parameterBytes, val.bytes); break;
    case ValueKind::Constant: ++r.constants; r.constantBytes = saturatingAdd(r.constantBytes, val.bytes); break;
    case ValueKind::Activation: ++r.activations; r.activationBytes = saturatingAdd(r.activationBytes, val.bytes); acts.push_back(v); break;
    }
  }
  std::stable_sort(acts.begin(), acts.end(), [&](ValueId a, ValueId b) { return g.value(a).bytes > g.value(b).bytes; });
  for (size_t i = 0; i < acts.size() && i < options.largestTensors; ++i) {
    const ir::Value& v = g.value(acts[i]);
    r.largestTensors.push_back({v.name, ir::opName(g.node(v.producer).op), v.type.str(), v.bytes});
  }

  // Orders side by side; keep the chosen one's full analysis.
  std::optional<MemoryAnalysis> chosen;
  for (OrderHeuristic h : kAllOrders) {
    MemoryAnalysis m = analyzeMemory(g, computeOrder(g, h));
    r.orders.push_back({h, m.frontier.peakBytes, m.frontier.peakPosition, m.frontier.meanBytes,
                        m.storeAllPeakBytes, m.lowerBoundBytes});
    bool take;
    if (options.order) take = *options.order == h;
    else take = !chosen || m.storeAllPeakBytes < chosen->storeAllPeakBytes ||
                (m.storeAllPeakBytes == chosen->storeAllPeakBytes && m.frontier.peakBytes < chosen->frontier.peakBytes);
    if (take) {
      chosen = std::move(m);
      r.chosen = h;
    }
  }
  r.memory = std::move(*chosen);

  // Fan-out and skip lengths under the chosen order.
  std::vector<std::pair<uint64_t, ValueId>> fan, skip;
  for (ValueId v = 0; v < g.numValues(); ++v) {
    const ir::Value& val = g.value(v);
    if (val.kind != ValueKind::Activation && val.kind != ValueKind::Input) continue;
    if (!val.users.empty()) fan.push_back({val.users.size(), v});
    const ValueLiveness& l = r.memory.values[v];
    if (l.lastUsePos >= 0) skip.push_back({static_cast<uint64_t>(l.lastUsePos - l.producerPos), v});
  }
  r.fanOut = distribution(std::move(fan), g, 1);
  r.skipLength = distribution(std::move(skip), g, std::max<uint64_t>(8, r.nodes / 10));
  r.compressibility = judge(r);
  return r;
}

} // namespace tbp::analysis
