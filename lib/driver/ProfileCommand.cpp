// `tbp profile`: the runtime's profiling step on its own. Times every op's forward on a device
// and writes the costs file that `tbp plan --costs FILE` and `tbp run --costs FILE` read.

#include "Commands.h"

#include "tbp/schedule/CostsFile.h"
#include "tbp/schedule/ScheduleFile.h"
#include "tbp/support/Bytes.h"

namespace tbp::driver {

namespace {

struct ProfileArgs {
  ModelOptions model;
  std::string output;
  int repeats = 3;
  size_t rows = 12;
  std::string scratch = "auto";
  runtime::RunOptions run;
};

int runProfile(const ProfileArgs& args, Io& io) {
  if (Status s = checkNotTheModel("--output", args.output, args.model); !s) return reportError(io, s);
  Expected<ir::Graph> graph = loadRunnableModel(args.model);
  if (!graph) return reportError(io, graph.status());
  const BlasUse blas = checkBlas(*graph, args.run.device, args.model.name());
  Expected<ResolvedCosts> costs = measureCosts(*graph, args.run, args.repeats);
  if (!costs) return reportError(io, costs.status().withContext(args.model.name()));
  schedule::CostsFile file;
  file.graphFingerprint = schedule::fingerprint(*graph);
  file.graphName = graph->name();
  file.device = args.run.device;
  file.threads = args.run.threads;
  file.repeats = args.repeats;
  file.nodeNs = std::move(costs->costs);
  // Kernel temporaries on this device, for plans made elsewhere (`tbp plan --costs FILE`).
  const bool measuresScratch = args.scratch == "measured" || (args.scratch == "auto" && !scratchTableHolds(args.run));
  double scratchSeconds = 0;
  if (measuresScratch) {
    Expected<ScratchMeasurement> measured = driver::measureScratch(*graph, args.run);
    if (!measured) return reportError(io, measured.status().withContext(args.model.name()));
    file.scratch = std::move(measured->scratch);
    scratchSeconds = measured->seconds;
  }
  if (!args.output.empty())
    if (Status s = writeOutput(io, args.output, schedule::writeCosts(file, *graph)); !s) return reportError(io, s);
  if (args.output != "-") {
    io.out << "profiled " << args.model.name() << ": " << graph->numNodes() << " ops on " << args.run.device << ", median of "
           << args.repeats << " passes\n";
    io.out << costsByOp(*graph, file.nodeNs, args.rows);
    if (blas.onCpu && blas.flops.blas > 0)
      io.out << "MatMul, Gemm and Einsum ran on the " << blas.info.kind << " BLAS"
             << (blas.info.library.empty() ? "" : " (" + blas.info.library + ")") << "\n";
    if (measuresScratch)
      io.out << "kernel scratch measured on " << args.run.device << " in " << formatFixed(scratchSeconds, 2) << " s\n";
    if (!args.output.empty()) io.out << "wrote " << args.output << "\n";
  }
  return 0;
}

} // namespace

std::function<int(Io&)> setupProfile(CLI::App& app) {
  auto args = std::make_shared<ProfileArgs>();
  addModelOptions(app, args->model);
  app.add_option("-o,--output", args->output, "write the costs file (JSON; '-' for stdout) for --costs FILE")
      ->type_name("FILE")
      ->check(outputFile());
  app.add_option("--repeats", args->repeats, "measured forward passes after one warm-up (the median counts)")->check(CLI::Range(1, 1000));
  app.add_option("--top", args->rows, "op types to list")->check(CLI::Range(1, 1000));
  app.add_option("--device", args->run.device, "cpu|cuda|cuda:N")->type_name("DEVICE");
  app.add_option("--scratch", args->scratch,
                 "auto|static|measured: also measure every op's kernel temporaries on the device and write them to the "
                 "costs file (plans made from it then size them as on this device); auto measures on CUDA and with more than one "
                 "thread")
      ->check(CLI::IsMember({"auto", "static", "measured"}));
  app.add_option("--threads", args->run.threads, "intra-op threads (profile with the threads you will run with; 0: LibTorch's default)")->check(CLI::Range(0, 1024));
  app.add_option("--seed", args->run.seed, "seed of inputs and parameters without data");
  return [args](Io& io) { return runProfile(*args, io); };
}

} // namespace tbp::driver
