// `tbp plan`, `tbp validate`, `tbp compare`: schedules that fit a memory budget.

#include "Commands.h"

#include "tbp/analysis/Memory.h"
#include "tbp/analysis/Order.h"
#include "tbp/plan/Planners.h"
#include "tbp/schedule/ScheduleFile.h"
#include "tbp/support/Bytes.h"
#include "tbp/support/FileIO.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <sstream>

namespace tbp::driver {

namespace {

using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct PlanArgs {
  ModelOptions model;
  std::string budget;
  std::string planner = "optimal";
  std::string output;
  std::string format = "text";
  std::string timeline;
  std::string order;
  size_t maxStages = 0; // 0: the stage counts of stageCountsToTry
  size_t memorySlots = 256;
  std::string costs = "estimate";
  std::string optimizer = "none";
};

schedule::ScheduleFile toFile(const ir::Graph& graph, const PreparedStages& p, const plan::Plan& chosen, std::optional<uint64_t> budget,
                              bool fileScratch, const std::string& optimizer, const plan::EstimatePrices& prices) {
  schedule::ScheduleFile f;
  f.graphFingerprint = schedule::fingerprint(graph);
  f.graphName = graph.name();
  f.planner = plan::plannerName(chosen.planner);
  f.plannerParams = chosen.chosen.params;
  if (p.model.measuredCosts) f.plannerParams.emplace_back("costs", "measured");
  else {
    if (prices.matrixProductWeight != 1) f.plannerParams.emplace_back("matrix_product_weight", std::to_string(prices.matrixProductWeight));
    if (prices.poolWindowWeight != 1 && hasPooling(graph))
      f.plannerParams.emplace_back("pool_window_weight", std::to_string(prices.poolWindowWeight));
  }
  if (fileScratch) f.plannerParams.emplace_back("scratch", "costs_file");
  if (optimizer != "none") f.plannerParams.emplace_back("optimizer", optimizer);
  f.budgetBytes = budget;
  f.orderHeuristic = analysis::orderName(p.order);
  f.order.assign(p.model.order.begin(), p.model.order.end());
  for (const plan::Stage& s : p.model.stages) f.stages.push_back({s.first, s.last, s.forwardFlops, s.inputFrontierBytes, s.tapeBytes});
  f.instructions = chosen.chosen.stream;
  f.predictedPeakBytes = chosen.chosen.sim.peakBytes;
  f.peakInstruction = chosen.chosen.sim.peakInstruction + 1;
  f.recomputeRatio = chosen.chosen.sim.recomputeRatio;
  f.forwardFlops = chosen.chosen.sim.forwardFlops;
  f.residentBytes = p.model.residentBytes;
  f.storeAllPeakBytes = p.storeAllPeak;
  f.lowerBoundBytes = p.memory.lowerBoundBytes;
  return f;
}

double gapOf(uint64_t peak, uint64_t bound) { return bound ? static_cast<double>(peak) / static_cast<double>(bound) - 1.0 : 0.0; }

std::string budgetText(std::optional<uint64_t> budget, const Budget* parsed, uint64_t storeAll, bool tightest = false) {
  if (tightest && !budget) return "min: each planner's smallest feasible peak";
  if (!budget) return "none (store-all)";
  std::string s = formatBytes(*budget) + " (" + std::to_string(*budget) + " bytes";
  if (parsed && parsed->isFraction) s += ", " + formatFixed(parsed->fraction * 100, 0) + "% of the store-all peak " + formatBytes(storeAll);
  if (tightest) s += ", min: the planner's smallest feasible peak";
  return s + ")";
}

int runPlan(const PlanArgs& args, Io& io) {
  auto start = Clock::now();
  for (const auto& [option, path] : {std::pair<std::string, std::string>{"--output", args.output}, {"--timeline", args.timeline}})
    if (Status s = checkNotTheModel(option, path, args.model); !s) return reportError(io, s);
  // Measuring costs runs the model, which needs its data.
  Expected<ir::Graph> graph = loadModel(args.model, /*withData=*/args.costs == "measured");
  if (!graph) return reportError(io, graph.status());
  Expected<ResolvedCosts> costs = resolveCosts(args.costs, *graph, runtime::RunOptions{});
  if (!costs) return reportError(io, costs.status().withContext(args.model.name()));
  // A costs file profiled with --scratch measured sizes kernel temporaries as on its device.
  const bool fileScratch = !costs->scratch.empty();
  if (fileScratch) applyScratch(*graph, costs->scratch);
  std::optional<plan::PlannerKind> single = plan::parsePlanner(args.planner);
  std::optional<Budget> parsedBudget;
  // `min`: the tightest schedule each planner has, as `tbp run --budget min`.
  const bool tightest = args.budget == "min";
  if (!args.budget.empty() && !tightest) {
    Expected<Budget> b = parseBudget(args.budget);
    if (!b) return reportError(io, b.status());
    parsedBudget = *b;
  }
  Expected<plan::EstimatePrices> priced = estimatePricesFor("cpu");
  if (!priced) return reportError(io, priced.status());
  const plan::EstimatePrices prices = *priced;
  // The model every planner starts from (the first stage count): the store-all peak and the
  // percentage budgets are its; the optimal planner may end on a finer one.
  const size_t ops = graph->numNodes();
  // The step the plan is for updates the parameters with --optimizer: its state and update are
  // in every model.
  auto prepareAt = [&](size_t count, const std::string& order) {
    return prepareWithOptimizer(*graph, order, count, costs->costs, prices, args.optimizer);
  };
  const size_t firstCount = stageCountsToTry(args.maxStages, ops, /*searches=*/false).front();
  std::shared_ptr<const PreparedStages> base = prepareAt(firstCount, args.order);
  const PreparedStages& p0 = *base;
  spdlog::info("stage model: {} ops in {} stages ({} order) in {:.3f} s", p0.model.order.size(), p0.model.size(),
               analysis::orderName(p0.order), secondsSince(start));
  std::optional<uint64_t> budget;
  if (parsedBudget) budget = parsedBudget->resolve(p0.storeAllPeak);
  plan::PlanOptions options;
  options.memorySlots = args.memorySlots;
  if (budget) options.budgetBytes = *budget;

  std::vector<plan::PlannerKind> kinds;
  if (single) kinds.push_back(*single);
  else for (plan::PlannerKind k : plan::kAllPlanners) kinds.push_back(k);
  // Without a budget there is nothing to trade: plan store-all.
  if (!budget && !tightest && single) kinds = {plan::PlannerKind::StoreAll};

  struct Row {
    plan::PlannerKind kind;
    GranularPlan planned;
    double seconds;
  };
  std::vector<Row> rows;
  for (plan::PlannerKind k : kinds) {
    auto t = Clock::now();
    const std::vector<size_t> counts = stageCountsToTry(args.maxStages, ops, k != plan::PlannerKind::StoreAll);
    auto at = [&](size_t count) { return count == firstCount ? base : prepareAt(count, analysis::orderName(p0.order)); };
    rows.push_back({k, planAcrossStageCounts(counts, at, k, options, budget, tightest), secondsSince(t)});
  }

  const Row& mainRow = rows.back().kind == plan::PlannerKind::Optimal || rows.size() == 1 ? rows.back() : rows.front();
  const PreparedStages& p = *mainRow.planned.stages;
  const Expected<plan::Plan>& mainPlan = mainRow.planned.plan;
  if (tightest && rows.size() == 1) budget = mainRow.planned.minFeasible;
  size_t stageOps = 0;
  for (const plan::Stage& s : p.model.stages) stageOps = std::max<size_t>(stageOps, s.last - s.first + 1);

  if (rows.size() > 1) {
    // --planner all: side by side.
    if (args.format == "json") {
      ordered_json j = ordered_json::array();
      for (const Row& r : rows) {
        ordered_json e{{"planner", plan::plannerName(r.kind)}, {"budget_bytes", tightest ? ordered_json(r.planned.minFeasible) : budget ? ordered_json(*budget) : ordered_json(nullptr)}};
        if (r.planned.plan) {
          e["predicted_peak_bytes"] = r.planned.plan->chosen.sim.peakBytes;
          e["recompute_ratio"] = std::round(r.planned.plan->chosen.sim.recomputeRatio * 1e6) / 1e6;
        } else {
          e["infeasible"] = true;
        }
        e["min_feasible_bytes"] = r.planned.minFeasible;
        e["stages"] = r.planned.stages->model.size();
        e["plan_time_s"] = std::round(r.seconds * 1e4) / 1e4;
        j.push_back(e);
      }
      io.out << j.dump(2) << "\n";
    } else {
      io.out << "model   " << args.model.name() << " (graph '" << graph->name() << "'), " << p0.model.order.size() << " ops in "
             << p0.model.size() << " stages, " << analysis::orderName(p0.order) << " order";
      if (args.maxStages == 0 && p0.model.size() < p0.model.order.size()) io.out << "; each planner keeps its cheapest stage count";
      io.out << "\n";
      io.out << "budget  " << budgetText(budget, parsedBudget ? &*parsedBudget : nullptr, p0.storeAllPeak, tightest) << "\n";
      if (args.optimizer != "none") io.out << "optimizer " << args.optimizer << " (its state and update are in every plan)\n";
      io.out << "\n";
      auto cell = [](const std::string& s, size_t w) { return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' '); };
      io.out << "  " << cell("planner", 16) << cell("stages", 8) << cell("predicted peak", 17) << cell("recompute", 12) << cell("smallest feasible", 20)
             << "plan time\n";
      for (const Row& r : rows) {
        io.out << "  " << cell(plan::plannerName(r.kind), 16) << cell(std::to_string(r.planned.stages->model.size()), 8)
               << cell(r.planned.plan ? formatBytes(r.planned.plan->chosen.sim.peakBytes) : "infeasible", 17)
               << cell(r.planned.plan ? formatFixed(r.planned.plan->chosen.sim.recomputeRatio, 3) : "-", 12)
               << cell(formatBytes(r.planned.minFeasible), 20) << formatFixed(r.seconds, 3) << " s\n";
      }
    }
    if (!mainPlan) return reportError(io, mainPlan.status());
  } else {
    if (!mainPlan) return reportError(io, mainPlan.status());
    const plan::Candidate& c = mainPlan->chosen;
    if (args.format == "json") {
      ordered_json j{{"planner", plan::plannerName(mainRow.kind)},
                     {"budget_bytes", budget ? ordered_json(*budget) : ordered_json(nullptr)},
                     {"predicted_peak_bytes", c.sim.peakBytes},
                     {"recompute_ratio", std::round(c.sim.recomputeRatio * 1e6) / 1e6},
                     {"costs", p.model.measuredCosts ? "measured" : "estimate"},
                     {"matrix_product_weight", p.model.measuredCosts ? ordered_json(nullptr) : ordered_json(prices.matrixProductWeight)},
                     {"pool_window_weight", p.model.measuredCosts ? ordered_json(nullptr) : ordered_json(prices.poolWindowWeight)},
                     {"scratch", fileScratch ? "costs_file" : "static"},
                     {"optimizer", args.optimizer},
                     {"lower_bound_bytes", p.memory.lowerBoundBytes},
                     {"gap", std::round(gapOf(c.sim.peakBytes, p.memory.lowerBoundBytes) * 1e6) / 1e6},
                     {"min_feasible_bytes", mainPlan->minFeasibleBytes},
                     {"store_all_peak_bytes", p0.storeAllPeak},
                     {"ops", p.model.order.size()},
                     {"stages", p.model.size()},
                     {"instructions", c.stream.size()},
                     {"plan_time_s", std::round(mainRow.seconds * 1e4) / 1e4}};
      io.out << j.dump(2) << "\n";
    } else {
      io.out << "plan             " << plan::plannerName(mainRow.kind) << " for " << args.model.name() << " (graph '" << graph->name() << "')\n";
      io.out << "budget           " << budgetText(budget, parsedBudget ? &*parsedBudget : nullptr, p0.storeAllPeak, tightest) << "\n";
      io.out << "stages           " << p.model.size() << " stages over " << p.model.order.size() << " ops, "
             << analysis::orderName(p.order) << " order";
      if (p.model.size() < p.model.order.size())
        io.out << "; coarsened at cheap cuts, at most " << stageOps << " ops a stage";
      if (mainRow.planned.stagesTried.size() > 1) io.out << "; the cheapest of " << describeCounts(mainRow.planned.stagesTried) << " stages";
      io.out << "\n";
      io.out << "predicted peak   " << formatBytes(c.sim.peakBytes) << " (" << c.sim.peakBytes << " bytes) at instruction "
             << c.sim.peakInstruction + 1 << " of " << c.stream.size() << " (" << plan::formatInstruction(c.stream[c.sim.peakInstruction]) << ")\n";
      io.out << "recompute ratio  " << formatFixed(c.sim.recomputeRatio, 3) << " (forward FLOPs executed / one forward pass)\n";
      if (args.optimizer != "none") {
        const plan::OptimizerMemory o = plan::optimizerMemory(*graph, args.optimizer);
        io.out << "optimizer        " << args.optimizer << ": " << formatBytes(o.stateBytes) << " of state resident, "
               << formatBytes(o.updateBytes) << " for its update after the last backward\n";
      }
      if (fileScratch)
        io.out << "kernel scratch   measured on " << costs->scratchDevice << ", from " << args.costs
               << " (the memory model takes it where it exceeds the CPU table)\n";
      if (!p.model.measuredCosts) io.out << "priced by        the estimate: " << describePrices(prices, *graph) << "\n";
      if (p.model.measuredCosts)
        io.out << "recompute time   " << formatFixed(predictedRecomputeSeconds(p.model, c.sim) * 1e3, 3) << " ms predicted from measured costs (" << (args.costs == "measured" ? "profiled here" : args.costs) << ")\n";
      io.out << "lower bound      " << formatBytes(p.memory.lowerBoundBytes) << "; gap " << formatFixed(100 * gapOf(c.sim.peakBytes, p.memory.lowerBoundBytes), 1)
             << "%; smallest feasible at this granularity " << formatBytes(mainPlan->minFeasibleBytes) << "\n";
      io.out << "store-all peak   " << formatBytes(p0.storeAllPeak) << "; saved " << formatFixed(100.0 * (1.0 - static_cast<double>(c.sim.peakBytes) / static_cast<double>(std::max<uint64_t>(p0.storeAllPeak, 1))), 1) << "%\n";
      io.out << "planned in       " << formatFixed(mainRow.seconds, 3) << " s\n";
    }
  }
  const plan::Plan& chosen = *mainPlan;
  if (!args.timeline.empty()) {
    std::string title = std::string("tbp plan ") + plan::plannerName(chosen.planner) + ": " + graph->name();
    Status s = writeOutput(io, args.timeline, schedule::renderTimelineSvg(p.model, chosen.chosen.sim, budget, p.memory.lowerBoundBytes, title));
    if (!s) return reportError(io, s);
  }
  if (!args.output.empty()) {
    Status s = writeOutput(io, args.output, schedule::writeSchedule(toFile(*graph, p, chosen, tightest ? std::optional<uint64_t>(mainRow.planned.minFeasible) : budget, fileScratch, args.optimizer, prices)));
    if (!s) return reportError(io, s);
  }
  return 0;
}

} // namespace

Expected<schedule::ScheduleFile> loadSchedule(const std::string& path) {
  Expected<std::string> text = readFile(path);
  if (!text) return text.status();
  return schedule::readSchedule(*text, path);
}

bool plannedWithCostsFileScratch(const schedule::ScheduleFile& file) { return schedule::plannerParam(file, "scratch", "") == "costs_file"; }

bool isCudaDevice(const std::string& device) { return device.rfind("cuda", 0) == 0; }

std::function<int(Io&)> setupPlan(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  addModelOptions(app, args->model);
  app.add_option("--budget", args->budget, "peak memory of the training step: 4GB, 4GiB, 512MB, bytes, 60% of store-all, or min (each planner's tightest schedule)")
      ->type_name("SIZE")
      ->check(nonEmpty("give a size, a percentage or min"));
  app.add_option("--planner", args->planner, "store-all|sqrt|interval-tree|revolve|optimal, or all side by side")
      ->check(CLI::IsMember({"store-all", "sqrt", "interval-tree", "revolve", "optimal", "all"}));
  app.add_option("-o,--output", args->output, "write the schedule file (JSON)")->type_name("FILE")->check(outputFile());
  app.add_option("--format", args->format, "report format: text|json")->check(CLI::IsMember({"text", "json"}));
  app.add_option("--timeline", args->timeline, "write the memory timeline as SVG")->type_name("FILE.svg")->check(outputFile());
  app.add_option("--order", args->order, "order heuristic: file|greedy|dfs (default: best store-all peak)")
      ->check(CLI::IsMember({"file", "greedy", "dfs"}));
  app.add_option("--max-stages", args->maxStages, "coarsen the order into at most N stages (default: each planner keeps its cheapest schedule of " + describeCounts(stageCountsToTry(0, SIZE_MAX, true)) + " stages)")->check(CLI::Range(1, 4096));
  app.add_option("--costs", args->costs,
                 "estimate|measured|FILE: price recomputation by FLOPs + 16 per byte moved (matrix products x25 where this CPU's "
                 "BLAS is the reference one), by op times measured here first (CPU, "
                 "default threads), or by a costs file from 'tbp profile'")
      ->type_name("COSTS");
  app.add_option("--memory-slots", args->memorySlots, "memory granularity of the optimal planner (default 256)")->check(CLI::Range(8, 4096));
  app.add_option("--optimizer", args->optimizer, "none|sgd|adam: plan for a step that also updates the parameters (Adam's state is resident)")
      ->check(CLI::IsMember({"none", "sgd", "adam"}));
  return [args](Io& io) { return runPlan(*args, io); };
}

std::function<int(Io&)> setupValidate(CLI::App& app) {
  struct Args {
    ModelOptions model;
    std::string schedule;
    std::string costs;
  };
  auto args = std::make_shared<Args>();
  addModelOptions(app, args->model);
  app.add_option("SCHEDULE", args->schedule, "schedule file written by tbp plan -o (required)");
  app.add_option("--costs", args->costs,
                 "a costs file from 'tbp profile': prices the schedule's recomputation by its times, and sizes kernel scratch by it "
                 "when the schedule was planned with its scratch")
      ->type_name("FILE");
  return [args](Io& io) {
    // With --workload/--profile there is no model file: the one positional is the schedule.
    if (args->schedule.empty() && (!args->model.workload.empty() || !args->model.profile.empty())) std::swap(args->schedule, args->model.path);
    if (args->schedule.empty()) return reportError(io, usageError("SCHEDULE is required: tbp validate MODEL SCHEDULE, or tbp validate --workload W --profile P SCHEDULE"));
    Expected<ir::Graph> graph = loadModel(args->model, /*withData=*/false);
    if (!graph) return reportError(io, graph.status());
    Expected<schedule::ScheduleFile> file = loadSchedule(args->schedule);
    if (!file) return reportError(io, file.status());
    // Kernel scratch measured on a device sized the plan: the same measurement re-simulates it.
    if (plannedWithCostsFileScratch(*file) && args->costs.empty())
      return reportError(io, usageError(args->schedule + ": planned with kernel scratch from a costs file (planner_params.scratch); "
                                        "pass that file with --costs FILE"));
    plan::NodeCosts times;
    if (!args->costs.empty()) {
      if (args->costs == "estimate" || args->costs == "measured")
        return reportError(io, usageError("--costs takes a costs file written by 'tbp profile -o' here, not '" + args->costs + "'"));
      Expected<ResolvedCosts> costs = resolveCosts(args->costs, *graph, runtime::RunOptions{});
      if (!costs) return reportError(io, costs.status());
      // Scratch only sized the plan when it was planned with it; the times price any schedule.
      if (plannedWithCostsFileScratch(*file)) applyScratch(*graph, costs->scratch);
      times = std::move(costs->costs);
    }
    std::string note;
    Status s = schedule::validateSchedule(*file, *graph, args->schedule, &note);
    if (!s) return reportError(io, s);
    if (!note.empty()) spdlog::warn("{}", note);
    io.out << args->schedule << ": valid " << file->planner << " schedule for " << args->model.name() << ": " << file->stages.size()
           << " stages, " << file->instructions.size() << " instructions, predicted peak " << formatBytes(file->predictedPeakBytes);
    if (file->budgetBytes) io.out << " within the budget " << formatBytes(*file->budgetBytes);
    io.out << "\n";
    if (!times.empty()) {
      // The stream is valid (checked above), so it simulates on the priced model too.
      Expected<plan::StageModel> priced = schedule::stageModelFor(*file, *graph, args->schedule, times);
      if (!priced) return reportError(io, priced.status());
      Expected<plan::SimResult> sim = plan::simulate(*priced, file->instructions);
      if (!sim) return reportError(io, sim.status());
      io.out << "recompute time " << formatFixed(predictedRecomputeSeconds(*priced, *sim) * 1e3, 3) << " ms of a "
             << formatFixed(static_cast<double>(priced->onePassCost) * 1e-6, 3) << " ms forward, priced by " << args->costs << "\n";
    }
    return 0;
  };
}

std::function<int(Io&)> setupCompare(CLI::App& app) {
  struct Args {
    std::string a, b, format = "text";
    std::optional<double> maxPeak, maxRecompute;
  };
  auto args = std::make_shared<Args>();
  app.add_option("A", args->a, "baseline schedule")->required();
  app.add_option("B", args->b, "new schedule")->required();
  // NaN would compare false with every change and so disable the gate.
  const CLI::Validator percent = finiteNumber(/*nonNegative=*/true);
  app.add_option("--max-peak-increase", args->maxPeak, "exit 1 when the predicted peak rises more than PCT percent")->type_name("PCT")->check(percent);
  app.add_option("--max-recompute-increase", args->maxRecompute, "exit 1 when the recompute ratio rises more than PCT percent")
      ->type_name("PCT")
      ->check(percent);
  app.add_option("--format", args->format, "text|json|markdown")->check(CLI::IsMember({"text", "json", "markdown"}));
  return [args](Io& io) {
    Expected<schedule::ScheduleFile> a = loadSchedule(args->a);
    if (!a) return reportError(io, a.status());
    Expected<schedule::ScheduleFile> b = loadSchedule(args->b);
    if (!b) return reportError(io, b.status());
    schedule::Comparison c = schedule::compareSchedules(*a, *b, args->maxPeak, args->maxRecompute);
    io.out << schedule::renderComparison(c, args->format, args->a, args->b);
    return c.crossed.empty() ? 0 : exitCodeOf(ErrorCode::CheckFailed);
  };
}

} // namespace tbp::driver
