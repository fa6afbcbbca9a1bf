#include "tbp/schedule/ScheduleFile.h"

#include "JsonFields.h"

#include "tbp/ir/TextFormat.h"
#include "tbp/support/Bytes.h"
#include "tbp/support/Hash.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace tbp::schedule {

using nlohmann::ordered_json;

// Without constant data: `plan` imports without it, `run` and `profile` with it, and a costs
// file or schedule must match across them.
std::string fingerprint(const ir::Graph& graph) { return Hasher().add(ir::printGraph(graph, /*constantData=*/false)).hexDigest(); }

namespace {

double round6(double v) { return std::round(v * 1e6) / 1e6; }

} // namespace

std::string writeSchedule(const ScheduleFile& f) {
  ordered_json j;
  j["format"] = kFormatName;
  const bool caches = std::any_of(f.instructions.begin(), f.instructions.end(), [](const plan::Instruction& i) { return i.cache; });
  j["version"] = caches ? kFormatVersion : kFormatVersionWithoutCache;
  j["graph_fingerprint"] = f.graphFingerprint;
  j["graph"] = f.graphName;
  j["planner"] = f.planner;
  ordered_json params = ordered_json::object();
  for (const auto& [k, v] : f.plannerParams) params[k] = v;
  j["planner_params"] = params;
  j["budget_bytes"] = f.budgetBytes ? ordered_json(*f.budgetBytes) : ordered_json(nullptr);
  j["order_heuristic"] = f.orderHeuristic;
  j["order"] = f.order;
  ordered_json stages = ordered_json::array();
  for (size_t k = 0; k < f.stages.size(); ++k) {
    const StageRecord& s = f.stages[k];
    stages.push_back({{"stage", k + 1}, {"first", s.first}, {"last", s.last}, {"forward_flops", s.forwardFlops},
                      {"input_frontier_bytes", s.inputFrontierBytes}, {"tape_bytes", s.tapeBytes}});
  }
  j["stages"] = stages;
  ordered_json instrs = ordered_json::array();
  for (const plan::Instruction& i : f.instructions) instrs.push_back(plan::formatInstruction(i));
  j["instructions"] = instrs;
  j["predicted_peak_bytes"] = f.predictedPeakBytes;
  j["peak_instruction"] = f.peakInstruction;
  j["recompute_ratio"] = round6(f.recomputeRatio);
  j["forward_flops_executed"] = f.forwardFlops;
  j["resident_bytes"] = f.residentBytes;
  j["store_all_peak_bytes"] = f.storeAllPeakBytes;
  j["lower_bound_bytes"] = f.lowerBoundBytes;
  j["gap"] = f.lowerBoundBytes ? round6(static_cast<double>(f.predictedPeakBytes) / static_cast<double>(f.lowerBoundBytes) - 1.0) : 0.0;
  return j.dump(2) + "\n";
}

Expected<ScheduleFile> readSchedule(const std::string& text, const std::string& source) {
  ordered_json j;
  try {
    j = ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return badInput(source + ": not a JSON document: " + std::string(e.what()).substr(std::string(e.what()).find(']') + 2));
  }
  auto bad = [&](const std::string& what) { return badInput(source + ": " + what); };
  if (!j.is_object()) return bad("expected a JSON object");
  if (!j.contains("format") || j["format"] != kFormatName)
    return bad("not a tbp schedule: field 'format' must be \"" + std::string(kFormatName) + "\"");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int>() < kFormatVersionWithoutCache ||
      j["version"].get<int>() > kFormatVersion)
    return bad("schedule format version " + (j.contains("version") ? j["version"].dump() : std::string("(missing)")) +
               " is not supported; this tbp reads versions " + std::to_string(kFormatVersionWithoutCache) + " to " +
               std::to_string(kFormatVersion));
  ScheduleFile f;
  try {
    using namespace json;
    f.graphFingerprint = stringField(j, "graph_fingerprint");
    f.graphName = j.contains("graph") ? stringField(j, "graph") : std::string();
    f.planner = stringField(j, "planner");
    const ordered_json& params = member(j, "planner_params", "");
    if (!params.is_object()) throw FieldError("'planner_params' must be an object");
    for (const auto& [k, v] : params.items()) f.plannerParams.emplace_back(k, stringField(params, k, "planner_params"));
    if (!member(j, "budget_bytes", "").is_null()) f.budgetBytes = unsignedField(j, "budget_bytes");
    f.orderHeuristic = stringField(j, "order_heuristic");
    const ordered_json& order = arrayField(j, "order");
    for (size_t i = 0; i < order.size(); ++i)
      f.order.push_back(static_cast<uint32_t>(unsignedValue(order[i], "order[" + std::to_string(i) + "]", UINT32_MAX)));
    const ordered_json& stages = arrayField(j, "stages");
    for (size_t i = 0; i < stages.size(); ++i) {
      const std::string where = "stages[" + std::to_string(i) + "]";
      const ordered_json& st = stages[i];
      f.stages.push_back({static_cast<uint32_t>(unsignedField(st, "first", where, UINT32_MAX)),
                          static_cast<uint32_t>(unsignedField(st, "last", where, UINT32_MAX)), unsignedField(st, "forward_flops", where),
                          unsignedField(st, "input_frontier_bytes", where), unsignedField(st, "tape_bytes", where)});
    }
    const ordered_json& instrs = arrayField(j, "instructions");
    for (size_t i = 0; i < instrs.size(); ++i) {
      const std::string where = "instructions[" + std::to_string(i) + "]";
      if (!instrs[i].is_string()) return bad(where + ": must be a string, not " + instrs[i].dump());
      Expected<plan::Instruction> instr = plan::parseInstruction(instrs[i].get<std::string>());
      if (!instr) return bad(where + ": " + instr.status().message());
      if (instr->cache && j["version"].get<int>() < kFormatVersion)
        return bad(where + ": a forward that caches needs schedule format version " + std::to_string(kFormatVersion));
      f.instructions.push_back(*instr);
    }
    f.predictedPeakBytes = unsignedField(j, "predicted_peak_bytes");
    f.peakInstruction = unsignedField(j, "peak_instruction");
    f.recomputeRatio = numberField(j, "recompute_ratio");
    f.forwardFlops = unsignedField(j, "forward_flops_executed");
    f.residentBytes = unsignedField(j, "resident_bytes");
    f.storeAllPeakBytes = unsignedField(j, "store_all_peak_bytes");
    f.lowerBoundBytes = unsignedField(j, "lower_bound_bytes");
  } catch (const json::FieldError& e) {
    return bad(std::string("malformed schedule: ") + e.what());
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    return bad("malformed schedule: " + what.substr(what.find(']') + 2));
  }
  return f;
}

Expected<plan::StageModel> stageModelFor(const ScheduleFile& f, const ir::Graph& graph, const std::string& source,
                                         const plan::NodeCosts& costs) {
  std::string actual = fingerprint(graph);
  if (f.graphFingerprint != actual)
    return badInput(source + ": the schedule was planned for another graph (fingerprint " + f.graphFingerprint +
                    ", this model " + actual + "); plan it again, or pass the --dim/--loss/--freeze it was planned with");
  const size_t n = graph.numNodes();
  if (f.order.size() != n)
    return badInput(source + ": 'order' lists " + std::to_string(f.order.size()) + " nodes, the graph has " + std::to_string(n));
  std::vector<int64_t> pos(n, -1);
  for (size_t p = 0; p < n; ++p) {
    if (f.order[p] >= n || pos[f.order[p]] >= 0)
      return badInput(source + ": 'order' position " + std::to_string(p) + " names node " + std::to_string(f.order[p]) +
                      ", which is out of range or repeated");
    pos[f.order[p]] = static_cast<int64_t>(p);
  }
  for (ir::NodeId id = 0; id < n; ++id)
    for (ir::ValueId in : graph.node(id).inputs)
      if (in != ir::kNone && graph.value(in).producer != ir::kNone && pos[graph.value(in).producer] >= pos[id])
        return badInput(source + ": 'order' is not topological: node " + std::to_string(id) + " runs before its input's producer");
  std::vector<uint32_t> cuts;
  uint32_t expect = 0;
  for (size_t k = 0; k < f.stages.size(); ++k) {
    const StageRecord& s = f.stages[k];
    if (s.first != expect || s.last < s.first || s.last >= n)
      return badInput(source + ": stage " + std::to_string(k + 1) + " covers positions [" + std::to_string(s.first) + ", " +
                      std::to_string(s.last) + "], stages must tile the order without gaps");
    if (k > 0) cuts.push_back(s.first);
    expect = s.last + 1;
  }
  if (expect != n) return badInput(source + ": the stages cover " + std::to_string(expect) + " of " + std::to_string(n) + " positions");
  std::vector<ir::NodeId> order(f.order.begin(), f.order.end());
  plan::StageModel model = plan::buildStageModel(graph, order, cuts, costs);
  // Planned with an optimizer (`tbp plan --optimizer adam`): its state is part of the step.
  const std::string optimizer = plannerParam(f, "optimizer", "none");
  if (!plan::isOptimizerName(optimizer))
    return badInput(source + ": planner_params.optimizer '" + optimizer + "' is not one of none, sgd, adam");
  plan::addOptimizer(model, plan::optimizerMemory(graph, optimizer));
  return model;
}

std::string plannerParam(const ScheduleFile& file, const std::string& key, const std::string& otherwise) {
  for (const auto& [k, v] : file.plannerParams)
    if (k == key) return v;
  return otherwise;
}

Status validateSchedule(const ScheduleFile& f, const ir::Graph& graph, const std::string& source, std::string* note) {
  Expected<plan::StageModel> model = stageModelFor(f, graph, source);
  if (!model) return model.status();
  Expected<plan::SimResult> sim = plan::simulate(*model, f.instructions);
  if (!sim) return badInput(source + ": invalid instruction stream: " + sim.status().message());
  auto recorded = [&f](const plan::SimResult& r) {
    return r.peakBytes == f.predictedPeakBytes && std::fabs(r.recomputeRatio - f.recomputeRatio) <= 1e-5;
  };
  if (!recorded(*sim)) {
    // A file written before elided forwards records the same stream's figures without them.
    Expected<plan::SimResult> before = plan::simulate(*model, f.instructions, /*elide=*/false);
    if (!before || !recorded(*before)) {
      if (sim->peakBytes != f.predictedPeakBytes)
        return badInput(source + ": 'predicted_peak_bytes' says " + std::to_string(f.predictedPeakBytes) +
                        " but the stream simulates to " + std::to_string(sim->peakBytes) + "; the file was edited");
      return badInput(source + ": 'recompute_ratio' says " + formatFixed(f.recomputeRatio, 6) + " but the stream simulates to " +
                      formatFixed(sim->recomputeRatio, 6) + "; the file was edited");
    }
    if (note)
      *note = source + ": written by a tbp whose forwards before a backward did not elide contractions; it runs as it is, "
                       "simulated now at peak " + std::to_string(sim->peakBytes) + " bytes (file: " + std::to_string(f.predictedPeakBytes) +
              "), recompute ratio " + formatFixed(sim->recomputeRatio, 6) + " (file: " + formatFixed(f.recomputeRatio, 6) + ")";
  }
  if (f.budgetBytes && *f.budgetBytes < sim->peakBytes)
    return badInput(source + ": the budget " + std::to_string(*f.budgetBytes) + " bytes is below the predicted peak " +
                    std::to_string(sim->peakBytes) + " bytes");
  return Status::ok();
}

Comparison compareSchedules(const ScheduleFile& a, const ScheduleFile& b, std::optional<double> maxPeak, std::optional<double> maxRecompute) {
  Comparison c;
  c.peakA = a.predictedPeakBytes;
  c.peakB = b.predictedPeakBytes;
  c.recomputeA = a.recomputeRatio;
  c.recomputeB = b.recomputeRatio;
  c.stagesA = a.stages.size();
  c.stagesB = b.stages.size();
  c.instructionsA = a.instructions.size();
  c.instructionsB = b.instructions.size();
  c.plannerA = a.planner;
  c.plannerB = b.planner;
  c.budgetA = a.budgetBytes;
  c.budgetB = b.budgetBytes;
  c.sameGraph = a.graphFingerprint == b.graphFingerprint;
  c.peakChangePct = c.peakA ? (static_cast<double>(c.peakB) - static_cast<double>(c.peakA)) / static_cast<double>(c.peakA) * 100 : 0;
  c.recomputeChangePct = c.recomputeA > 0 ? (c.recomputeB - c.recomputeA) / c.recomputeA * 100 : 0;
  size_t common = std::min(c.instructionsA, c.instructionsB);
  for (size_t i = 0; i < common; ++i) c.instructionsDiffering += a.instructions[i] != b.instructions[i];
  c.instructionsDiffering += std::max(c.instructionsA, c.instructionsB) - common;
  if (maxPeak && c.peakChangePct > *maxPeak)
    c.crossed.push_back("predicted peak rose " + formatFixed(c.peakChangePct, 2) + "%, more than the allowed " + formatFixed(*maxPeak, 2) + "%");
  if (maxRecompute && c.recomputeChangePct > *maxRecompute)
    c.crossed.push_back("recompute ratio rose " + formatFixed(c.recomputeChangePct, 2) + "%, more than the allowed " + formatFixed(*maxRecompute, 2) + "%");
  return c;
}

std::string renderComparison(const Comparison& c, const std::string& format, const std::string& nameA, const std::string& nameB) {
  auto budget = [](const std::optional<uint64_t>& b) { return b ? formatBytes(*b) : std::string("none"); };
  auto signedPct = [](double v) { return (v > 0 ? "+" : "") + formatFixed(v, 2) + "%"; };
  if (format == "json") {
    ordered_json j;
    j["a"] = nameA;
    j["b"] = nameB;
    j["same_graph"] = c.sameGraph;
    j["planner"] = {{"a", c.plannerA}, {"b", c.plannerB}};
    j["budget_bytes"] = {{"a", c.budgetA ? ordered_json(*c.budgetA) : ordered_json(nullptr)}, {"b", c.budgetB ? ordered_json(*c.budgetB) : ordered_json(nullptr)}};
    j["predicted_peak_bytes"] = {{"a", c.peakA}, {"b", c.peakB}, {"change_pct", round6(c.peakChangePct)}};
    j["recompute_ratio"] = {{"a", round6(c.recomputeA)}, {"b", round6(c.recomputeB)}, {"change_pct", round6(c.recomputeChangePct)}};
    j["stages"] = {{"a", c.stagesA}, {"b", c.stagesB}};
    j["instructions"] = {{"a", c.instructionsA}, {"b", c.instructionsB}, {"differing", c.instructionsDiffering}};
    j["thresholds_crossed"] = c.crossed;
    j["regression"] = !c.crossed.empty();
    return j.dump(2) + "\n";
  }
  std::ostringstream o;
  if (format == "markdown") {
    o << "### tbp schedule comparison\n\n";
    o << "| | " << nameA << " | " << nameB << " | change |\n|---|---:|---:|---:|\n";
    o << "| planner | " << c.plannerA << " | " << c.plannerB << " | |\n";
    o << "| budget | " << budget(c.budgetA) << " | " << budget(c.budgetB) << " | |\n";
    o << "| predicted peak | " << formatBytes(c.peakA) << " | " << formatBytes(c.peakB) << " | " << signedPct(c.peakChangePct) << " |\n";
    o << "| recompute ratio | " << formatFixed(c.recomputeA, 3) << " | " << formatFixed(c.recomputeB, 3) << " | " << signedPct(c.recomputeChangePct) << " |\n";
    o << "| stages | " << c.stagesA << " | " << c.stagesB << " | |\n";
    o << "| instructions | " << c.instructionsA << " | " << c.instructionsB << " | " << c.instructionsDiffering << " differ |\n\n";
    if (!c.sameGraph) o << "> **Note:** the two schedules were planned for different graphs.\n\n";
    if (c.crossed.empty()) o << "**No regression.**\n";
    else for (const std::string& s : c.crossed) o << "**Regression:** " << s << "\n";
    return o.str();
  }
  o << "compare " << nameA << " -> " << nameB << (c.sameGraph ? "" : " (different graphs)") << "\n";
  o << "  planner          " << c.plannerA << " -> " << c.plannerB << "\n";
  o << "  budget           " << budget(c.budgetA) << " -> " << budget(c.budgetB) << "\n";
  o << "  predicted peak   " << formatBytes(c.peakA) << " -> " << formatBytes(c.peakB) << " (" << signedPct(c.peakChangePct) << ")\n";
  o << "  recompute ratio  " << formatFixed(c.recomputeA, 3) << " -> " << formatFixed(c.recomputeB, 3) << " (" << signedPct(c.recomputeChangePct) << ")\n";
  o << "  stages           " << c.stagesA << " -> " << c.stagesB << "\n";
  o << "  instructions     " << c.instructionsA << " -> " << c.instructionsB << " (" << c.instructionsDiffering << " differ)\n";
  if (c.crossed.empty()) o << "no regression\n";
  else for (const std::string& s : c.crossed) o << "regression: " << s << "\n";
  return o.str();
}

} // namespace tbp::schedule
