#include "tbp/ir/Loss.h"

namespace tbp::ir {

namespace {
struct LossName {
  LossKind kind;
  const char* name;
  Op op;
};
constexpr LossName kLosses[] = {
    {LossKind::Sum, "sum", Op::SumLoss},
    {LossKind::Mean, "mean", Op::MeanLoss},
    {LossKind::Mse, "mse", Op::MseLoss},
    {LossKind::CrossEntropy, "cross_entropy", Op::CrossEntropyLoss},
};

bool isLossOp(Op op) {
  for (const LossName& l : kLosses)
    if (l.op == op) return true;
  return false;
}
} // namespace

std::optional<LossKind> parseLossKind(std::string_view text) {
  for (const LossName& l : kLosses)
    if (text == l.name) return l.kind;
  return std::nullopt;
}

const char* lossKindName(LossKind kind) {
  for (const LossName& l : kLosses)
    if (l.kind == kind) return l.name;
  return "?";
}

bool hasLoss(const Graph& graph) {
  if (graph.outputs().empty()) return false;
  const Value& out = graph.value(graph.outputs().front());
  if (out.producer != kNone && isLossOp(graph.node(out.producer).op)) return true;
  uint64_t elems = 1;
  for (int64_t d : out.type.shape) elems *= static_cast<uint64_t>(d);
  return isFloat(out.type.dtype) && elems == 1 && out.producer != kNone;
}

Status appendLoss(Graph& graph, LossKind kind, std::string_view source) {
  ValueId pred = kNone;
  for (ValueId o : graph.outputs())
    if (isFloat(graph.value(o).type.dtype)) {
      pred = o;
      break;
    }
  if (pred == kNone)
    return badInput(std::string(source) + ": the graph has no floating-point output to put a loss on");
  const TensorType predType = graph.value(pred).type;
  std::vector<ValueId> inputs{pred};
  Attributes attrs;
  if (kind == LossKind::Mse) {
    Expected<ValueId> target = graph.addValue("loss_target", ValueKind::Input, predType);
    if (!target) return target.status().withContext(std::string(source));
    inputs.push_back(*target);
  } else if (kind == LossKind::CrossEntropy) {
    if (predType.shape.empty())
      return badInput(std::string(source) + ": cross_entropy needs class scores, output '" +
                      graph.value(pred).name + "' is a scalar");
    Shape labelShape(predType.shape.begin(), predType.shape.end() - 1);
    Expected<ValueId> labels =
        graph.addValue("loss_labels", ValueKind::Input, TensorType{DType::I64, labelShape});
    if (!labels) return labels.status().withContext(std::string(source));
    inputs.push_back(*labels);
    attrs["axis"] = int64_t{-1};
  }
  Expected<ValueId> loss =
      graph.addValue("loss", ValueKind::Activation, TensorType{predType.dtype, {}});
  if (!loss) return loss.status().withContext(std::string(source));
  Op op = Op::SumLoss;
  for (const LossName& l : kLosses)
    if (l.kind == kind) op = l.op;
  graph.addNode("loss", op, std::move(inputs), {*loss}, std::move(attrs));
  graph.setOutputs({*loss});
  return Status::ok();
}

} // namespace tbp::ir
