// `tbp export-workload` and `tbp bench`: the built-in workloads as ONNX files, and the benchmark
// table of tbp's planners against store-all (and PyTorch, with --with-pytorch).
//
// `tbp bench` runs every row in its own `tbp run` process: each row's peak RSS is its own, a
// row that runs out of memory takes only itself down, and gradients are compared against the
// store-all row through `--save-grads` files.

#include "Commands.h"

#include "tbp/support/Bytes.h"
#include "tbp/support/FileIO.h"
#include "tbp/support/Npy.h"
#include "tbp/workloads/Workloads.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace tbp::driver {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

// ------------------------------------------------------------------ export-workload

struct ExportArgs {
  std::string workload;
  std::string profile = "small";
  std::string output;
};

int runExport(const ExportArgs& args, Io& io) {
  Expected<std::string> bytes = workloads::exportWorkload(args.workload, *workloads::parseProfile(args.profile));
  if (!bytes) return reportError(io, bytes.status());
  if (Status s = writeOutput(io, args.output, *bytes); !s) return reportError(io, s);
  if (args.output != "-")
    io.err << "wrote " << args.output << ": " << args.workload << " (" << args.profile << "), "
           << workloads::describe(args.workload, *workloads::parseProfile(args.profile)) << ", " << formatBytes(bytes->size()) << "\n";
  return 0;
}

// ------------------------------------------------------------------ subprocesses

struct ProcessResult {
  int exitCode = -1;
  std::string out, err;
};

/// Runs `argv` with stdout and stderr captured in files under `scratch`.
ProcessResult runProcess(const std::vector<std::string>& argv, const fs::path& scratch) {
  ProcessResult r;
  const std::string outPath = (scratch / "stdout").string(), errPath = (scratch / "stderr").string();
  pid_t pid = fork();
  if (pid < 0) {
    r.err = std::string("cannot start a process: ") + std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    int out = open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), err = open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || err < 0) _exit(127);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    std::vector<char*> cargv;
    for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  if (Expected<std::string> o = readFile(outPath)) r.out = *o;
  if (Expected<std::string> e = readFile(errPath)) r.err = *e;
  return r;
}

std::string selfPath() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("tbp") : p.string();
}

/// The last non-empty line of `text`, without the `tbp: error: ` prefix.
std::string lastLine(const std::string& text) {
  std::string line;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) line = l;
  const std::string prefix = "tbp: error: ";
  if (line.rfind(prefix, 0) == 0) line = line.substr(prefix.size());
  return line;
}

// ------------------------------------------------------------------ gradients

struct GradCompare {
  bool passed = true;
  double maxAbs = 0, maxRel = 0;
  std::string worst;
};

/// Compares `--save-grads` folders (same parameter names, fp32): max |got - ref| against
/// atol + rtol * max|ref| per parameter, as `tbp run --verify` does.
Expected<GradCompare> compareGradients(const fs::path& refDir, const fs::path& gotDir, double atol, double rtol) {
  Expected<std::string> refText = readFile((refDir / "manifest.json").string()), gotText = readFile((gotDir / "manifest.json").string());
  if (!refText) return refText.status();
  if (!gotText) return gotText.status();
  json ref = json::parse(*refText, nullptr, false), got = json::parse(*gotText, nullptr, false);
  if (ref.is_discarded() || got.is_discarded()) return Status(ErrorCode::Internal, "unreadable gradient manifest");
  std::map<std::string, std::string> gotFiles;
  for (const auto& p : got["parameters"]) gotFiles[p["name"].get<std::string>()] = p["file"].get<std::string>();
  GradCompare c;
  for (const auto& p : ref["parameters"]) {
    const std::string name = p["name"].get<std::string>();
    auto it = gotFiles.find(name);
    if (it == gotFiles.end()) return Status(ErrorCode::Internal, "parameter '" + name + "' has no gradient");
    Expected<NpyArray> a = readNpy((refDir / p["file"].get<std::string>()).string()), b = readNpy((gotDir / it->second).string());
    if (!a) return a.status();
    if (!b) return b.status();
    if (a->descr != "<f4" || b->descr != "<f4" || a->data.size() != b->data.size()) continue;
    const size_t n = a->data.size() / 4;
    const float* x = reinterpret_cast<const float*>(a->data.data());
    const float* y = reinterpret_cast<const float*>(b->data.data());
    double maxAbs = 0, scale = 0;
    for (size_t i = 0; i < n; ++i) {
      maxAbs = std::max(maxAbs, std::fabs(static_cast<double>(x[i]) - static_cast<double>(y[i])));
      scale = std::max(scale, std::fabs(static_cast<double>(x[i])));
    }
    if (maxAbs > c.maxAbs || c.worst.empty()) {
      c.maxAbs = std::max(c.maxAbs, maxAbs);
      if (maxAbs >= c.maxAbs) c.worst = name;
    }
    c.maxRel = std::max(c.maxRel, scale > 0 ? maxAbs / scale : maxAbs);
    if (maxAbs > atol + rtol * scale) c.passed = false;
  }
  const double lossRef = ref["loss"].get<double>(), lossGot = got["loss"].get<double>();
  if (std::fabs(lossRef - lossGot) > atol + rtol * std::fabs(lossRef)) c.passed = false;
  return c;
}

// ------------------------------------------------------------------ bench

struct BenchArgs {
  std::string profile = "small";
  std::vector<std::string> targets = {"transformer", "gpt2", "resnet", "long_context", "unet"};
  std::vector<std::string> modes = {"store-all", "sqrt", "interval-tree", "optimal"};
  std::vector<std::string> budgets = {"50%", "30%"};
  int trials = 3;
  int warmup = 1;
  double minTime = 3.0;
  int threads = 0;
  std::string resultsDir = "results";
  std::string format = "text";
  bool withPytorch = false;
  std::string pytorchScript;
  std::string python = "/usr/bin/python3";
};

/// One tbp row: `tbp run` under `mode` at `budget` (empty for store-all).
json tbpRow(const BenchArgs& args, const std::string& target, const std::string& mode, const std::string& budget, const fs::path& scratch,
            const fs::path& gradDir) {
  json row{{"source", "tbp"}, {"mode", mode}, {"budget", budget.empty() ? json(nullptr) : json(budget)}};
  double fraction = 0;
  if (!budget.empty()) {
    Expected<Budget> b = parseBudget(budget);
    fraction = b && b->isFraction ? b->fraction : 0;
  }
  row["budget_fraction"] = budget.empty() || fraction == 0 ? json(nullptr) : json(fraction);
  std::vector<std::string> argv{selfPath(), "run", "--workload", target, "--profile", args.profile, "--format", "json",
                                "--steps", std::to_string(args.trials), "--warmup", std::to_string(args.warmup),
                                "--min-time", std::to_string(args.minTime), "--save-grads", gradDir.string(), "-q"};
  if (args.threads > 0) argv.insert(argv.end(), {"--threads", std::to_string(args.threads)});
  argv.insert(argv.end(), {"--planner", mode});
  if (!budget.empty()) argv.insert(argv.end(), {"--budget", budget});
  ProcessResult p = runProcess(argv, scratch);
  json out = json::parse(p.out, nullptr, false);
  const bool hasReport = !out.is_discarded() && out.is_object() && out.contains("measured_peak_bytes");
  if (p.exitCode == exitCodeOf(ErrorCode::Infeasible)) row["status"] = "infeasible";
  else if (p.exitCode == 0 && hasReport) row["status"] = "ok";
  else if (p.exitCode == exitCodeOf(ErrorCode::CheckFailed) && hasReport) row["status"] = "over_budget";
  else row["status"] = "failed";
  row["error"] = row["status"] == "ok" ? json(nullptr) : json(lastLine(p.err.empty() ? "exit status " + std::to_string(p.exitCode) : p.err));
  for (const char* key : {"budget_bytes", "measured_peak_bytes", "predicted_peak_bytes", "prediction_error", "peak_rss_bytes", "step_time_s", "step_time_min_s", "measured_steps",
                          "forward_s", "recompute_s", "backward_s", "recompute_ratio", "resident_bytes", "loss"})
    row[key] = hasReport && out.contains(key) ? out[key] : json(nullptr);
  return row;
}

std::string scriptPath(const BenchArgs& args) {
  if (!args.pytorchScript.empty()) return args.pytorchScript;
  if (const char* env = std::getenv("TBP_PYTORCH_BASELINE")) return env;
  const fs::path exe = fs::path(selfPath()).parent_path();
  for (const fs::path& candidate : {exe / ".." / ".." / "bench" / "pytorch_baseline.py", exe / ".." / "share" / "tbp" / "pytorch_baseline.py"}) {
    std::error_code ec;
    if (fs::exists(candidate, ec)) return fs::weakly_canonical(candidate, ec).string();
  }
  return {};
}

json pytorchRow(const BenchArgs& args, const std::string& target, const std::string& mode, const fs::path& scratch) {
  json row{{"source", "pytorch"}, {"mode", mode}, {"budget", nullptr}, {"budget_fraction", nullptr}};
  const std::string script = scriptPath(args);
  if (script.empty()) {
    row["status"] = "failed";
    row["error"] = "bench/pytorch_baseline.py not found (give --pytorch-script PATH)";
    return row;
  }
  std::vector<std::string> argv{args.python, script, "--workload", target, "--profile", args.profile, "--mode", mode,
                                "--trials", std::to_string(args.trials), "--warmup", std::to_string(args.warmup),
                                "--min-time", std::to_string(args.minTime)};
  if (args.threads > 0) argv.insert(argv.end(), {"--threads", std::to_string(args.threads)});
  ProcessResult p = runProcess(argv, scratch);
  json out = json::parse(p.out, nullptr, false);
  if (p.exitCode != 0 || out.is_discarded() || !out.is_object()) {
    row["status"] = "failed";
    row["error"] = lastLine(p.err.empty() ? "exit status " + std::to_string(p.exitCode) : p.err);
    return row;
  }
  row["status"] = "ok";
  row["error"] = nullptr;
  row["segments"] = out.value("segments", json(nullptr));
  row["measured_peak_bytes"] = out["peak_bytes"];
  row["peak_rss_bytes"] = out["peak_rss_bytes"];
  row["step_time_s"] = out["median_step_s"];
  if (out.contains("step_times_s") && out["step_times_s"].is_array() && !out["step_times_s"].empty()) {
    double fastest = out["step_times_s"][0].get<double>();
    for (const json& t : out["step_times_s"]) fastest = std::min(fastest, t.get<double>());
    row["step_time_min_s"] = fastest;
  }
  row["loss"] = out.value("loss", json(nullptr));
  return row;
}

/// Step ratio and activation memory saved, against the same source's store-all row.
void relate(json& rows, uint64_t resident) {
  for (const char* source : {"tbp", "pytorch"}) {
    const json* base = nullptr;
    for (const json& r : rows)
      if (r["source"] == source && r["mode"] == "store-all" && r["status"] == "ok") base = &r;
    for (json& r : rows) {
      if (r["source"] != source) continue;
      const bool ok = base && r["status"] != "failed" && r["status"] != "infeasible" && r["step_time_s"].is_number();
      r["step_ratio"] = ok ? json(std::round(r["step_time_s"].get<double>() / (*base)["step_time_s"].get<double>() * 1000) / 1000) : json(nullptr);
      // The same ratio of the fastest steps: noise on a shared machine only adds time.
      const bool okMin = ok && r.contains("step_time_min_s") && r["step_time_min_s"].is_number() && base->contains("step_time_min_s") &&
                         (*base)["step_time_min_s"].is_number() && (*base)["step_time_min_s"].get<double>() > 0;
      r["step_ratio_min"] =
          okMin ? json(std::round(r["step_time_min_s"].get<double>() / (*base)["step_time_min_s"].get<double>() * 1000) / 1000) : json(nullptr);
      if (ok && r["measured_peak_bytes"].is_number()) {
        const double act0 = static_cast<double>((*base)["measured_peak_bytes"].get<uint64_t>()) - static_cast<double>(resident);
        const double act = static_cast<double>(r["measured_peak_bytes"].get<uint64_t>()) - static_cast<double>(resident);
        r["activation_saved_fraction"] = act0 > 0 ? json(std::round((1.0 - act / act0) * 1000) / 1000) : json(nullptr);
      } else {
        r["activation_saved_fraction"] = nullptr;
      }
    }
  }
}

std::string cell(const json& v, int decimals = 3) {
  if (v.is_null()) return "-";
  if (v.is_number_float()) return formatFixed(v.get<double>(), decimals);
  if (v.is_number()) return std::to_string(v.get<uint64_t>());
  return v.get<std::string>();
}

std::string bytesCell(const json& v) { return v.is_number() ? formatBytes(v.get<uint64_t>()) : "-"; }

void printTable(Io& io, const std::vector<json>& reports) {
  char line[512];
  std::snprintf(line, sizeof line, "%-13s %-8s %-22s %-6s %-11s %11s %11s %7s %11s %9s %6s %6s %6s %s\n", "target", "source", "mode", "budget",
                "status", "measured", "predicted", "error", "peak RSS", "step s", "ratio", "saved", "recomp", "grads");
  io.out << line;
  for (const json& rep : reports)
    for (const json& r : rep["rows"]) {
      std::string mode = r["mode"].get<std::string>();
      if (r.contains("segments") && r["segments"].is_number()) mode += " (" + std::to_string(r["segments"].get<int>()) + ")";
      std::string err = r.value("prediction_error", json(nullptr)).is_number()
                            ? (r["prediction_error"].get<double>() >= 0 ? "+" : "") + formatFixed(100 * r["prediction_error"].get<double>(), 1) + "%"
                            : "-";
      std::string saved = r["activation_saved_fraction"].is_number() ? formatFixed(100 * r["activation_saved_fraction"].get<double>(), 0) + "%" : "-";
      std::string grads = !r.contains("grad_check") || r["grad_check"].is_null() ? "-" : r["grad_check"]["passed"].get<bool>() ? "match" : "DIFFER";
      std::snprintf(line, sizeof line, "%-13s %-8s %-22s %-6s %-11s %11s %11s %7s %11s %9s %6s %6s %6s %s\n", rep["target"].get<std::string>().c_str(),
                    r["source"].get<std::string>().c_str(), mode.c_str(), r["budget"].is_null() ? "-" : r["budget"].get<std::string>().c_str(),
                    r["status"].get<std::string>().c_str(), bytesCell(r["measured_peak_bytes"]).c_str(),
                    bytesCell(r.value("predicted_peak_bytes", json(nullptr))).c_str(), err.c_str(), bytesCell(r["peak_rss_bytes"]).c_str(),
                    cell(r["step_time_s"]).c_str(), cell(r["step_ratio"], 2).c_str(), saved.c_str(),
                    cell(r.value("recompute_ratio", json(nullptr)), 2).c_str(), grads.c_str());
      io.out << line;
    }
}

int runBench(const BenchArgs& args, Io& io) {
  const workloads::Profile profile = *workloads::parseProfile(args.profile);
  for (const std::string& m : args.modes)
    if (m != "store-all" && m != "sqrt" && m != "interval-tree" && m != "revolve" && m != "optimal")
      return reportError(io, usageError("--modes: unknown mode '" + m + "': expected store-all, sqrt, interval-tree, revolve or optimal"));
  for (const std::string& b : args.budgets)
    if (Expected<Budget> parsed = parseBudget(b); !parsed) return reportError(io, parsed.status());
  std::error_code ec;
  fs::create_directories(args.resultsDir, ec);
  if (ec) return reportError(io, usageError("--results-dir " + args.resultsDir + ": cannot create the folder"));
  const fs::path scratch = fs::temp_directory_path(ec) / ("tbp-bench-" + std::to_string(getpid()));
  fs::create_directories(scratch, ec);
  if (ec) return reportError(io, Status(ErrorCode::Internal, "cannot create a scratch folder in " + fs::temp_directory_path(ec).string()));
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(dir, e);
    }
  } cleanup{scratch};

  // What runs: store-all first (the reference), then every mode at every budget.
  struct Job {
    std::string target, source, mode, budget;
  };
  std::vector<Job> jobs;
  for (const std::string& t : args.targets) {
    jobs.push_back({t, "tbp", "store-all", ""});
    for (const std::string& m : args.modes) {
      if (m == "store-all") continue;
      for (const std::string& b : args.budgets) jobs.push_back({t, "tbp", m, b});
    }
    if (args.withPytorch && t != "random_dag") {
      jobs.push_back({t, "pytorch", "store-all", ""});
      jobs.push_back({t, "pytorch", "checkpoint_sequential", ""});
    }
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::vector<json> reports;
  bool anyBad = false;
  size_t done = 0;
  for (const std::string& t : args.targets) {
    Expected<ir::Graph> g = workloads::buildWorkload(t, profile);
    if (!g) return reportError(io, g.status());
    uint64_t params = 0;
    for (const ir::Value& v : g->values())
      if (v.kind == ir::ValueKind::Parameter) params += static_cast<uint64_t>(v.bytes / ir::dtypeSize(v.type.dtype));
    json report{{"format", "tbp-bench"}, {"version", 1}, {"target", t}, {"profile", args.profile}, {"description", workloads::describe(t, profile)},
                {"threads", args.threads > 0 ? json(args.threads) : json(nullptr)}, {"trials", args.trials}, {"warmup", args.warmup},
                {"device", "cpu"}, {"parameters", params}};
    json rows = json::array();
    const fs::path refGrads = scratch / (t + "-store-all");
    for (const Job& job : jobs) {
      if (job.target != t) continue;
      ++done;
      if (tty)
        io.err << "\r\033[K[" << done << "/" << jobs.size() << "] " << t << " " << job.source << " " << job.mode
               << (job.budget.empty() ? "" : " " + job.budget) << std::flush;
      if (job.source == "pytorch") {
        rows.push_back(pytorchRow(args, t, job.mode, scratch));
        continue;
      }
      const bool isRef = job.mode == "store-all";
      const fs::path gradDir = isRef ? refGrads : scratch / (t + "-row");
      json row = tbpRow(args, t, job.mode, job.budget, scratch, gradDir);
      row["grad_check"] = nullptr;
      if (!isRef && row["status"] != "failed" && row["status"] != "infeasible" && fs::exists(refGrads / "manifest.json", ec)) {
        Expected<GradCompare> c = compareGradients(refGrads, gradDir, 1e-5, 1e-4);
        if (c) {
          row["grad_check"] = {{"passed", c->passed}, {"max_abs_error", c->maxAbs}, {"max_rel_error", c->maxRel}, {"worst_parameter", c->worst}};
          if (!c->passed && row["status"] == "ok") row["status"] = "grad_mismatch";
        }
      }
      if (!isRef) fs::remove_all(gradDir, ec);
      rows.push_back(std::move(row));
    }
    fs::remove_all(refGrads, ec);
    uint64_t resident = 0;
    for (const json& r : rows)
      if (r["source"] == "tbp" && r["resident_bytes"].is_number()) resident = r["resident_bytes"].get<uint64_t>();
    report["resident_bytes"] = resident;
    relate(rows, resident);
    for (const json& r : rows)
      if (r["status"] == "over_budget" || r["status"] == "grad_mismatch" || r["status"] == "failed") anyBad = true;
    report["rows"] = std::move(rows);
    const std::string file = (fs::path(args.resultsDir) / ("bench_" + t + "_" + args.profile + ".json")).string();
    if (Status s = writeFileAtomic(file, report.dump(2) + "\n"); !s) return reportError(io, s);
    reports.push_back(std::move(report));
  }
  if (tty) io.err << "\r\033[K" << std::flush;
  if (args.format == "json") {
    json all = json::array();
    for (json& r : reports) all.push_back(std::move(r));
    io.out << all.dump(2) << "\n";
  } else {
    printTable(io, reports);
    io.out << "wrote " << reports.size() << " file(s) to " << args.resultsDir << "/ (bench_<target>_" << args.profile << ".json)\n";
  }
  return anyBad ? exitCodeOf(ErrorCode::CheckFailed) : 0;
}

} // namespace

std::function<int(Io&)> setupExportWorkload(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  app.add_option("WORKLOAD", args->workload, "built-in workload")->required()->check(CLI::IsMember(workloads::workloadNames()));
  app.add_option("--profile", args->profile, "small|medium|large (default small)")->check(CLI::IsMember({"small", "medium", "large"}));
  app.add_option("-o,--output", args->output, "the .onnx file to write (- for stdout)")->required()->check(outputFile());
  return [args](Io& io) { return runExport(*args, io); };
}

std::function<int(Io&)> setupBench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  app.add_option("--profile", args->profile, "small|medium|large (default small)")->check(CLI::IsMember({"small", "medium", "large"}));
  app.add_option("--targets", args->targets, "workloads to run (default transformer,gpt2,resnet,long_context,unet)")
      ->delimiter(',')
      ->check(CLI::IsMember(workloads::workloadNames()));
  app.add_option("--modes", args->modes, "planners (default store-all,sqrt,interval-tree,optimal)")->delimiter(',');
  app.add_option("--budgets", args->budgets, "budgets for every mode but store-all (default 50%,30%)")->delimiter(',');
  app.add_option("--trials", args->trials, "measured steps per row; the median is reported (default 3)")->check(CLI::Range(1, 1000));
  app.add_option("--warmup", args->warmup, "unmeasured steps first (default 1)")->check(CLI::Range(0, 1000));
  app.add_option("--min-time", args->minTime, "measure more steps per row until they took this many seconds (default 3)")
      ->check(finiteNumber(/*nonNegative=*/true))
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--threads", args->threads, "intra-op threads for tbp and PyTorch (default, or 0: LibTorch's)")->check(CLI::Range(0, 1024));
  app.add_option("--results-dir", args->resultsDir, "where bench_<target>_<profile>.json go (default results)");
  app.add_option("--format", args->format, "text|json")->check(CLI::IsMember({"text", "json"}));
  app.add_flag("--with-pytorch", args->withPytorch, "also run bench/pytorch_baseline.py (store-all and checkpoint_sequential)");
  app.add_option("--pytorch-script", args->pytorchScript, "path of pytorch_baseline.py (default: found next to tbp)");
  app.add_option("--python", args->python, "Python with torch for --with-pytorch (default /usr/bin/python3)");
  return [args](Io& io) { return runBench(*args, io); };
}

} // namespace tbp::driver
