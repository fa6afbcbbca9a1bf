// ATen kernels for the IR ops, with ONNX attribute semantics (the frontend keeps ONNX forms).

#include "Kernels.h"

#include <array>
#include <cstring>

namespace tbp::runtime {

namespace {

using Tensors = std::vector<at::Tensor>;
using ir::Graph;
using ir::Node;

Tensors one(at::Tensor t) { return {std::move(t)}; }

/// The int64 elements of a constant input (shapes, axes).
std::vector<int64_t> constInts(const Graph& g, const Node& n, size_t index) {
  const ir::Value& v = g.value(n.inputs.at(index));
  TBP_CHECK(v.data && v.type.dtype == ir::DType::I64);
  std::vector<int64_t> out(v.data->size() / 8);
  std::memcpy(out.data(), v.data->data(), out.size() * 8);
  return out;
}

Tensors gemm(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  at::Tensor a = n.attrInt("transA", 0) ? in[0].t() : in[0];
  at::Tensor b = n.attrInt("transB", 0) ? in[1].t() : in[1];
  const double alpha = n.attrFloat("alpha", 1.0), beta = n.attrFloat("beta", 1.0);
  // One fused kernel, one output buffer: what PyTorch's Linear does too.
  if (in.size() > 2 && in[2].defined()) return one(at::addmm(in[2], a, b, beta, alpha));
  at::Tensor y = at::mm(a, b);
  return one(alpha == 1.0 ? y : y * alpha);
}
Tensors matmul(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::matmul(in[0], in[1])); }
Tensors add(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0] + in[1]); }
Tensors sub(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0] - in[1]); }
Tensors mul(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0] * in[1]); }
Tensors div(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0] / in[1]); }
Tensors relu(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::relu(in[0])); }
Tensors tanh(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::tanh(in[0])); }
Tensors sigmoid(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::sigmoid(in[0])); }
Tensors exp(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::exp(in[0])); }
Tensors neg(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::neg(in[0])); }
Tensors sqrt(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::sqrt(in[0])); }
Tensors erf(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::erf(in[0])); }
Tensors identity(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0]); }
Tensors softmax(const KernelContext&, const Graph&, const Node& n, const Tensors& in) { return one(at::softmax(in[0], n.attrInt("axis", -1))); }
Tensors logSoftmax(const KernelContext&, const Graph&, const Node& n, const Tensors& in) { return one(at::log_softmax(in[0], n.attrInt("axis", -1))); }
Tensors layerNorm(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  int64_t axis = n.attrInt("axis", -1);
  int64_t rank = in[0].dim();
  if (axis < 0) axis += rank;
  std::vector<int64_t> shape(in[0].sizes().begin() + axis, in[0].sizes().end());
  at::Tensor bias = in.size() > 2 ? in[2] : at::Tensor();
  return one(at::layer_norm(in[0], shape, in[1], bias, n.attrFloat("epsilon", 1e-5)));
}
Tensors reshape(const KernelContext&, const Graph& g, const Node& n, const Tensors& in) {
  std::vector<int64_t> shape = constInts(g, n, 1);
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] == 0 && !n.attrInt("allowzero", 0)) shape[i] = in[0].size(static_cast<int64_t>(i));
  return one(in[0].reshape(shape));
}
Tensors transpose(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  std::vector<int64_t> perm = n.attrInts("perm");
  if (perm.empty())
    for (int64_t i = in[0].dim() - 1; i >= 0; --i) perm.push_back(i);
  return one(in[0].permute(perm).contiguous());
}
Tensors flatten(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  int64_t axis = n.attrInt("axis", 1);
  if (axis < 0) axis += in[0].dim();
  int64_t outer = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= in[0].size(i);
  return one(in[0].reshape({outer, -1}));
}
Tensors sumLoss(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0].sum()); }
Tensors meanLoss(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0].mean()); }
Tensors mseLoss(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one((in[0] - in[1]).pow(2).mean()); }
Tensors crossEntropy(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  int64_t classes = in[0].size(-1);
  at::Tensor logp = at::log_softmax(in[0].reshape({-1, classes}), -1);
  return one(at::nll_loss(logp, in[1].reshape({-1})));
}

constexpr std::pair<ir::Op, Kernel> kKernels[] = {
    {ir::Op::Gemm, gemm},           {ir::Op::MatMul, matmul},     {ir::Op::Add, add},
    {ir::Op::Sub, sub},             {ir::Op::Mul, mul},           {ir::Op::Div, div},
    {ir::Op::Relu, relu},           {ir::Op::Tanh, tanh},         {ir::Op::Sigmoid, sigmoid},
    {ir::Op::Exp, exp},             {ir::Op::Neg, neg},           {ir::Op::Sqrt, sqrt},
    {ir::Op::Erf, erf},             {ir::Op::Identity, identity}, {ir::Op::Softmax, softmax},
    {ir::Op::LogSoftmax, logSoftmax}, {ir::Op::LayerNormalization, layerNorm},
    {ir::Op::Reshape, reshape},     {ir::Op::Transpose, transpose}, {ir::Op::Flatten, flatten},
    {ir::Op::SumLoss, sumLoss},     {ir::Op::MeanLoss, meanLoss}, {ir::Op::MseLoss, mseLoss},
    {ir::Op::CrossEntropyLoss, crossEntropy},
};

} // namespace

Kernel kernelFor(ir::Op op) {
  static const std::array<Kernel, ir::kNumOps> table = [] {
    std::array<Kernel, ir::kNumOps> t{};
    for (const auto& [o, k] : kKernels) t[static_cast<size_t>(o)] = k;
    return t;
  }();
  return table[static_cast<size_t>(op)];
}

} // namespace tbp::runtime
