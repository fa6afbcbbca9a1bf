// `tbp analyze`: the analysis report as text, JSON and Graphviz DOT.

#include "Commands.h"

#include "tbp/analysis/Dot.h"
#include "tbp/analysis/Report.h"
#include "tbp/ir/Verify.h"
#include "tbp/support/Bytes.h"

#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace tbp::driver {

namespace {

using analysis::AnalysisReport;
using nlohmann::ordered_json;

struct AnalyzeArgs {
  ModelOptions model;
  std::string format = "text";
  std::string order;
  std::string dot;
};

/// The JSON document; its keys are documented in docs/analysis.md and kept stable.
ordered_json toJson(const ir::Graph& g, const AnalysisReport& r, const std::string& source) {
  const analysis::MemoryAnalysis& m = r.memory;
  auto nodeName = [&](size_t position) {
    return position < m.order.size() ? g.node(m.order[position]).name : std::string();
  };
  ordered_json j;
  j["format"] = "tbp.analysis";
  j["version"] = 1;
  j["model"] = source;
  j["graph"] = r.graphName;
  j["nodes"] = r.nodes;
  j["values"] = r.values;
  j["value_counts"] = {{"inputs", r.inputs}, {"parameters", r.parameters}, {"constants", r.constants}, {"activations", r.activations}};
  ordered_json ops = ordered_json::object();
  for (const auto& [op, count] : r.opCounts) ops[op] = count;
  j["op_counts"] = ops;
  j["parameter_bytes"] = r.parameterBytes;
  j["constant_bytes"] = r.constantBytes;
  j["input_bytes"] = r.inputBytes;
  j["activation_bytes"] = r.activationBytes;
  j["forward_flops"] = r.forwardFlops;
  j["resident_bytes"] = m.residentBytes;
  j["tape_bytes"] = m.tapeBytes;
  j["store_all_peak_bytes"] = m.storeAllPeakBytes;
  j["store_all_peak"] = {{"phase", m.storeAllPeakInBackward ? "backward" : "forward"},
                         {"position", m.storeAllPeakPosition},
                         {"node", nodeName(m.storeAllPeakPosition)}};
  j["lower_bound_bytes"] = m.lowerBoundBytes;
  j["lower_bounds"] = {
      {"resident_bytes", m.residentBytes},
      {"max_op_working_set_bytes", m.baseResidentBytes + m.maxOpWorkingSetBytes},
      {"max_op_working_set_node", m.maxOpWorkingSetNode == ir::kNone ? "" : g.node(m.maxOpWorkingSetNode).name},
      {"adjoint_frontier_bytes", m.baseResidentBytes + m.adjointBoundBytes},
      {"adjoint_frontier_position", m.adjointBoundPosition}};
  ordered_json tensors = ordered_json::array();
  for (const auto& t : r.largestTensors)
    tensors.push_back({{"name", t.name}, {"op", t.op}, {"type", t.type}, {"bytes", t.bytes}});
  j["largest_tensors"] = tensors;
  ordered_json orders = ordered_json::array();
  for (const auto& o : r.orders)
    orders.push_back({{"name", analysis::orderName(o.heuristic)},
                      {"frontier_peak_bytes", o.peakBytes},
                      {"frontier_peak_position", o.peakPosition},
                      {"frontier_mean_bytes", static_cast<uint64_t>(std::llround(o.meanBytes))},
                      {"store_all_peak_bytes", o.storeAllPeakBytes},
                      {"lower_bound_bytes", o.lowerBoundBytes}});
  j["orders"] = orders;
  j["order"] = analysis::orderName(r.chosen);
  j["frontier"] = {{"peak_bytes", m.frontier.peakBytes},
                   {"peak_position", m.frontier.peakPosition},
                   {"peak_node", nodeName(m.frontier.peakPosition)},
                   {"mean_bytes", static_cast<uint64_t>(std::llround(m.frontier.meanBytes))},
                   {"profile", m.frontier.bytes}};
  auto dist = [](const analysis::Distribution& d) {
    return ordered_json{{"max", d.max}, {"max_value", d.maxValue}, {"mean", std::round(d.mean * 1000) / 1000},
                        {"p50", d.p50}, {"p90", d.p90}, {"threshold", d.threshold}, {"count_above", d.countAbove}};
  };
  j["fan_out"] = dist(r.fanOut);
  j["skip_length"] = dist(r.skipLength);
  j["compressibility"] = {{"verdict", r.compressibility.verdict},
                          {"potential", std::round(r.compressibility.potential * 1000) / 1000},
                          {"reasons", r.compressibility.reasons}};
  return j;
}

/// A one-line sparkline of the profile, downsampled to `width` columns by max.
std::string sparkline(const std::vector<uint64_t>& bytes, size_t width) {
  static const char* const kBars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  if (bytes.empty()) return {};
  uint64_t peak = *std::max_element(bytes.begin(), bytes.end());
  size_t cols = std::min(width, bytes.size());
  std::string out;
  for (size_t c = 0; c < cols; ++c) {
    size_t from = c * bytes.size() / cols, to = std::max(from + 1, (c + 1) * bytes.size() / cols);
    uint64_t v = *std::max_element(bytes.begin() + static_cast<long>(from), bytes.begin() + static_cast<long>(to));
    size_t level = peak == 0 ? 0 : static_cast<size_t>(std::min<double>(7.0, std::floor(8.0 * static_cast<double>(v) / static_cast<double>(peak + 1))));
    out += kBars[level];
  }
  return out;
}

std::string flops(uint64_t f) {
  static const char* const kUnits[] = {"FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP"};
  double v = static_cast<double>(f);
  int u = 0;
  while (v >= 1000.0 && u < 5) { v /= 1000.0; ++u; }
  return (u == 0 ? std::to_string(f) : formatFixed(v, 2)) + " " + kUnits[u];
}

std::string pad(const std::string& s, size_t width) {
  // Width in code points is not needed here: only ASCII is padded.
  return s.size() >= width ? s + " " : s + std::string(width - s.size(), ' ');
}

std::string toText(const ir::Graph& g, const AnalysisReport& r, const std::string& source) {
  const analysis::MemoryAnalysis& m = r.memory;
  auto where = [&](size_t position) {
    if (position >= m.order.size()) return std::string("the end");
    return "position " + std::to_string(position) + ", " + ir::describeNode(g, m.order[position]);
  };
  std::ostringstream o;
  o << "model   " << source << " (graph '" << r.graphName << "')\n";
  o << "nodes   " << r.nodes << "; values " << r.values << ": " << r.inputs << " inputs, " << r.parameters
    << " parameters, " << r.constants << " constants, " << r.activations << " activations\n";
  o << "ops     ";
  for (size_t i = 0; i < r.opCounts.size(); ++i) o << (i ? ", " : "") << r.opCounts[i].first << " " << r.opCounts[i].second;
  o << "\nflops   " << flops(r.forwardFlops) << " per forward pass (estimate)\n\n";

  o << "memory\n";
  o << "  parameters          " << formatBytes(r.parameterBytes) << " (+ the same again for their gradients)\n";
  o << "  constants, inputs   " << formatBytes(r.constantBytes) << ", " << formatBytes(r.inputBytes) << "\n";
  o << "  activations         " << formatBytes(r.activationBytes) << " produced in one forward pass\n";
  o << "  store-all tape      " << formatBytes(m.tapeBytes) << " kept for the backward pass\n";
  o << "  store-all peak      " << formatBytes(m.storeAllPeakBytes) << " (" << m.storeAllPeakBytes << " bytes) in the "
    << (m.storeAllPeakInBackward ? "backward" : "forward") << " pass at " << where(m.storeAllPeakPosition) << "\n";
  o << "  lower bound         " << formatBytes(m.lowerBoundBytes) << " (" << m.lowerBoundBytes << " bytes), the best any schedule in this order can do\n";
  o << "    resident            " << formatBytes(m.residentBytes) << " parameters, gradients, constants and inputs\n";
  o << "    largest op          " << formatBytes(m.baseResidentBytes + m.maxOpWorkingSetBytes) << " resident (gradients made so far) + "
    << (m.maxOpWorkingSetNode == ir::kNone ? std::string("-") : ir::describeNode(g, m.maxOpWorkingSetNode)) << "\n";
  o << "    adjoint frontier    " << formatBytes(m.baseResidentBytes + m.adjointBoundBytes) << " resident (gradients made so far) + live gradients at "
    << where(m.adjointBoundPosition) << "\n\n";

  o << "largest tensors\n";
  for (const auto& t : r.largestTensors)
    o << "  " << pad(formatBytes(t.bytes), 12) << pad(t.type, 22) << pad(t.op, 20) << t.name << "\n";
  o << "\norders (live frontier of the forward pass; * = used below)\n";
  o << "  order   frontier peak   at position   frontier mean   store-all peak   lower bound\n";
  for (const auto& s : r.orders) {
    std::string name = std::string(analysis::orderName(s.heuristic)) + (s.heuristic == r.chosen ? " *" : "");
    o << "  " << pad(name, 8) << pad(formatBytes(s.peakBytes), 16) << pad(std::to_string(s.peakPosition), 14)
      << pad(formatBytes(static_cast<uint64_t>(std::llround(s.meanBytes))), 16) << pad(formatBytes(s.storeAllPeakBytes), 17)
      << formatBytes(s.lowerBoundBytes) << "\n";
  }
  o << "\nfrontier profile (" << analysis::orderName(r.chosen) << " order): peak " << formatBytes(m.frontier.peakBytes)
    << " at " << where(m.frontier.peakPosition) << ", mean " << formatBytes(static_cast<uint64_t>(std::llround(m.frontier.meanBytes))) << "\n";
  o << "  " << sparkline(m.frontier.bytes, 64) << "\n\n";

  o << "structure\n";
  o << "  fan-out       max " << r.fanOut.max << " ('" << r.fanOut.maxValue << "'), mean " << formatFixed(r.fanOut.mean, 2)
    << ", " << r.fanOut.countAbove << " values used more than once\n";
  o << "  skip length   max " << r.skipLength.max << " ('" << r.skipLength.maxValue << "'), mean " << formatFixed(r.skipLength.mean, 2)
    << ", p50 " << r.skipLength.p50 << ", p90 " << r.skipLength.p90 << ", " << r.skipLength.countAbove << " longer than "
    << r.skipLength.threshold << "\n\n";
  o << "height compressibility: " << r.compressibility.verdict << " (potential " << formatFixed(r.compressibility.potential, 2) << "x)\n";
  for (const auto& reason : r.compressibility.reasons) o << "  - " << reason << "\n";
  return o.str();
}

int runAnalyze(const AnalyzeArgs& args, Io& io) {
  std::optional<analysis::OrderHeuristic> order;
  if (!args.order.empty()) order = analysis::parseOrder(args.order);
  auto start = std::chrono::steady_clock::now();
  if (Status s = checkNotTheModel("--dot", args.dot, args.model); !s) return reportError(io, s);
  Expected<ir::Graph> graph = loadModel(args.model, /*withData=*/false);
  if (!graph) return reportError(io, graph.status());
  auto imported = std::chrono::steady_clock::now();
  spdlog::info("imported {}: {} nodes, {} values in {:.3f} s", args.model.name(), graph->numNodes(), graph->numValues(),
               std::chrono::duration<double>(imported - start).count());
  analysis::AnalyzeOptions options;
  options.order = order;
  AnalysisReport report = analysis::analyzeGraph(*graph, options);
  spdlog::info("analysed in {:.3f} s", std::chrono::duration<double>(std::chrono::steady_clock::now() - imported).count());
  if (!args.dot.empty()) {
    Status s = writeOutput(io, args.dot, analysis::renderDot(*graph));
    if (!s) return reportError(io, s);
  }
  if (args.dot == "-") return 0; // the DOT went to stdout; do not mix the report into it
  if (args.format == "json") io.out << toJson(*graph, report, args.model.name()).dump(2) << "\n";
  else io.out << toText(*graph, report, args.model.name());
  return 0;
}

} // namespace

std::function<int(Io&)> setupAnalyze(CLI::App& app) {
  auto args = std::make_shared<AnalyzeArgs>();
  addModelOptions(app, args->model);
  app.add_option("--format", args->format, "output format: text|json")->check(CLI::IsMember({"text", "json"}));
  app.add_option("--order", args->order, "order to report in detail: file|greedy|dfs (default: best store-all peak)")
      ->check(CLI::IsMember({"file", "greedy", "dfs"}));
  app.add_option("--dot", args->dot, "write the graph as Graphviz DOT, shaded by activation size ('-': stdout, instead of the report)")
      ->type_name("FILE")
      ->check(outputFile());
  return [args](Io& io) { return runAnalyze(*args, io); };
}

} // namespace tbp::driver
