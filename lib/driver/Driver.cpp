#include "tbp/driver/Driver.h"

#include "Commands.h"

#include "tbp/frontend/onnx/OnnxImporter.h"
#include "tbp/ir/OpRules.h"
#include "tbp/ir/TextFormat.h"
#include "tbp/ir/Verify.h"
#include "tbp/plan/Planners.h"
#include "tbp/schedule/CostsFile.h"
#include "tbp/support/Bytes.h"
#include "tbp/support/FileIO.h"
#include "tbp/support/Logging.h"
#include "tbp/workloads/Workloads.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdlib>
#include <map>
#include <sstream>
#include <filesystem>
#include <iostream>

namespace tbp::driver {

namespace fs = std::filesystem;

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"analyze", "report shapes, activation sizes, live frontiers, lower bounds and compressibility", setupAnalyze},
      {"plan", "compile a rematerialization schedule that fits a memory budget", setupPlan},
      {"validate", "check a schedule file against its model", setupValidate},
      {"run", "run a real training step under a schedule with LibTorch; measure and verify it", setupRun},
      {"profile", "time every op's forward with LibTorch and write the costs file the planner can price by", setupProfile},
      {"compare", "report what changed between two schedule files; exit 1 past a threshold", setupCompare},
      {"bench", "benchmark the planners on the built-in workloads against store-all (and PyTorch)", setupBench},
      {"export-workload", "write a built-in workload as an ONNX model", setupExportWorkload},
      {"dump", "print the imported graph in tbp's text IR", setupDump},
      {"ops", "list the ONNX op types tbp imports", setupOps},
  };
  return table;
}

CLI::Validator outputFile() {
  return CLI::Validator(
      [](std::string& path) -> std::string {
        if (path.empty()) return "an empty path; name the file to write";
        std::error_code ec;
        if (path != "-" && std::filesystem::is_directory(path, ec)) return "'" + path + "' is a folder; name a file to write";
        return {};
      },
      "", "output file");
}

CLI::Validator finiteNumber(bool nonNegative) {
  return CLI::Validator(
      [nonNegative](std::string& v) {
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        if (end == v.c_str() || *end != '\0' || !std::isfinite(x)) return "'" + v + "' is not a finite number";
        return nonNegative && x < 0 ? "'" + v + "' is negative" : std::string();
      },
      "", "finite number");
}

CLI::Validator nonEmpty(const std::string& what) {
  return CLI::Validator([what](std::string& value) { return value.empty() ? "an empty value; " + what : std::string(); }, "", "non-empty");
}

Status checkNotTheModel(const std::string& option, const std::string& output, const ModelOptions& model) {
  if (output.empty() || output == "-" || model.path.empty() || model.isWorkload()) return Status::ok();
  std::error_code ec;
  if (std::filesystem::equivalent(output, model.path, ec) && !ec)
    return usageError(option + " " + output + ": is the model this command reads; tbp never writes over its inputs");
  return Status::ok();
}

void addModelOptions(CLI::App& app, ModelOptions& options) {
  app.add_option("MODEL", options.path, "model file (.onnx, or .tbp text IR); or a built-in workload with --workload/--profile");
  app.add_option("--workload", options.workload, "built-in workload instead of a file (default gpt2 when --profile is given)")
      ->check(CLI::IsMember(workloads::workloadNames()));
  app.add_option("--profile", options.profile, "size of the built-in workload: small|medium|large (default small)")
      ->check(CLI::IsMember({"small", "medium", "large"}));
  // One value per occurrence: `--dim batch=8 model.onnx` must not take the model as a second binding.
  app.add_option("--dim", options.dims, "bind a symbolic dimension, NAME=VALUE (repeatable)")->type_name("NAME=VALUE")->allow_extra_args(false);
  app.add_option("--freeze", options.freeze, "initializers to treat as frozen constants")->delimiter(',')->type_name("NAME,...")->allow_extra_args(false);
  app.add_flag("--no-fuse", options.noFuse, "do not fuse expanded GELUs, SiLUs and GroupNorms into one tbp op each at ONNX import");
  app.add_option("--loss", options.loss, "loss appended when the model has none: sum|mean|mse|cross_entropy")
      ->check(CLI::IsMember({"sum", "mean", "mse", "cross_entropy"}));
}

namespace {

Expected<std::map<std::string, int64_t>> parseDims(const std::vector<std::string>& dims) {
  std::map<std::string, int64_t> out;
  for (const std::string& d : dims) {
    size_t eq = d.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == d.size())
      return usageError("--dim '" + d + "': expected NAME=VALUE, e.g. --dim batch=8");
    std::string value = d.substr(eq + 1);
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(value.c_str(), &end, 10);
    if (errno || end != value.c_str() + value.size())
      return usageError("--dim '" + d + "': '" + value + "' is not an integer");
    if (v < 0) return usageError("--dim '" + d + "': a dimension cannot be negative");
    // A zero batch or sequence makes empty tensors: a mean loss over nothing is NaN.
    if (v == 0) return usageError("--dim '" + d + "': a dimension must be at least 1");
    out[d.substr(0, eq)] = v;
  }
  return out;
}

size_t editDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

} // namespace

Expected<ir::Graph> loadModel(const ModelOptions& options, bool withData, bool withLoss) {
  Expected<std::map<std::string, int64_t>> dims = parseDims(options.dims);
  if (!dims) return dims.status();
  if (options.path.empty() && !options.isWorkload())
    return usageError("no model: give a MODEL file (.onnx or .tbp), or a built-in workload with --workload W and/or --profile P");
  if (!options.path.empty() && (!options.workload.empty() || !options.profile.empty()))
    return usageError(options.path + ": give either a MODEL file or --workload/--profile, not both");
  std::string ext = fs::path(options.path).extension().string();
  std::optional<ir::Graph> graph;
  if (options.isWorkload()) {
    if (!options.dims.empty()) return usageError(options.name() + ": --dim applies to model files; workload sizes come from --profile");
    Expected<ir::Graph> built = workloads::buildWorkload(options.workloadName(), *workloads::parseProfile(options.profileName()), withData);
    if (!built) return built.status();
    graph = std::move(*built);
    for (const std::string& name : options.freeze) {
      auto id = graph->findValue(name);
      if (!id || graph->value(*id).kind != ir::ValueKind::Parameter)
        return usageError(options.name() + ": --freeze " + name + ": the workload has no parameter of that name");
      graph->setKind(*id, ir::ValueKind::Constant);
    }
  } else if (ext == ".tbp") {
    if (!options.dims.empty() || !options.freeze.empty())
      return usageError(options.path + ": --dim and --freeze apply to ONNX models; text IR shapes are concrete");
    Expected<std::string> text = readFile(options.path);
    if (!text) return text.status();
    Expected<ir::Graph> parsed = ir::parseGraph(*text, options.path);
    if (!parsed) return parsed.status();
    Status ok = ir::verify(*parsed, options.path);
    if (!ok) return ok;
    graph = std::move(*parsed);
  } else if (ext == ".onnx") {
    frontend::OnnxImportOptions importOptions;
    importOptions.dims = *dims;
    importOptions.freeze = options.freeze;
    importOptions.loadData = withData;
    importOptions.fuse = !options.noFuse;
    Expected<ir::Graph> imported = frontend::importOnnxFile(options.path, importOptions);
    if (!imported) return imported.status();
    graph = std::move(*imported);
  } else if (ext == ".pt" || ext == ".jaxpr") {
    return badInput(options.path + ": " + (ext == ".pt" ? "TorchScript" : "JAXPR") +
                    " models are not supported by this version of tbp yet; export the model to ONNX");
  } else {
    return badInput(options.path + ": unknown model format '" + ext + "': expected .onnx or .tbp");
  }
  if (withLoss && !ir::hasLoss(*graph)) {
    std::optional<ir::LossKind> loss = ir::parseLossKind(options.loss);
    if (!loss) return usageError("unknown loss '" + options.loss + "'");
    TBP_RETURN_IF_ERROR(ir::appendLoss(*graph, *loss, options.name()));
  }
  return std::move(*graph);
}

Expected<ir::Graph> loadRunnableModel(const ModelOptions& options) {
  if (!runtime::available())
    return Status(ErrorCode::Internal, "this build of tbp has no LibTorch runtime; install libtorch-dev and rebuild with -DTBP_WITH_TORCH=ON");
  Expected<ir::Graph> graph = loadModel(options, /*withData=*/true);
  if (!graph) return graph.status();
  std::vector<std::string> missing = runtime::missingKernels(*graph);
  if (!missing.empty()) {
    std::string list;
    for (const std::string& s : missing) list += (list.empty() ? "" : ", ") + s;
    return badInput(options.name() + ": the runtime has no kernel yet for " + list);
  }
  return graph;
}

PreparedStages prepare(const ir::Graph& graph, const std::string& orderName, size_t maxStages, const plan::NodeCosts& costs,
                       const plan::EstimatePrices& prices) {
  std::optional<analysis::OrderHeuristic> forced = analysis::parseOrder(orderName);
  std::optional<PreparedStages> best;
  for (analysis::OrderHeuristic h : analysis::kAllOrders) {
    if (forced && *forced != h) continue;
    std::vector<ir::NodeId> order = analysis::computeOrder(graph, h);
    analysis::MemoryAnalysis memory = analysis::analyzeMemory(graph, order);
    // The same choice as `tbp analyze`: lowest store-all peak, then lowest frontier peak.
    if (best && (memory.storeAllPeakBytes > best->memory.storeAllPeakBytes ||
                 (memory.storeAllPeakBytes == best->memory.storeAllPeakBytes &&
                  memory.frontier.peakBytes >= best->memory.frontier.peakBytes)))
      continue;
    // Cuts from the machine-independent estimate, so measured costs and a device's prices
    // reprice the same stages (same store-all peak, same percentage budgets) rather than
    // redraw them with every timing.
    std::vector<uint32_t> cuts = plan::chooseCuts(graph, order, maxStages);
    plan::StageModel model = plan::buildStageModel(graph, order, cuts, costs, prices);
    uint64_t storeAll = plan::simulate(model, plan::storeAllStream(model.size()))->peakBytes;
    best = PreparedStages{h, std::move(memory), std::move(model), storeAll};
  }
  return std::move(*best);
}

std::shared_ptr<const PreparedStages> prepareWithOptimizer(const ir::Graph& graph, const std::string& orderName, size_t maxStages,
                                                           const plan::NodeCosts& costs, const plan::EstimatePrices& prices,
                                                           const std::string& optimizer) {
  auto p = std::make_shared<PreparedStages>(prepare(graph, orderName, maxStages, costs, prices));
  if (optimizer != "none") {
    const plan::OptimizerMemory o = plan::optimizerMemory(graph, optimizer);
    plan::addOptimizer(p->model, o);
    p->storeAllPeak = plan::simulate(p->model, plan::storeAllStream(p->model.size()))->peakBytes;
    p->memory.lowerBoundBytes = std::max(p->memory.lowerBoundBytes + o.stateBytes, p->model.residentBytes + p->model.gradientBytes + o.updateBytes);
  }
  return p;
}

std::string describeCounts(const std::vector<size_t>& counts) {
  std::string s;
  for (size_t i = 0; i < counts.size(); ++i) s += (i == 0 ? "" : i + 1 == counts.size() ? " or " : ", ") + std::to_string(counts[i]);
  return s;
}

std::vector<size_t> stageCountsToTry(size_t maxStages, size_t ops, bool searches) {
  if (maxStages != 0) return {maxStages};
  std::vector<size_t> out;
  for (size_t count : kAutoStageCounts) {
    out.push_back(count);
    if (!searches || count >= ops) break;
  }
  return out;
}

GranularPlan planAcrossStageCounts(const std::vector<size_t>& counts, const std::function<std::shared_ptr<const PreparedStages>(size_t)>& prepareAt,
                                   plan::PlannerKind kind, const plan::PlanOptions& options, std::optional<uint64_t> budget, bool tightest) {
  TBP_CHECK(!counts.empty());
  std::optional<GranularPlan> best;
  std::vector<size_t> tried;
  auto score = [](const GranularPlan& g) {
    const plan::Candidate& c = g.plan->chosen;
    const uint64_t perInstruction = g.stages->model.measuredCosts ? kInstructionOverheadNs : kInstructionOverheadCost;
    return static_cast<long double>(c.sim.forwardCost) + static_cast<long double>(perInstruction) * static_cast<long double>(c.stream.size());
  };
  for (size_t count : counts) {
    std::shared_ptr<const PreparedStages> stages = prepareAt(count);
    std::vector<plan::Candidate> cands =
        tightest ? plan::tightestCandidates(stages->model, kind, options) : plan::candidates(stages->model, kind, options);
    const uint64_t minFeasible = plan::minFeasibleBytes(cands);
    GranularPlan g{stages, plan::chooseCandidate(std::move(cands), kind, tightest ? std::optional<uint64_t>(minFeasible) : budget), minFeasible, {}};
    tried.push_back(stages->model.size());
    spdlog::debug("{} stages: {}", stages->model.size(),
                  g.plan ? "recompute cost " + std::to_string(g.plan->chosen.sim.forwardCost - std::min(g.plan->chosen.sim.forwardCost, stages->model.onePassCost)) +
                               ", " + std::to_string(g.plan->chosen.stream.size()) + " instructions, peak " + std::to_string(g.plan->chosen.sim.peakBytes)
                           : g.plan.status().message());
    bool better = !best;
    if (best) {
      if (tightest) better = g.minFeasible < best->minFeasible || (g.minFeasible == best->minFeasible && score(g) < score(*best));
      else if (g.plan.hasValue() != best->plan.hasValue()) better = g.plan.hasValue();
      else better = g.plan ? score(g) < score(*best) : g.minFeasible < best->minFeasible;
    }
    if (better) best = std::move(g);
  }
  best->stagesTried = std::move(tried);
  return std::move(*best);
}

Expected<plan::EstimatePrices> estimatePricesFor(const std::string& device) {
  const bool cpu = !isCudaDevice(device);
  plan::EstimatePrices prices = plan::devicePrices(cpu, cpu && runtime::cpuBlas().kind == "reference");
  if (const char* env = std::getenv("TBP_MATRIX_PRODUCT_WEIGHT")) {
    const std::string text = env;
    const bool digits = !text.empty() && text.size() <= 4 && text.find_first_not_of("0123456789") == std::string::npos;
    const unsigned long weight = digits ? std::stoul(text) : 0;
    if (weight < 1 || weight > 1000)
      return usageError("TBP_MATRIX_PRODUCT_WEIGHT='" + text + "': expected an integer from 1 to 1000 (what a matrix product's FLOP costs "
                        "against a convolution's)");
    prices.matrixProductWeight = weight;
  }
  return prices;
}

bool scratchTableHolds(const runtime::RunOptions& run) {
  // oneDNN's convolution backward keeps per-thread weight-gradient buffers (2026-12-05).
  return !isCudaDevice(run.device) && runtime::intraOpThreads(run.threads) == 1;
}

bool hasPooling(const ir::Graph& graph) {
  for (ir::NodeId n = 0; n < graph.numNodes(); ++n)
    if (plan::isWindowPool(graph.node(n).op)) return true;
  return false;
}

std::string describePrices(const plan::EstimatePrices& prices, const ir::Graph& graph) {
  std::string s = "FLOPs + " + std::to_string(prices.perByte) + " a byte moved";
  if (prices.matrixProductWeight != 1)
    s += "; matrix products x" + std::to_string(prices.matrixProductWeight) +
         (std::getenv("TBP_MATRIX_PRODUCT_WEIGHT") ? " (TBP_MATRIX_PRODUCT_WEIGHT)" : " (they run on the reference BLAS here)");
  if (prices.poolWindowWeight != 1 && hasPooling(graph))
    s += "; pooling windows x" + std::to_string(prices.poolWindowWeight) + " (tbp's CPU pooling loops)";
  return s;
}

Expected<ResolvedCosts> measureCosts(const ir::Graph& graph, const runtime::RunOptions& run, int repeats) {
  auto t0 = std::chrono::steady_clock::now();
  Expected<plan::NodeCosts> measured =
      runtime::profileForwardCosts(graph, analysis::computeOrder(graph, analysis::OrderHeuristic::File), run, repeats);
  if (!measured) return measured.status();
  ResolvedCosts r;
  r.costs = std::move(*measured);
  r.profileSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

Expected<ScratchMeasurement> measureScratch(const ir::Graph& graph, const runtime::RunOptions& run) {
  auto t0 = std::chrono::steady_clock::now();
  auto measured = runtime::profileScratch(graph, analysis::computeOrder(graph, analysis::OrderHeuristic::File), run);
  if (!measured) return measured.status();
  for (ir::NodeId n = 0; n < graph.numNodes(); ++n) {
    const ir::Node& node = graph.node(n);
    if ((*measured)[n] && !node.scratch)
      spdlog::debug("scratch {:<20} {:<40} forward {:>10} (table {:>10}) backward {:>10} (table {:>10})", ir::opName(node.op), node.name,
                    (*measured)[n]->forward, ir::forwardScratchBytes(graph, node), (*measured)[n]->backward,
                    ir::backwardScratchBytes(graph, node));
  }
  return ScratchMeasurement{std::move(*measured), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

Expected<ResolvedCosts> resolveCosts(const std::string& spec, const ir::Graph& graph, const runtime::RunOptions& run) {
  ResolvedCosts r;
  if (spec == "estimate") return r;
  if (spec == "measured") return measureCosts(graph, run);
  std::error_code ec;
  if (!fs::is_regular_file(spec, ec))
    return usageError("--costs '" + spec + "': expected estimate, measured, or a costs file written by 'tbp profile -o' (no such file)");
  Expected<std::string> text = readFile(spec);
  if (!text) return text.status();
  Expected<schedule::CostsFile> file = schedule::readCosts(*text, graph, spec);
  if (!file) return file.status();
  r.costs = std::move(file->nodeNs);
  r.scratch = std::move(file->scratch);
  r.scratchDevice = file->device;
  return r;
}

void applyScratch(ir::Graph& graph, const NodeScratch& scratch) {
  for (ir::NodeId n = 0; n < graph.numNodes() && n < scratch.size(); ++n) graph.setMeasuredScratch(n, scratch[n]);
}

double predictedRecomputeSeconds(const plan::StageModel& model, const plan::SimResult& sim) {
  if (!model.measuredCosts) return 0;
  return static_cast<double>(sim.forwardCost - std::min(sim.forwardCost, model.onePassCost)) * 1e-9;
}

namespace {

BlasFlops blasFlops(const ir::Graph& graph) {
  BlasFlops f;
  for (ir::NodeId n = 0; n < graph.numNodes(); ++n) {
    const ir::Node& node = graph.node(n);
    const uint64_t flops = ir::estimateFlops(graph, node);
    f.total += flops;
    if (plan::isMatrixProduct(node.op)) f.blas += flops;
  }
  return f;
}

std::string referenceBlasWarning(const BlasFlops& f, const runtime::BlasInfo& blas) {
  if (blas.kind != "reference" || f.blas < 1'000'000'000) return "";
  return "MatMul, Gemm and Einsum (" + formatFixed(100.0 * f.share(), 1) + "% of the forward's FLOPs) run on the reference BLAS " +
         blas.library +
         ", about 5 GFLOP/s a core, tens of times slower than the convolutions' oneDNN; a tuned libblas.so.3 runs them at full speed "
         "(Debian: apt install libopenblas0-openmp; docs/runtime.md \"BLAS\")";
}

} // namespace

BlasUse checkBlas(const ir::Graph& graph, const std::string& device, const std::string& model) {
  BlasUse use;
  use.onCpu = !isCudaDevice(device);
  if (use.onCpu) use.info = runtime::cpuBlas();
  use.flops = blasFlops(graph);
  if (const std::string w = use.onCpu ? referenceBlasWarning(use.flops, use.info) : ""; !w.empty()) spdlog::warn("{}: {}", model, w);
  return use;
}

std::string costsByOp(const ir::Graph& graph, const plan::NodeCosts& costs, size_t rows) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> byOp; // op -> (ns, FLOPs)
  uint64_t total = 0;
  for (ir::NodeId n = 0; n < graph.numNodes() && n < costs.size(); ++n) {
    auto& [ns, flops] = byOp[ir::opName(graph.node(n).op)];
    ns += costs[n];
    flops += ir::estimateFlops(graph, graph.node(n));
    total += costs[n];
  }
  std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> sorted(byOp.begin(), byOp.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  std::ostringstream o;
  o << "forward " << formatFixed(static_cast<double>(total) * 1e-6, 2) << " ms without autograd, by op:\n";
  for (size_t i = 0; i < sorted.size() && i < rows; ++i) {
    const auto& [op, figures] = sorted[i];
    std::string name = op + std::string(op.size() < 22 ? 22 - op.size() : 1, ' ');
    o << "  " << name << formatFixed(static_cast<double>(figures.first) * 1e-6, 2) << " ms  "
      << formatFixed(100.0 * static_cast<double>(figures.first) / static_cast<double>(std::max<uint64_t>(total, 1)), 1) << "%  "
      << formatFixed(static_cast<double>(figures.second) * 1e-9, 3) << " GFLOP\n";
  }
  return o.str();
}

int reportError(Io& io, const Status& status) {
  io.err << "tbp: error: " << status.message() << "\n";
  return exitCodeOf(status.code());
}

Status writeOutput(Io& io, const std::string& path, const std::string& contents) {
  if (path == "-") {
    io.out << contents;
    return Status::ok();
  }
  return writeFileAtomic(path, contents);
}

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Io io{out, err};
  CLI::App app{"tbp: compiles rematerialization schedules that make a training step fit a memory budget", "tbp"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("tbp ") + TBP_VERSION);
  int verbose = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbose, "more log output (-vv for debug)");
  app.add_flag("-q,--quiet", quiet, "only errors");
  std::vector<std::function<int(Io&)>> actions(commands().size());
  std::vector<CLI::App*> subs;
  for (size_t i = 0; i < commands().size(); ++i) {
    CLI::App* sub = app.add_subcommand(commands()[i].name, commands()[i].summary);
    sub->add_flag("-v,--verbose", verbose, "more log output (-vv for debug)");
    sub->add_flag("-q,--quiet", quiet, "only errors");
    actions[i] = commands()[i].setup(*sub);
    subs.push_back(sub);
  }

  if (args.size() >= 2 && !args[1].empty() && args[1][0] != '-') {
    bool known = false;
    std::string best;
    size_t bestDistance = 3;
    for (const Command& c : commands()) {
      if (args[1] == c.name) known = true;
      size_t d = editDistance(args[1], c.name);
      if (d < bestDistance) { bestDistance = d; best = c.name; }
    }
    if (!known) {
      err << "tbp: error: unknown command '" << args[1] << "'";
      if (!best.empty()) err << "; did you mean '" << best << "'?";
      err << "\nrun 'tbp --help' for the list of commands\n";
      return exitCodeOf(ErrorCode::Usage);
    }
  }

  std::vector<std::string> reversed(args.rbegin(), args.rend() - 1);
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion& v) {
    out << v.what() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    // Help requested on a subcommand arrives as CallForHelp too; anything else is misuse.
    if (e.get_exit_code() == 0) {
      for (CLI::App* sub : subs)
        if (sub->parsed()) { out << sub->help(); return 0; }
      out << app.help();
      return 0;
    }
    err << "tbp: error: " << e.what() << "\n";
    for (CLI::App* sub : subs)
      if (sub->parsed()) { err << "run 'tbp " << sub->get_name() << " --help' for its options\n"; break; }
    return exitCodeOf(ErrorCode::Usage);
  }
  setupLogging(quiet ? -1 : verbose);
  for (size_t i = 0; i < subs.size(); ++i) {
    if (!subs[i]->parsed()) continue;
    try {
      return actions[i](io);
    } catch (const std::exception& e) {
      return reportError(io, internalError(std::string("unexpected failure: ") + e.what()));
    }
  }
  return exitCodeOf(ErrorCode::Usage);
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  return run(args, std::cout, std::cerr);
}

} // namespace tbp::driver
