// `tbp run`: a real training step under a schedule (LibTorch), measured and optionally verified.

#include "Commands.h"

#include "tbp/plan/Planners.h"
#include "tbp/runtime/Runtime.h"
#include "tbp/support/Bytes.h"

#include <nlohmann/json.hpp>

#include <cmath>

namespace tbp::driver {

namespace {

struct RunArgs {
  ModelOptions model;
  std::string budget;
  std::string planner = "optimal";
  std::string order;
  std::string format = "text";
  size_t maxStages = 64;
  runtime::RunOptions run;
};

double round6(double v) { return std::round(v * 1e6) / 1e6; }

int runRun(const RunArgs& args, Io& io) {
  if (args.model.path.empty())
    return reportError(io, usageError("tbp run needs a MODEL file; the built-in workloads (--profile) are not in this version"));
  if (!runtime::available())
    return reportError(io, Status(ErrorCode::Internal, "this build of tbp has no LibTorch runtime; install libtorch-dev and rebuild with -DTBP_WITH_TORCH=ON"));
  Expected<ir::Graph> graph = loadModel(args.model, /*withData=*/true);
  if (!graph) return reportError(io, graph.status());
  std::vector<std::string> missing = runtime::missingKernels(*graph);
  if (!missing.empty()) {
    std::string list;
    for (const std::string& s : missing) list += (list.empty() ? "" : ", ") + s;
    return reportError(io, badInput(args.model.path + ": the runtime has no kernel yet for " + list));
  }
  std::optional<uint64_t> budget;
  PreparedStages p = prepare(*graph, args.order, args.maxStages);
  if (!args.budget.empty()) {
    Expected<Budget> b = parseBudget(args.budget);
    if (!b) return reportError(io, b.status());
    budget = b->resolve(p.storeAllPeak);
  }
  plan::PlannerKind kind = budget ? *plan::parsePlanner(args.planner) : plan::PlannerKind::StoreAll;
  Expected<plan::Plan> chosen = plan::planForBudget(p.model, kind, budget);
  if (!chosen) return reportError(io, chosen.status());
  const plan::Candidate& c = chosen->chosen;
  Expected<runtime::RunReport> r = runtime::runTrainingStep(*graph, p.model, c.stream, args.run);
  if (!r) return reportError(io, r.status().withContext(args.model.path));
  const double error = c.sim.peakBytes ? (static_cast<double>(r->measuredPeakBytes) - static_cast<double>(c.sim.peakBytes)) /
                                             static_cast<double>(c.sim.peakBytes)
                                       : 0.0;
  const bool overBudget = budget && r->measuredPeakBytes > *budget;
  const bool gradFailed = r->gradCheck && !r->gradCheck->passed;
  if (args.format == "json") {
    nlohmann::ordered_json j{{"planner", plan::plannerName(kind)},
                             {"budget_bytes", budget ? nlohmann::ordered_json(*budget) : nlohmann::ordered_json(nullptr)},
                             {"predicted_peak_bytes", c.sim.peakBytes},
                             {"measured_peak_bytes", r->measuredPeakBytes},
                             {"prediction_error", round6(error)},
                             {"peak_rss_bytes", r->peakRssBytes},
                             {"step_time_s", round6(r->stepTimeS)},
                             {"forward_s", round6(r->forwardS)},
                             {"recompute_s", round6(r->recomputeS)},
                             {"backward_s", round6(r->backwardS)},
                             {"recompute_ratio", round6(c.sim.recomputeRatio)},
                             {"loss", r->loss},
                             {"stages", p.model.size()},
                             {"instructions", c.stream.size()}};
    if (r->gradCheck)
      j["grad_check"] = {{"passed", r->gradCheck->passed}, {"max_abs_error", r->gradCheck->maxAbsError},
                         {"max_rel_error", r->gradCheck->maxRelError}, {"worst_parameter", r->gradCheck->worstParameter}};
    io.out << j.dump(2) << "\n";
  } else {
    io.out << "run              " << plan::plannerName(kind) << " schedule for " << args.model.path << ", " << p.model.size()
           << " stages, " << c.stream.size() << " instructions, " << args.run.device << "\n";
    io.out << "budget           " << (budget ? formatBytes(*budget) : std::string("none (store-all)")) << "\n";
    io.out << "peak             measured " << formatBytes(r->measuredPeakBytes) << " at instruction " << r->measuredPeakInstruction + 1
           << " (" << plan::formatInstruction(c.stream[r->measuredPeakInstruction]) << "), predicted " << formatBytes(c.sim.peakBytes)
           << " (" << (error >= 0 ? "+" : "") << formatFixed(100 * error, 1) << "%); peak RSS " << formatBytes(r->peakRssBytes) << "\n";
    io.out << "step time        " << formatFixed(r->stepTimeS * 1000, 2) << " ms (median of " << std::max(args.run.steps, 1) << "): forward "
           << formatFixed(r->forwardS * 1000, 2) << " ms, recompute " << formatFixed(r->recomputeS * 1000, 2) << " ms, backward "
           << formatFixed(r->backwardS * 1000, 2) << " ms\n";
    io.out << "recompute ratio  " << formatFixed(c.sim.recomputeRatio, 3) << "\n";
    io.out << "loss             " << formatFixed(r->loss, 6) << "\n";
    if (r->gradCheck)
      io.out << "gradients        " << (r->gradCheck->passed ? "match" : "DIFFER FROM") << " store-all autograd: max abs error "
             << r->gradCheck->maxAbsError << ", max rel error " << r->gradCheck->maxRelError
             << (r->gradCheck->worstParameter.empty() ? "" : " (worst '" + r->gradCheck->worstParameter + "')") << "\n";
  }
  if (overBudget) {
    io.err << "tbp: error: measured peak " << r->measuredPeakBytes << " bytes exceeds the budget " << *budget << " bytes at instruction "
           << r->measuredPeakInstruction + 1 << " (" << plan::formatInstruction(c.stream[r->measuredPeakInstruction]) << ")\n";
    return exitCodeOf(ErrorCode::CheckFailed);
  }
  if (gradFailed) {
    io.err << "tbp: error: gradients differ from store-all autograd beyond the tolerance (worst '" << r->gradCheck->worstParameter << "')\n";
    return exitCodeOf(ErrorCode::CheckFailed);
  }
  return 0;
}

} // namespace

std::function<int(Io&)> setupRun(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  addModelOptions(app, args->model);
  app.get_option("MODEL")->required(false);
  app.add_option("--budget", args->budget, "peak memory of the step: 4GB, 4GiB, 512MB, bytes, or 60% of store-all")->type_name("SIZE");
  app.add_option("--planner", args->planner, "store-all|sqrt|interval-tree|revolve|optimal")
      ->check(CLI::IsMember({"store-all", "sqrt", "interval-tree", "revolve", "optimal"}));
  app.add_option("--order", args->order, "order heuristic: file|greedy|dfs")->check(CLI::IsMember({"file", "greedy", "dfs"}));
  app.add_option("--max-stages", args->maxStages, "coarsen into at most N stages (default 64)")->check(CLI::Range(1, 4096));
  app.add_option("--device", args->run.device, "cpu|cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_flag("--verify", args->run.verify, "also run store-all and compare the loss and every parameter gradient");
  app.add_option("--seed", args->run.seed, "seed of inputs, targets and parameters without data");
  app.add_option("--threads", args->run.threads, "intra-op threads");
  app.add_option("--steps", args->run.steps, "measured steps (median time)")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", args->run.warmup, "unmeasured steps first")->check(CLI::Range(0, 100000));
  app.add_option("--format", args->format, "text|json")->check(CLI::IsMember({"text", "json"}));
  return [args](Io& io) { return runRun(*args, io); };
}

} // namespace tbp::driver
