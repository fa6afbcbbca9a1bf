// `tbp dump` and `tbp ops`: the imported graph as text IR; the supported ONNX ops.

#include "Commands.h"

#include "tbp/frontend/onnx/OnnxImporter.h"
#include "tbp/ir/TextFormat.h"

namespace tbp::driver {

std::function<int(Io&)> setupDump(CLI::App& app) {
  struct Args {
    ModelOptions model;
    std::string output = "-";
    bool withLoss = false;
  };
  auto args = std::make_shared<Args>();
  addModelOptions(app, args->model);
  app.add_option("-o,--output", args->output, "write to FILE instead of stdout")->type_name("FILE")->check(outputFile());
  app.add_flag("--with-loss", args->withLoss, "append the loss (--loss) as analyze, plan and run do");
  return [args](Io& io) {
    if (Status s = checkNotTheModel("--output", args->output, args->model); !s) return reportError(io, s);
    Expected<ir::Graph> graph = loadModel(args->model, /*withData=*/true, args->withLoss);
    if (!graph) return reportError(io, graph.status());
    Status s = writeOutput(io, args->output, ir::printGraph(*graph));
    return s ? 0 : reportError(io, s);
  };
}

std::function<int(Io&)> setupOps(CLI::App& app) {
  (void)app;
  return [](Io& io) {
    for (const std::string& op : frontend::supportedOnnxOps()) io.out << op << "\n";
    return 0;
  };
}

} // namespace tbp::driver
