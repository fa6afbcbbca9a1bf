// `tbp run`: a real training step under a schedule (LibTorch), measured and optionally verified.

#include "Commands.h"

#include "tbp/frontend/onnx/OnnxImporter.h"
#include "tbp/plan/Planners.h"
#include "tbp/runtime/Runtime.h"
#include "tbp/support/Bytes.h"
#include "tbp/support/FileIO.h"
#include "tbp/support/Npy.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>

namespace tbp::driver {

namespace {

/// "the loss is NaN or infinite; 3 parameters have NaN or infinite gradients (first 'w')", or
/// empty when every value was finite.
std::string nonFiniteNote(const runtime::GradCheck& c) {
  std::string s;
  if (c.nonFiniteLoss) s += "the loss is NaN or infinite";
  if (c.nonFiniteParameters > 0)
    s += (s.empty() ? "" : "; ") + std::to_string(c.nonFiniteParameters) + (c.nonFiniteParameters == 1 ? " parameter has" : " parameters have") +
         " NaN or infinite gradients (first '" + c.firstNonFinite + "')";
  return s;
}

struct RunArgs {
  ModelOptions model;
  std::string budget;
  std::string planner = "optimal";
  std::string order;
  std::string format = "text";
  size_t maxStages = 0; // 0: the stage counts of stageCountsToTry
  std::string costs = "estimate";
  std::string scratch = "auto";
  size_t memorySlots = plan::PlanOptions{}.memorySlots;
  std::vector<std::string> inputs;
  std::string saveGrads;
  std::string schedule;
  runtime::RunOptions run;
};

/// `--input NAME=FILE` (.npy or ONNX TensorProto .pb).
Status readInputs(const std::vector<std::string>& specs, std::map<std::string, NpyArray>& out) {
  for (const std::string& spec : specs) {
    size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
      return usageError("--input '" + spec + "': expected NAME=FILE with a .npy or .pb file");
    std::string name = spec.substr(0, eq), file = spec.substr(eq + 1);
    std::string ext = file.size() > 4 ? file.substr(file.size() - 4) : "";
    Expected<NpyArray> array = ext == ".npy" ? readNpy(file)
                               : file.size() > 3 && file.substr(file.size() - 3) == ".pb" ? frontend::readTensorProtoFile(file)
                                                                                         : Expected<NpyArray>(usageError("--input " + spec + ": the file must end in .npy or .pb"));
    if (!array) return array.status();
    out[name] = std::move(*array);
  }
  return Status::ok();
}

/// `--save-grads DIR`: one .npy per parameter and manifest.json, each written atomically.
Status saveGradients(const std::string& dir, const runtime::RunReport& r) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return usageError("--save-grads " + dir + ": cannot create the folder");
  nlohmann::ordered_json manifest;
  manifest["parameters"] = nlohmann::ordered_json::array();
  for (size_t i = 0; i < r.gradients.size(); ++i) {
    const runtime::HostGradient& g = r.gradients[i];
    std::string file = "grad_" + std::to_string(i) + ".npy";
    TBP_RETURN_IF_ERROR(writeFileAtomic(dir + "/" + file, encodeNpy(g.array)));
    manifest["parameters"].push_back({{"name", g.name}, {"file", file}, {"shape", g.array.shape}});
  }
  manifest["loss"] = r.loss;
  return writeFileAtomic(dir + "/manifest.json", manifest.dump(2) + "\n");
}

double round6(double v) { return std::round(v * 1e6) / 1e6; }

int runRun(const RunArgs& args, Io& io) {
  Expected<ir::Graph> graph = loadRunnableModel(args.model);
  if (!graph) return reportError(io, graph.status());
  runtime::RunOptions options = args.run;
  if (Status s = readInputs(args.inputs, options.inputs); !s) return reportError(io, s);
  options.keepGradients = !args.saveGrads.empty();
  std::optional<uint64_t> budget;
  // `--costs measured`: the runtime's profiling step times every op's forward on this device
  // and these threads, and the planner prices recomputation with those times (or a file's).
  // A schedule file is run as planned: its costs only matter for the kernel scratch a file has.
  if (!args.schedule.empty() && args.costs == "measured")
    return reportError(io, usageError("--costs measured prices a plan that --schedule already has; with --schedule, --costs takes "
                                      "the costs file the schedule was planned with"));
  Expected<ResolvedCosts> costs = resolveCosts(args.costs, *graph, options);
  if (!costs) return reportError(io, costs.status().withContext(args.model.name()));
  // Kernel temporaries: Ops.def's rules were measured with LibTorch 1.13's CPU kernels; on a
  // GPU (cuDNN workspaces, two-pass reductions) every node's are measured before planning,
  // unless the costs file carries a measurement (`tbp profile --scratch measured`).
  std::string scratchSource = "static";
  std::optional<schedule::ScheduleFile> file;
  if (!args.schedule.empty()) {
    // A schedule planned elsewhere (`tbp plan -o`) runs as written: the memory model it was
    // planned with must be this one, so the scratch is its costs file's, or the table.
    Expected<schedule::ScheduleFile> loaded = loadSchedule(args.schedule);
    if (!loaded) return reportError(io, loaded.status());
    file = std::move(*loaded);
    if (plannedWithCostsFileScratch(*file)) {
      if (costs->scratch.empty())
        return reportError(io, usageError(args.schedule + ": planned with kernel scratch from a costs file (planner_params.scratch); " +
                                          (args.costs == "estimate" ? std::string("pass that file with --costs FILE")
                                                                    : args.costs + " has no scratch measurement: pass the file it was planned with")));
      applyScratch(*graph, costs->scratch);
      scratchSource = "costs_file";
    } else {
      if (!costs->scratch.empty())
        spdlog::warn("{}: {} was planned without a costs file's kernel scratch, so the file's measurement is not used", args.costs,
                     args.schedule);
      if (isCudaDevice(options.device))
        spdlog::warn("{}: planned with the CPU scratch table; on CUDA, plan from 'tbp profile --device cuda --scratch measured -o "
                     "costs.json' with 'tbp plan --costs costs.json' so cuDNN's workspaces are in the plan",
                     args.schedule);
    }
    std::string note;
    if (Status s = schedule::validateSchedule(*file, *graph, args.schedule, &note); !s) return reportError(io, s);
    if (!note.empty()) spdlog::warn("{}", note);
  } else if (args.scratch != "static" && !costs->scratch.empty()) {
    applyScratch(*graph, costs->scratch);
    scratchSource = "costs_file";
  }
  if (scratchSource == "costs_file" && costs->scratchDevice != options.device)
    spdlog::warn("{}: kernel scratch measured on {}, running on {}", args.costs, costs->scratchDevice, options.device);
  const bool measuresScratch =
      !file && (args.scratch == "measured" || (args.scratch == "auto" && scratchSource == "static" && !scratchTableHolds(options)));
  double scratchSeconds = 0;
  if (measuresScratch) {
    Expected<ScratchMeasurement> measured = measureScratch(*graph, options);
    if (!measured) return reportError(io, measured.status().withContext(args.model.name()));
    applyScratch(*graph, measured->scratch);
    scratchSeconds = measured->seconds;
    scratchSource = "measured";
  }
  if (!costs->costs.empty()) spdlog::info("{}", costsByOp(*graph, costs->costs, 8));
  // A schedule file is run as written: only planning prices stages.
  plan::EstimatePrices prices;
  if (!file) {
    Expected<plan::EstimatePrices> priced = estimatePricesFor(options.device);
    if (!priced) return reportError(io, priced.status());
    prices = *priced;
  }
  // Optimizer state is resident, and the update needs its scratch: plan with both (a schedule
  // file has them when it was planned with the same --optimizer).
  const plan::OptimizerMemory optimizer = plan::optimizerMemory(*graph, options.optimizer);
  auto prepareAt = [&](size_t count, const std::string& order) {
    return prepareWithOptimizer(*graph, order, count, costs->costs, prices, options.optimizer);
  };
  std::shared_ptr<const PreparedStages> base;
  PreparedStages p;
  if (file) {
    Expected<plan::StageModel> model = schedule::stageModelFor(*file, *graph, args.schedule);
    if (!model) return reportError(io, model.status());
    p.model = std::move(*model); // (a costs file's timings priced the plan; running it needs none)
    const std::string planned = schedule::plannerParam(*file, "optimizer", "none");
    const plan::OptimizerMemory plannedMemory = plan::optimizerMemory(*graph, planned);
    if (!(plannedMemory == optimizer))
      return reportError(io, usageError(args.schedule + ": planned for --optimizer " + planned + " (" + formatBytes(plannedMemory.stateBytes) +
                                        " of state), run with --optimizer " + options.optimizer + " (" + formatBytes(optimizer.stateBytes) +
                                        "); run it with the optimizer it was planned for, or plan with 'tbp plan --optimizer " +
                                        options.optimizer + "'"));
    p.storeAllPeak = plan::simulate(p.model, plan::storeAllStream(p.model.size()))->peakBytes;
  } else {
    // The first stage count's model: the store-all peak and the percentage budgets are its.
    base = prepareAt(stageCountsToTry(args.maxStages, graph->numNodes(), false).front(), args.order);
    p = *base;
  }
  std::string budgetText = args.budget;
  std::string plannerLabel;
  plan::Candidate c;
  if (file) {
    plannerLabel = file->planner; // informative in the file, as tbp validate treats it
    budget = file->budgetBytes;
    c.stream = file->instructions;
    c.sim = *plan::simulate(p.model, c.stream);
    if (budget) budgetText = "from " + args.schedule;
  } else {
    // A built-in workload without a budget shows what tbp does: half the store-all peak, verified.
    if (args.model.isWorkload() && budgetText.empty() && args.planner == "optimal") {
      budgetText = "50%";
      options.verify = true;
    }
    const plan::PlannerKind kind = budgetText.empty() ? plan::PlannerKind::StoreAll : *plan::parsePlanner(args.planner);
    plannerLabel = plan::plannerName(kind);
    plan::PlanOptions planOptions;
    planOptions.memorySlots = args.memorySlots;
    if (!budgetText.empty() && budgetText != "min") {
      Expected<Budget> b = parseBudget(budgetText);
      if (!b) return reportError(io, b.status());
      budget = b->resolve(p.storeAllPeak);
      planOptions.budgetBytes = *budget;
    }
    const std::string order = analysis::orderName(base->order);
    const std::vector<size_t> counts = stageCountsToTry(args.maxStages, graph->numNodes(), kind != plan::PlannerKind::StoreAll);
    GranularPlan planned = planAcrossStageCounts(
        counts, [&](size_t count) { return count == counts.front() ? base : prepareAt(count, order); }, kind, planOptions, budget,
        budgetText == "min");
    if (budgetText == "min") budget = planned.minFeasible; // the tightest schedule this planner has
    if (!planned.plan) return reportError(io, planned.plan.status());
    c = std::move(planned.plan->chosen);
    p.model = planned.stages->model; // the stages it was planned on
  }
  // On a CPU the matrix products run on whatever BLAS libblas.so.3 is (convolutions on oneDNN).
  const BlasUse blas = checkBlas(*graph, options.device, args.model.name());
  Expected<runtime::RunReport> r = runtime::runTrainingStep(*graph, p.model, c.stream, options);
  if (!r) return reportError(io, r.status().withContext(args.model.name()));
  if (!args.saveGrads.empty())
    if (Status s = saveGradients(args.saveGrads, *r); !s) return reportError(io, s);
  for (size_t i = 0; i < r->timeline.size() && i < c.sim.timeline.size(); ++i)
    spdlog::debug("instruction {:>4} {:<10} measured {:>12} predicted {:>12} ({:+})", i + 1, plan::formatInstruction(c.stream[i]), r->timeline[i],
                  c.sim.timeline[i], static_cast<int64_t>(r->timeline[i]) - static_cast<int64_t>(c.sim.timeline[i]));
  const double error = c.sim.peakBytes ? (static_cast<double>(r->measuredPeakBytes) - static_cast<double>(c.sim.peakBytes)) /
                                             static_cast<double>(c.sim.peakBytes)
                                       : 0.0;
  const bool overBudget = budget && r->measuredPeakBytes > *budget;
  const bool gradFailed = r->gradCheck && !r->gradCheck->passed;
  // Non-finite values fail the check whatever the errors (a NaN compares as within any tolerance).
  const std::string nonFinite = r->gradCheck ? nonFiniteNote(*r->gradCheck) : std::string();
  if (args.format == "json") {
    nlohmann::ordered_json j{{"planner", plannerLabel},
                             {"budget_bytes", budget ? nlohmann::ordered_json(*budget) : nlohmann::ordered_json(nullptr)},
                             {"predicted_peak_bytes", c.sim.peakBytes},
                             {"measured_peak_bytes", r->measuredPeakBytes},
                             {"prediction_error", round6(error)},
                             {"peak_rss_bytes", r->peakRssBytes},
                             {"device", args.run.device},
                             {"memory_source", r->memorySource},
                             {"step_time_s", round6(r->stepTimeS)},
                             {"step_time_min_s", round6(r->stepTimeMinS)},
                             {"measured_steps", r->measuredSteps},
                             {"forward_s", round6(r->forwardS)},
                             {"recompute_s", round6(r->recomputeS)},
                             {"backward_s", round6(r->backwardS)},
                             {"recompute_ratio", round6(c.sim.recomputeRatio)},
                             {"costs", file ? schedule::plannerParam(*file, "costs", "estimate") : p.model.measuredCosts ? "measured" : "estimate"},
                             {"scratch", scratchSource},
                             {"loss", r->loss},
                             {"resident_bytes", p.model.residentBytes},
                             {"stages", p.model.size()},
                             {"instructions", c.stream.size()}};
    if (blas.onCpu) {
      j["blas"] = blas.info.kind;
      j["blas_library"] = blas.info.library;
      j["blas_flops_share"] = round6(blas.flops.share());
    }
    if (file) j["schedule"] = args.schedule;
    else if (!p.model.measuredCosts) {
      j["matrix_product_weight"] = prices.matrixProductWeight;
      j["pool_window_weight"] = prices.poolWindowWeight;
    }
    if (measuresScratch) j["scratch_profile_time_s"] = round6(scratchSeconds);
    if (p.model.measuredCosts) {
      if (args.costs == "measured") j["profile_time_s"] = round6(costs->profileSeconds);
      else j["costs_file"] = args.costs;
      j["predicted_recompute_s"] = round6(predictedRecomputeSeconds(p.model, c.sim));
    }
    if (options.baseline) {
      j["store_all_step_time_s"] = round6(r->storeAllStepTimeS);
      j["step_time_ratio"] = round6(r->stepTimeRatio);
    }
    if (r->allocatedPeakBytes) j["allocated_peak_bytes"] = r->allocatedPeakBytes;
    if (r->reservedPeakBytes) j["reserved_peak_bytes"] = r->reservedPeakBytes;
    if (isCudaDevice(args.run.device)) j["cuda_alloc_conf"] = r->allocatorConfig;
    if (r->libraryWorkspaceBytes) j["library_workspace_bytes"] = r->libraryWorkspaceBytes;
    if (r->gradCheck)
      j["grad_check"] = {{"passed", r->gradCheck->passed}, {"max_abs_error", r->gradCheck->maxAbsError},
                         {"max_rel_error", r->gradCheck->maxRelError}, {"worst_parameter", r->gradCheck->worstParameter},
                         {"non_finite_parameters", r->gradCheck->nonFiniteParameters},
                         {"non_finite_loss", r->gradCheck->nonFiniteLoss}};
    io.out << j.dump(2) << "\n";
  } else {
    io.out << "run              " << plannerLabel << " schedule for " << args.model.name() << ", " << p.model.size()
           << " stages, " << c.stream.size() << " instructions, " << args.run.device << "\n";
    io.out << "budget           " << (budget ? formatBytes(*budget) : std::string(file ? "none (the schedule has none)" : "none (store-all)"));
    if (budget)
      io.out << " (" << budgetText << (budgetText.back() == '%' ? " of the store-all peak " + formatBytes(p.storeAllPeak) : "") << ")";
    io.out << "\n";
    io.out << "peak             measured " << formatBytes(r->measuredPeakBytes) << " at instruction " << r->measuredPeakInstruction + 1
           << " (" << plan::formatInstruction(c.stream[r->measuredPeakInstruction]) << "), predicted " << formatBytes(c.sim.peakBytes)
           << " (" << (error >= 0 ? "+" : "") << formatFixed(100 * error, 1) << "%); peak RSS " << formatBytes(r->peakRssBytes) << "\n";
    if (r->reservedPeakBytes)
      io.out << "cuda             caching allocator (" << (r->allocatorConfig.empty() ? "default settings" : r->allocatorConfig)
             << "): allocated " << formatBytes(r->allocatedPeakBytes) << ", reserved " << formatBytes(r->reservedPeakBytes)
             << " at peak; cuBLAS/cuDNN workspaces " << formatBytes(r->libraryWorkspaceBytes) << " (not counted above)\n";
    io.out << "step time        " << formatFixed(r->stepTimeS * 1000, 2) << " ms (median of " << r->measuredSteps << "): forward "
           << formatFixed(r->forwardS * 1000, 2) << " ms, recompute " << formatFixed(r->recomputeS * 1000, 2) << " ms, backward "
           << formatFixed(r->backwardS * 1000, 2) << " ms\n";
    if (options.baseline)
      io.out << "store-all step   " << formatFixed(r->storeAllStepTimeS * 1000, 2) << " ms (median, timed in this process next to each step); step "
             << formatFixed(r->stepTimeRatio, 3) << "x store-all (median of the pairs)\n";
    io.out << "recompute ratio  " << formatFixed(c.sim.recomputeRatio, 3);
    if (p.model.measuredCosts)
      io.out << " (FLOPs); costs "
             << (args.costs == "measured" ? "measured in " + formatFixed(costs->profileSeconds, 2) + " s" : "from " + args.costs)
             << ", predicted recompute " << formatFixed(predictedRecomputeSeconds(p.model, c.sim) * 1e3, 2) << " ms";
    else if (!file && budget) io.out << " (FLOPs); priced by the estimate: " << describePrices(prices, *graph);
    io.out << "\n";
    if (measuresScratch)
      io.out << "kernel scratch   measured on " << args.run.device << " in " << formatFixed(scratchSeconds, 2)
             << " s (the memory model takes it where it exceeds the CPU table)\n";
    else if (scratchSource == "costs_file")
      io.out << "kernel scratch   measured on " << costs->scratchDevice << ", from " << args.costs
             << " (the memory model takes it where it exceeds the CPU table)\n";
    if (blas.onCpu && blas.flops.blas > 0)
      io.out << "blas             " << blas.info.kind << (blas.info.library.empty() ? "" : " (" + blas.info.library + ")")
             << " for MatMul, Gemm and Einsum: " << formatFixed(100.0 * blas.flops.share(), 1) << "% of the forward's FLOPs\n";
    io.out << "loss             " << formatFixed(r->loss, 6) << "\n";
    if (r->gradCheck)
      io.out << "gradients        " << (r->gradCheck->passed ? "match" : "DIFFER FROM") << " store-all autograd: max abs error "
             << r->gradCheck->maxAbsError << ", max rel error " << r->gradCheck->maxRelError
             << (r->gradCheck->worstParameter.empty() ? "" : " (worst '" + r->gradCheck->worstParameter + "')")
             << (nonFinite.empty() ? "" : "; " + nonFinite) << "\n";
  }
  if (overBudget) {
    io.err << "tbp: error: measured peak " << r->measuredPeakBytes << " bytes exceeds the budget " << *budget << " bytes at instruction "
           << r->measuredPeakInstruction + 1 << " (" << plan::formatInstruction(c.stream[r->measuredPeakInstruction]) << ")\n";
    return exitCodeOf(ErrorCode::CheckFailed);
  }
  if (!nonFinite.empty()) {
    io.err << "tbp: error: the verified step has non-finite values: " << nonFinite << "\n";
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
  CLI::Option* budgetOption = app.add_option("--budget", args->budget, "peak memory of the step: 4GB, 4GiB, 512MB, bytes, 60% of store-all, or min (the tightest schedule); a built-in workload without it runs at 50% with --verify")
                                   ->type_name("SIZE")
                                   ->check(nonEmpty("give a size, a percentage or min"));
  CLI::Option* plannerOption = app.add_option("--planner", args->planner, "store-all|sqrt|interval-tree|revolve|optimal")
      ->check(CLI::IsMember({"store-all", "sqrt", "interval-tree", "revolve", "optimal"}));
  CLI::Option* orderOption = app.add_option("--order", args->order, "order heuristic: file|greedy|dfs")->check(CLI::IsMember({"file", "greedy", "dfs"}));
  CLI::Option* memorySlotsOption = app.add_option("--memory-slots", args->memorySlots, "memory granularity of the optimal planner (default 256)")->check(CLI::Range(8, 4096));
  CLI::Option* maxStagesOption = app.add_option("--max-stages", args->maxStages, "coarsen into at most N stages (default: the planner keeps its cheapest schedule of " + describeCounts(stageCountsToTry(0, SIZE_MAX, true)) + " stages)")->check(CLI::Range(1, 4096));
  app.add_option("--costs", args->costs,
                 "estimate|measured|FILE: price recomputation by FLOPs + 16 per byte moved (matrix products x25 on the reference BLAS), "
                 "by each op's forward time measured on "
                 "this device first (plans then vary with timing noise), or by a costs file from 'tbp profile'")
      ->type_name("COSTS");
  CLI::Option* scratchOption = app.add_option("--scratch", args->scratch,
                 "auto|static|measured: kernel temporaries in the memory model from tbp's table (measured with LibTorch 1.13 on "
                 "CPU at one thread) or measured on this device before planning; auto takes a --costs file's measurement, else "
                 "measures on CUDA and with more than one thread")
      ->check(CLI::IsMember({"auto", "static", "measured"}));
  app.add_option("--device", args->run.device, "cpu|cuda|cuda:N (cuda needs a LibTorch built with CUDA)")->type_name("DEVICE");
  app.add_flag("--verify", args->run.verify, "also run store-all and compare the loss and every parameter gradient");
  app.add_option("--seed", args->run.seed, "seed of inputs, targets and parameters without data");
  app.add_option("--threads", args->run.threads, "intra-op threads (0: LibTorch's default)")->check(CLI::Range(0, 1024));
  app.add_flag("--baseline", args->run.baseline,
               "also time a store-all step next to every step, in this process, and report the step-time ratio (median of the pairs)");
  app.add_option("--steps", args->run.steps, "measured steps (median time)")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", args->run.warmup, "unmeasured steps first")->check(CLI::Range(0, 100000));
  app.add_option("--min-time", args->run.minTimeS, "measure more steps (up to 1000) until they took this many seconds")
      ->check(finiteNumber(/*nonNegative=*/true))
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--format", args->format, "text|json")->check(CLI::IsMember({"text", "json"}));
  app.add_option("--optimizer", args->run.optimizer, "none|sgd|adam: update the parameters after backward")
      ->check(CLI::IsMember({"none", "sgd", "adam"}));
  app.add_option("--lr", args->run.lr, "learning rate (default 1e-3)")->check(finiteNumber(/*nonNegative=*/false));
  app.add_option("--input", args->inputs, "feed a graph input from a file, NAME=FILE (.npy or ONNX TensorProto .pb)")->type_name("NAME=FILE")->allow_extra_args(false);
  app.add_option("--save-grads", args->saveGrads, "write the first step's parameter gradients as .npy files and manifest.json")
      ->type_name("DIR")
      ->check(nonEmpty("name the folder to write"));
  app.add_option("--schedule", args->schedule,
                 "run this schedule file (tbp plan -o) as written instead of planning: its budget, stages and instructions; "
                 "a schedule planned with a costs file's scratch needs that file as --costs")
      ->type_name("FILE")
      ->excludes(budgetOption)
      ->excludes(plannerOption)
      ->excludes(orderOption)
      ->excludes(memorySlotsOption)
      ->excludes(maxStagesOption)
      ->excludes(scratchOption);
  return [args](Io& io) { return runRun(*args, io); };
}

} // namespace tbp::driver
