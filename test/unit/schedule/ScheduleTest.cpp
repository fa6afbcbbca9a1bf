#include "../TestGraphs.h"

#include "tbp/analysis/Order.h"
#include "tbp/schedule/CostsFile.h"
#include "tbp/schedule/ScheduleFile.h"

#include <doctest/doctest.h>

using namespace tbp;
using namespace tbp::schedule;

namespace {

struct Fixture {
  ir::Graph graph;
  plan::StageModel model;
  ScheduleFile file;

  explicit Fixture(plan::PlannerKind kind = plan::PlannerKind::Optimal, int percent = 70, ir::Graph g = tbp::testing::randomDag(11, 40))
      : graph(std::move(g)) {
    std::vector<ir::NodeId> order = analysis::computeOrder(graph, analysis::OrderHeuristic::Greedy);
    model = plan::buildStageModel(graph, order, plan::chooseCuts(graph, order, 16));
    uint64_t storeAll = plan::simulate(model, plan::storeAllStream(model.size()))->peakBytes;
    uint64_t budget = model.residentBytes + (storeAll - model.residentBytes) * static_cast<uint64_t>(percent) / 100;
    Expected<plan::Plan> p = plan::planForBudget(model, kind, budget);
    REQUIRE_MESSAGE(p.hasValue(), p.status().message());
    file.graphFingerprint = fingerprint(graph);
    file.graphName = graph.name();
    file.planner = plan::plannerName(kind);
    file.plannerParams = p->chosen.params;
    file.budgetBytes = budget;
    file.orderHeuristic = "greedy";
    file.order.assign(order.begin(), order.end());
    for (const plan::Stage& s : model.stages) file.stages.push_back({s.first, s.last, s.forwardFlops, s.inputFrontierBytes, s.tapeBytes});
    file.instructions = p->chosen.stream;
    file.predictedPeakBytes = p->chosen.sim.peakBytes;
    file.peakInstruction = p->chosen.sim.peakInstruction + 1;
    file.recomputeRatio = p->chosen.sim.recomputeRatio;
    file.forwardFlops = p->chosen.sim.forwardFlops;
    file.residentBytes = model.residentBytes;
    file.storeAllPeakBytes = storeAll;
    file.lowerBoundBytes = model.residentBytes;
  }
};

} // namespace

TEST_CASE("schedule files round-trip byte for byte and validate") {
  Fixture f;
  std::string text = writeSchedule(f.file);
  Expected<ScheduleFile> back = readSchedule(text, "p.json");
  REQUIRE_MESSAGE(back.hasValue(), back.status().message());
  CHECK(writeSchedule(*back) == text);
  CHECK(back->instructions == f.file.instructions);
  CHECK(validateSchedule(*back, f.graph, "p.json").isOk());
}

TEST_CASE("schedule files refuse numbers of the wrong kind and name the member") {
  Fixture f;
  const std::string text = writeSchedule(f.file);
  auto edited = [&text](const std::string& key, const std::string& to) {
    // Replaces the value of the first `"key": `: a scalar up to the end of its line (less a
    // comma), an array or object up to its closing bracket.
    std::string t = text;
    const size_t at = t.find("\"" + key + "\": ");
    REQUIRE(at != std::string::npos);
    const size_t from = at + key.size() + 4;
    size_t end = from;
    if (t[from] == '[' || t[from] == '{') {
      int depth = 0;
      do depth += t[end] == '[' || t[end] == '{' ? 1 : t[end] == ']' || t[end] == '}' ? -1 : 0;
      while (++end < t.size() && depth > 0);
    } else {
      end = t.find('\n', from);
      if (t[end - 1] == ',') --end;
    }
    return t.replace(from, end - from, to);
  };
  auto refusedWith = [](const std::string& t, const std::string& expect) {
    Expected<ScheduleFile> r = readSchedule(t, "p.json");
    CAPTURE(expect);
    REQUIRE_FALSE(r.hasValue());
    CHECK(r.status().code() == ErrorCode::BadInput);
    CHECK(r.status().message().find(expect) != std::string::npos);
  };
  // Each was read as another number before (2026-12-05): -1 as 16 EiB, 1e30 as 0, 1.5 as 1.
  refusedWith(edited("budget_bytes", "-1"), "'budget_bytes' must be an integer from 0 to");
  refusedWith(edited("budget_bytes", "1e30"), "'budget_bytes' must be an integer from 0 to");
  refusedWith(edited("predicted_peak_bytes", "1.5"), "'predicted_peak_bytes' must be an integer");
  refusedWith(edited("recompute_ratio", "\"x\""), "'recompute_ratio' must be a finite number");
  refusedWith(edited("instructions", "null"), "'instructions' must be an array");
  refusedWith(edited("stages", "{}"), "'stages' must be an array");
  std::string wrapped = text;
  wrapped.replace(wrapped.find("\"order\": [") + 10, 0, "4294967296, ");
  refusedWith(wrapped, "'order[0]' must be an integer from 0 to 4294967295, not 4294967296");
  std::string firstStage = text;
  firstStage.replace(firstStage.find("\"first\": 0"), 10, "\"first\": -1");
  refusedWith(firstStage, "'stages[0].first' must be an integer");
}

TEST_CASE("validation catches edits and other graphs") {
  Fixture f;
  ScheduleFile edited = f.file;
  edited.predictedPeakBytes += 1;
  CHECK(validateSchedule(edited, f.graph, "p.json").message().find("the file was edited") != std::string::npos);
  edited = f.file;
  edited.instructions.pop_back();
  CHECK(validateSchedule(edited, f.graph, "p.json").message().find("invalid instruction stream") != std::string::npos);
  edited = f.file;
  edited.budgetBytes = edited.predictedPeakBytes - 1;
  CHECK(validateSchedule(edited, f.graph, "p.json").message().find("is below the predicted peak") != std::string::npos);
  edited = f.file;
  std::swap(edited.order[0], edited.order[1]);
  Status s = validateSchedule(edited, f.graph, "p.json");
  CHECK_FALSE(s.isOk());
  ir::Graph other = tbp::testing::randomDag(12, 40);
  CHECK(validateSchedule(f.file, other, "p.json").message().find("planned for another graph") != std::string::npos);
  CHECK(readSchedule("{", "x.json").status().message().rfind("x.json: not a JSON document", 0) == 0);
  CHECK(readSchedule("{\"format\": \"tbp.schedule\", \"version\": 3}", "x.json").status().message().find("version 3 is not supported") != std::string::npos);
  CHECK(readSchedule("{\"format\": \"tbp.schedule\", \"version\": 1}", "x.json").status().message().find("malformed schedule") != std::string::npos);
}

TEST_CASE("a file written before elided forwards is valid, and says what it simulates to now") {
  // sqrt on the contraction chain puts F_all k right before B k at the end of every segment.
  Fixture f(plan::PlannerKind::Sqrt, 100, tbp::testing::contractionChain());
  Expected<plan::SimResult> before = plan::simulate(f.model, f.file.instructions, /*elide=*/false);
  REQUIRE(before.hasValue());
  REQUIRE(before->recomputeRatio > f.file.recomputeRatio + 1e-3); // the stream elides somewhere
  std::string note;
  CHECK(validateSchedule(f.file, f.graph, "p.json", &note).isOk());
  CHECK(note.empty());
  ScheduleFile old = f.file;
  old.predictedPeakBytes = before->peakBytes;
  old.recomputeRatio = before->recomputeRatio;
  CHECK(validateSchedule(old, f.graph, "p.json", &note).isOk());
  CHECK(note.find("did not elide") != std::string::npos);
  CHECK(note.find("recompute ratio " + std::to_string(f.file.recomputeRatio).substr(0, 5)) != std::string::npos);
  // One figure of each kind is not enough: an edit still shows.
  ScheduleFile mixed = old;
  mixed.recomputeRatio = f.file.recomputeRatio;
  if (before->peakBytes != f.file.predictedPeakBytes) CHECK(validateSchedule(mixed, f.graph, "p.json").message().find("the file was edited") != std::string::npos);
  mixed = old;
  mixed.predictedPeakBytes += 4;
  CHECK(validateSchedule(mixed, f.graph, "p.json").message().find("the file was edited") != std::string::npos);
}

TEST_CASE("a schedule planned with an optimizer rebuilds its state and update") {
  Fixture f;
  const plan::OptimizerMemory adam = plan::optimizerMemory(f.graph, "adam");
  uint64_t params = 0, largest = 0;
  for (const ir::Value& v : f.graph.values())
    if (v.kind == ir::ValueKind::Parameter) {
      params += v.bytes;
      largest = std::max(largest, v.bytes);
    }
  REQUIRE(params > 0);
  CHECK(adam.stateBytes == 2 * params);
  CHECK(adam.updateBytes == largest);
  CHECK(plan::optimizerMemory(f.graph, "sgd") == plan::OptimizerMemory{});
  // The same stream under the adam model: the file says so, and the model read back has it.
  plan::StageModel withAdam = f.model;
  plan::addOptimizer(withAdam, adam);
  Expected<plan::SimResult> sim = plan::simulate(withAdam, f.file.instructions);
  REQUIRE(sim.hasValue());
  CHECK(sim->peakBytes >= f.file.predictedPeakBytes + adam.stateBytes);
  ScheduleFile planned = f.file;
  planned.plannerParams.emplace_back("optimizer", "adam");
  planned.predictedPeakBytes = sim->peakBytes;
  planned.budgetBytes = sim->peakBytes;
  Expected<plan::StageModel> back = stageModelFor(planned, f.graph, "p.json");
  REQUIRE_MESSAGE(back.hasValue(), back.status().message());
  CHECK(back->residentBytes == f.model.residentBytes + adam.stateBytes);
  CHECK(back->finalTransientBytes == std::max(f.model.finalTransientBytes, adam.updateBytes));
  CHECK(validateSchedule(planned, f.graph, "p.json").isOk());
  // Without the optimizer the recorded peak no longer simulates; an unknown one is refused.
  CHECK(validateSchedule(f.file, f.graph, "p.json").isOk());
  ScheduleFile stripped = planned;
  stripped.plannerParams.pop_back();
  CHECK(validateSchedule(stripped, f.graph, "p.json").message().find("the file was edited") != std::string::npos);
  planned.plannerParams.back().second = "lion";
  CHECK(validateSchedule(planned, f.graph, "p.json").message().find("'lion' is not one of") != std::string::npos);
}

TEST_CASE("compare reports changes and crosses thresholds") {
  Fixture loose(plan::PlannerKind::Optimal, 95), tight(plan::PlannerKind::Optimal, 75);
  Comparison same = compareSchedules(loose.file, loose.file, 0.0, 0.0);
  CHECK(same.crossed.empty());
  CHECK(same.instructionsDiffering == 0u);
  Comparison c = compareSchedules(loose.file, tight.file, 0.0, 0.0);
  CHECK(c.peakB <= c.peakA);
  if (c.recomputeB > c.recomputeA) CHECK(c.crossed.size() == 1u);
  Comparison back = compareSchedules(tight.file, loose.file, 0.0, std::nullopt);
  if (back.peakB > back.peakA) CHECK(back.crossed.size() == 1u);
  std::string md = renderComparison(c, "markdown", "a", "b");
  CHECK(md.find("| predicted peak |") != std::string::npos);
  CHECK(renderComparison(c, "json", "a", "b").find("\"regression\"") != std::string::npos);
}

TEST_CASE("the timeline is an SVG with the budget line") {
  Fixture f;
  Expected<plan::SimResult> sim = plan::simulate(f.model, f.file.instructions);
  REQUIRE(sim.hasValue());
  std::string svg = renderTimelineSvg(f.model, *sim, f.file.budgetBytes, f.file.lowerBoundBytes, "t");
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("budget ") != std::string::npos);
  CHECK(svg.find("</svg>") != std::string::npos);
}

TEST_CASE("costs files round-trip and refuse other graphs and malformed entries") {
  ir::Graph graph = tbp::testing::randomDag(11, 40);
  CostsFile f;
  f.graphFingerprint = fingerprint(graph);
  f.graphName = graph.name();
  f.device = "cpu";
  f.threads = 1;
  f.repeats = 3;
  for (ir::NodeId n = 0; n < graph.numNodes(); ++n) f.nodeNs.push_back(1000 + 37 * n);
  const std::string text = writeCosts(f, graph);
  Expected<CostsFile> back = readCosts(text, graph, "c.json");
  REQUIRE_MESSAGE(back.hasValue(), back.status().message());
  CHECK(back->nodeNs == f.nodeNs);
  CHECK(back->device == "cpu");
  CHECK(back->threads == 1);
  CHECK(writeCosts(*back, graph) == text);

  auto refused = [&](const std::string& edited, const std::string& expect) {
    Expected<CostsFile> r = readCosts(edited, graph, "c.json");
    CAPTURE(expect);
    REQUIRE_FALSE(r.hasValue());
    CHECK(r.status().code() == ErrorCode::BadInput);
    CHECK(r.status().message().find("c.json: ") == 0);
    CHECK(r.status().message().find(expect) != std::string::npos);
  };
  auto replaced = [&text](const std::string& from, const std::string& to) {
    std::string t = text;
    size_t at = t.find(from);
    REQUIRE(at != std::string::npos);
    return t.replace(at, from.size(), to);
  };
  refused("{", "not JSON");
  refused(replaced("\"tbp-costs\"", "\"tbp-schedule\""), "not a tbp costs file");
  refused(replaced("\"version\": 1", "\"version\": 9"), "version 9 is not supported");
  refused(replaced("\"version\": 1", "\"version\": 0"), "version 0 is not supported");
  refused(replaced(f.graphFingerprint, "0000000000000000"), "measured for another graph");
  refused(replaced("\"ns\": 1000", "\"ns\": 0"), "nodes[0]: 'ns' must be a positive integer");
  // Numbers of the wrong kind are refused, not converted (-5 had read as 2^64 - 5, 1.5 as 1).
  refused(replaced("\"ns\": 1000", "\"ns\": -5"), "'nodes[0].ns' must be an integer from 0 to");
  refused(replaced("\"ns\": 1000", "\"ns\": 1.5"), "'nodes[0].ns' must be an integer from 0 to");
  refused(replaced("\"ns\": 1000", "\"ns\": 18446744073709551615"), "'nodes[0].ns' must be an integer from 0 to 281474976710656");
  refused(replaced("\"node\": 1,", "\"node\": 1.5,"), "'nodes[1].node' must be an integer");
  refused(replaced("\"threads\": 1,", "\"threads\": true,"), "'threads' must be an integer");
  refused(replaced("\"version\": 1", "\"version\": 1e30"), "version 1e+30 is not supported");
  refused(replaced("\"device\": \"cpu\"", "\"device\": 7"), "'device' must be a string, not 7");
  refused(replaced("\"node\": 1,", "\"node\": 0,"), "nodes[1]: node 0 is listed twice");
  refused(replaced("\"node\": 1,", "\"node\": 999,"), "nodes[1]: node 999 is out of range");
  refused(replaced("\"unit\": \"ns\"", "\"unit\": \"ms\""), "'unit' must be");
  refused(replaced("\"name\": \"n1\"", "\"name\": \"n2\""), "nodes[1]: node 1 is 'n1' in this graph, not 'n2'");
  refused(replaced("\"repeats\": 3,", ""), "malformed costs file");
  // One node fewer than the graph has.
  CostsFile shorter = f;
  shorter.nodeNs.pop_back();
  refused(writeCosts(shorter, graph), "'nodes' has " + std::to_string(graph.numNodes() - 1) + " entries");

  // Without scratch the file stays version 1, readable by version-1 readers.
  CHECK(text.find("\"scratch\"") == std::string::npos);

  // Kernel scratch measured on a device round-trips per node; a node may have none.
  CostsFile withScratch = f;
  withScratch.device = "cuda:0";
  withScratch.scratch.assign(graph.numNodes(), std::nullopt);
  withScratch.scratch[0] = ir::MeasuredScratch{4096, 123456789012ull};
  withScratch.scratch[2] = ir::MeasuredScratch{0, 7};
  const std::string scratchText = writeCosts(withScratch, graph);
  CHECK(scratchText.find("\"scratch\": \"measured\"") != std::string::npos);
  CHECK(scratchText.find("\"version\": 2") != std::string::npos);
  Expected<CostsFile> scratchBack = readCosts(scratchText, graph, "c.json");
  REQUIRE_MESSAGE(scratchBack.hasValue(), scratchBack.status().message());
  REQUIRE(scratchBack->scratch.size() == graph.numNodes());
  CHECK(scratchBack->scratch[0]->forward == 4096);
  CHECK(scratchBack->scratch[0]->backward == 123456789012ull);
  CHECK(scratchBack->scratch[2]->backward == 7);
  CHECK_FALSE(scratchBack->scratch[1].has_value());
  CHECK(writeCosts(*scratchBack, graph) == scratchText);
  auto scratchReplaced = [&scratchText](const std::string& from, const std::string& to) {
    std::string t = scratchText;
    size_t at = t.find(from);
    REQUIRE(at != std::string::npos);
    return t.replace(at, from.size(), to);
  };
  refused(scratchReplaced("\"forward\": 4096", "\"forward\": -1"), "nodes[0]: 'scratch.forward' must be a byte count");
  refused(scratchReplaced("\"backward\": 7", "\"bwd\": 7"), "nodes[2]: 'scratch.backward' must be a byte count");
  refused(scratchReplaced("\"scratch\": \"measured\"", "\"scratch\": \"cuda\""), "'scratch' must be");
  refused(scratchReplaced("\"scratch\": \"measured\",", ""), "malformed costs file");
  // Per-node scratch in a file that says it has none is refused, not silently used.
  refused(scratchReplaced("\"scratch\": \"measured\"", "\"scratch\": \"static\""), "nodes[0]: 'scratch' in a file");
}

TEST_CASE("the fingerprint is the same whether or not constant data was loaded") {
  // `plan` imports without data, `run` and `profile` with it: a costs file or a schedule must
  // match across them (a GPT-2 export's small constants once made them differ).
  auto parse = [](const std::string& text) {
    Expected<ir::Graph> g = ir::parseGraph(text, "t.tbp");
    REQUIRE_MESSAGE(g.hasValue(), g.status().message());
    return std::move(*g);
  };
  const std::string head = "graph g {\n  input %x : f32[4,8]\n  const %s : f32[1]";
  const std::string body = "\n  %y : f32[4,8] = Mul(%x, %s)\n  output %y\n}\n";
  ir::Graph withData = parse(head + " = [0.5]" + body);
  ir::Graph withoutData = parse(head + body);
  REQUIRE(static_cast<bool>(withData.value(*withData.findValue("s")).data));
  REQUIRE_FALSE(static_cast<bool>(withoutData.value(*withoutData.findValue("s")).data));
  CHECK(fingerprint(withData) == fingerprint(withoutData));
  // Structure still counts: another shape is another graph.
  CHECK(fingerprint(parse("graph g {\n  input %x : f32[4,9]\n  const %s : f32[1]\n  %y : f32[4,9] = Mul(%x, %s)\n  output %y\n}\n")) !=
        fingerprint(withoutData));
}
