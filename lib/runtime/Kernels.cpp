// ATen kernels for the IR ops, with ONNX semantics (the frontend keeps ONNX attributes and
// input order at the model's opset). A kernel reads whichever form a node carries: axes, pads,
// splits and bounds are attributes before some opset and constant inputs after it.
//
// Kernels use ATen ops that autograd differentiates and never write to their inputs; the one
// exception is BatchNormalization's running statistics, op state updated on a step's first
// forward only (DESIGN.md §4). Every kernel's outputs are cast to the IR's output dtypes.

#include "Kernels.h"
#include "PoolLoops.h"

#include "tbp/ir/Op.h"
#include "tbp/ir/OpRules.h"
#include "tbp/runtime/Runtime.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/ops/mkldnn_convolution.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>

namespace tbp::runtime {

namespace {

using Tensors = std::vector<at::Tensor>;
using Ints = std::vector<int64_t>;
using ir::Graph;
using ir::Node;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Tensors one(at::Tensor t) { return {std::move(t)}; }

// ------------------------------------------------------------------ helpers

bool has(const Tensors& in, size_t i) { return i < in.size() && in[i].defined(); }

/// The elements of an integer tensor (shapes, axes, pads, sizes).
Ints ints(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kLong).contiguous().reshape({-1});
  const int64_t* p = c.data_ptr<int64_t>();
  return Ints(p, p + c.numel());
}

/// The elements of a float tensor (scales, roi).
std::vector<double> doubles(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous().reshape({-1});
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

double scalar(const at::Tensor& t) { return t.detach().to(at::kDouble).item<double>(); }

bool hasAttr(const Node& n, const char* key) { return n.attrs.count(key) != 0; }

int64_t normAxis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

/// The IR shape of output `i`.
Ints outShape(const Graph& g, const Node& n, size_t i) {
  const ir::Shape& s = g.value(n.outputs.at(i)).type.shape;
  return Ints(s.begin(), s.end());
}

/// Axes from the `axes` attribute (older opsets) or constant input `index` (newer ones); empty
/// when the node gives none.
Ints axesOf(const Node& n, const Tensors& in, size_t index) {
  if (hasAttr(n, "axes")) return n.attrInts("axes");
  if (has(in, index)) return ints(in[index]);
  return {};
}

Ints allAxes(int64_t rank) {
  Ints a(static_cast<size_t>(rank));
  std::iota(a.begin(), a.end(), 0);
  return a;
}

/// Computation dtype for ops LibTorch implements for floats only: integers go through float32
/// (the typed wrapper casts the result back), f16 through f32 on the CPU.
at::Tensor asFloat(const at::Tensor& t) {
  if (at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kHalf) return t;
  return t.to(at::kFloat);
}

/// A convolution or pooling window over the spatial dims; its padding by ONNX's rules
/// (ir::windowPadding), shared with the memory rules.
struct Window {
  Ints kernel, strides, dilations, begin, end;
};

Window windowOf(const Node& n, at::IntArrayRef spatial, Ints kernel) {
  const size_t rank = kernel.size();
  Window w;
  w.strides = n.attrInts("strides", Ints(rank, 1));
  w.dilations = n.attrInts("dilations", Ints(rank, 1));
  ir::WindowPadding padding = ir::windowPadding(n, Ints(spatial.begin(), spatial.end()), kernel);
  w.kernel = std::move(kernel);
  w.begin = std::move(padding.begin);
  w.end = std::move(padding.end);
  return w;
}

/// Whether ATen's kernel cannot take the window's padding (ir::needsPaddedCopy).
bool needsPaddedCopy(const Node& n, const Window& w) { return ir::needsPaddedCopy(n, ir::WindowPadding{w.begin, w.end}, w.kernel); }

/// at::constant_pad_nd's list for pads of the trailing dims (last dim first).
Ints torchPads(const Ints& begin, const Ints& end) {
  Ints p;
  for (size_t i = begin.size(); i-- > 0;) {
    p.push_back(begin[i]);
    p.push_back(end[i]);
  }
  return p;
}

// ------------------------------------------------------------------ elementwise

#define TBP_UNARY(name, expr)                                                                      \
  Tensors name(const KernelContext&, const Graph&, const Node&, const Tensors& in) {               \
    const at::Tensor& x = in[0];                                                                   \
    return one(expr);                                                                              \
  }
TBP_UNARY(identity, x)
TBP_UNARY(abs, at::abs(x))
TBP_UNARY(neg, at::neg(x))
TBP_UNARY(relu, at::relu(x))
TBP_UNARY(sigmoid, at::sigmoid(x))
TBP_UNARY(tanh, at::tanh(x))
TBP_UNARY(exp, at::exp(x))
TBP_UNARY(log, at::log(x))
TBP_UNARY(sqrt, at::sqrt(x))
TBP_UNARY(reciprocal, at::reciprocal(x))
TBP_UNARY(erf, at::erf(x))
TBP_UNARY(sin, at::sin(x))
TBP_UNARY(cos, at::cos(x))
TBP_UNARY(sign, at::sign(x))
TBP_UNARY(floor, at::floor(x))
TBP_UNARY(ceil, at::ceil(x))
TBP_UNARY(round, at::round(x)) // half to even, as ONNX
TBP_UNARY(logicalNot, at::logical_not(x))
TBP_UNARY(isNaN, at::isnan(x))
TBP_UNARY(softplus, at::softplus(x))
TBP_UNARY(softsign, x / (at::abs(x) + 1))
TBP_UNARY(hardSwish, at::hardswish(x))
#undef TBP_UNARY

Tensors isInf(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  at::Tensor r = at::isinf(in[0]);
  if (!n.attrInt("detect_positive", 1)) r = at::logical_and(r, in[0] < 0);
  if (!n.attrInt("detect_negative", 1)) r = at::logical_and(r, in[0] > 0);
  return one(r);
}
/// ELU scaled by `scale`. at::elu keeps its input for the backward; its in-place form keeps
/// the result, which is what Ops.def says Elu and Selu save (the runtime frees the input).
at::Tensor eluKeepingResult(const at::Tensor& x, double alpha, double scale) {
  if (alpha < 0 || !x.requires_grad() || !at::GradMode::is_enabled()) return at::elu(x, alpha, scale);
  at::Tensor y = x.clone();
  at::elu_(y, alpha, scale);
  return y;
}
Tensors elu(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(eluKeepingResult(in[0], n.attrFloat("alpha", 1.0), 1.0));
}
Tensors selu(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(eluKeepingResult(in[0], n.attrFloat("alpha", 1.67326319217681884765625), n.attrFloat("gamma", 1.05070102214813232421875)));
}
Tensors celu(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(at::celu(in[0], n.attrFloat("alpha", 1.0)));
}
/// GELU fused by the ONNX frontend (Fusion.h): one ATen kernel each way, where the erf
/// expansion keeps three tensors for the backward and the tanh one six.
Tensors gelu(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(at::gelu(in[0], n.attrString("approximate", "none")));
}
/// x · sigmoid(x) in one kernel; its backward (ATen's silu_backward) reads x only.
Tensors silu(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::silu(in[0])); }
Tensors leakyRelu(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(at::leaky_relu(in[0], n.attrFloat("alpha", 0.01)));
}
/// clamp(alpha * x + beta, 0, 1) whose backward keeps x alone, as the op rule says (composed
/// from ATen ops, autograd would keep alpha * x + beta beside it). The forward allocates only
/// its output. The gradient passes where 0 < alpha * x + beta < 1, as ATen's
/// hardsigmoid_backward lets it through (-3 < x < 3), tested on x against the two bounds so
/// that the backward's scratch is one boolean mask, within the rule's count for ATen's kernel.
struct HardSigmoidAffine : torch::autograd::Function<HardSigmoidAffine> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double alpha, double beta) {
    ctx->save_for_backward({x});
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    at::Tensor y = x * alpha;
    y.add_(beta).clamp_(0.0, 1.0);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const double alpha = ctx->saved_data["alpha"].toDouble(), beta = ctx->saved_data["beta"].toDouble();
    at::Tensor gx = grads[0] * alpha;
    if (alpha != 0.0) {
      const double a = -beta / alpha, b = (1.0 - beta) / alpha;
      gx.mul_(x > std::min(a, b)); // one boolean mask at a time
      gx.mul_(x < std::max(a, b));
    }
    return {gx, at::Tensor(), at::Tensor()};
  }
};

Tensors hardSigmoid(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const double alpha = n.attrFloat("alpha", 0.2), beta = n.attrFloat("beta", 0.5);
  // PyTorch's own (alpha 1/6, as exported in float) is one ATen kernel with the same backward.
  if (std::abs(alpha - 1.0 / 6.0) < 1e-7 && beta == 0.5) return one(at::hardsigmoid(in[0]));
  return one(HardSigmoidAffine::apply(in[0], alpha, beta));
}
Tensors prelu(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  return one(at::where(in[0] < 0, in[0] * in[1], in[0]));
}
Tensors clip(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  if (hasAttr(n, "min") || hasAttr(n, "max")) // before opset 11
    return one(at::clamp(in[0], n.attrFloat("min", -std::numeric_limits<float>::max()),
                         n.attrFloat("max", std::numeric_limits<float>::max())));
  if (!has(in, 1) && !has(in, 2)) return one(in[0]);
  c10::optional<at::Tensor> lo, hi;
  if (has(in, 1)) lo = in[1];
  if (has(in, 2)) hi = in[2];
  return one(at::clamp(in[0], lo, hi));
}
Tensors cast(const KernelContext&, const Graph& g, const Node& n, const Tensors& in) {
  return one(in[0].to(torchDType(g.value(n.outputs[0]).type.dtype)));
}

Tensors add(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0] + in[1]); }
Tensors sub(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0] - in[1]); }
Tensors mul(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0] * in[1]); }
Tensors div(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  if (at::isIntegralType(in[0].scalar_type(), /*includeBool=*/true)) return one(at::div(in[0], in[1], "trunc"));
  return one(in[0] / in[1]);
}
Tensors pow(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::pow(in[0], in[1])); }
Tensors mod(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  bool half = in[0].scalar_type() == at::kHalf;
  at::Tensor a = half ? in[0].to(at::kFloat) : in[0], b = half ? in[1].to(at::kFloat) : in[1];
  return one(n.attrInt("fmod", 0) ? at::fmod(a, b) : at::remainder(a, b));
}
Tensors equal(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::eq(in[0], in[1])); }
Tensors less(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::lt(in[0], in[1])); }
Tensors lessOrEqual(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::le(in[0], in[1])); }
Tensors greater(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::gt(in[0], in[1])); }
Tensors greaterOrEqual(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::ge(in[0], in[1])); }
Tensors logicalAnd(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::logical_and(in[0], in[1])); }
Tensors logicalOr(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::logical_or(in[0], in[1])); }
Tensors logicalXor(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::logical_xor(in[0], in[1])); }
Tensors where(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  return one(at::where(in[0].to(at::kBool), in[1], in[2]));
}

// Variadic Max/Min/Sum/Mean with numpy broadcasting.
Tensors max(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  at::Tensor r = in[0];
  for (size_t i = 1; i < in.size(); ++i) r = at::maximum(r, in[i]);
  return one(r);
}
Tensors min(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  at::Tensor r = in[0];
  for (size_t i = 1; i < in.size(); ++i) r = at::minimum(r, in[i]);
  return one(r);
}
Tensors sum(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  at::Tensor r = in[0];
  for (size_t i = 1; i < in.size(); ++i) r = r + in[i];
  return one(r);
}
Tensors mean(const KernelContext& c, const Graph& g, const Node& n, const Tensors& in) {
  at::Tensor r = sum(c, g, n, in)[0];
  return one(in.size() == 1 ? r : r / static_cast<double>(in.size()));
}

// ------------------------------------------------------------------ contractions

Tensors gemm(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  at::Tensor a = n.attrInt("transA", 0) ? in[0].t() : in[0];
  at::Tensor b = n.attrInt("transB", 0) ? in[1].t() : in[1];
  const double alpha = n.attrFloat("alpha", 1.0), beta = n.attrFloat("beta", 1.0);
  // One fused kernel, one output buffer: what PyTorch's Linear does too.
  if (has(in, 2)) return one(at::addmm(in[2], a, b, beta, alpha));
  at::Tensor y = at::mm(a, b);
  return one(alpha == 1.0 ? y : y * alpha);
}
Tensors matmul(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(at::matmul(in[0], in[1])); }
Tensors einsum(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  std::string eq = n.attrString("equation");
  eq.erase(std::remove(eq.begin(), eq.end(), ' '), eq.end());
  return one(at::einsum(eq, in));
}

/// A Conv node as ATen's convolution takes it: asymmetric padding is applied to the input
/// first (an op of its own, which autograd differentiates).
struct ConvCall {
  at::Tensor x;
  Ints strides, padding, dilations;
  int64_t groups = 1;
};
ConvCall convCall(const Node& n, const Tensors& in) {
  const at::Tensor& w = in[1];
  const int64_t rank = w.dim() - 2;
  Window win = windowOf(n, in[0].sizes().slice(2), Ints(w.sizes().begin() + 2, w.sizes().end()));
  ConvCall c{in[0], win.strides, win.begin, win.dilations, n.attrInt("group", 1)};
  if (needsPaddedCopy(n, win)) {
    c.x = at::constant_pad_nd(c.x, torchPads(win.begin, win.end), 0);
    c.padding.assign(static_cast<size_t>(rank), 0);
  }
  return c;
}

/// Whether a convolution is one that ATen would send to im2col and the reference BLAS, which
/// oneDNN runs 10-40x faster: 2-D, 1x1, stride 1, no padding or dilation, one group, float32 on
/// the CPU, batch below 16 on one thread. ATen's backend choice (ConvParams::use_mkldnn,
/// LibTorch 1.13) takes im2col + BLAS for exactly those, since "THNN is faster when
/// single-threaded" with MKL's BLAS; with netlib's reference BLAS (Debian's default libblas3)
/// the U-Net's 1x1 skip convolutions ran at 6.5 GFLOP/s, its 3x3 ones at 195 (2026-12-05).
/// With any other BLAS ATen's choice stands.
bool pointwiseOnOneDnn(const at::Tensor& x, const at::Tensor& w, const ConvCall& c) {
  static const bool referenceBlas = cpuBlas().kind == "reference";
  if (!referenceBlas || !at::hasMKLDNN() || !at::globalContext().userEnabledMkldnn()) return false;
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat || x.dim() != 4 || w.dim() != 4) return false;
  if (w.size(2) != 1 || w.size(3) != 1 || c.groups != 1) return false;
  for (size_t i = 0; i < 2; ++i)
    if (c.strides[i] != 1 || c.padding[i] != 0 || c.dilations[i] != 1) return false;
  return x.size(0) < 16 && at::get_num_threads() == 1;
}

at::Tensor oneDnnPointwise(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  return at::mkldnn_convolution(x.contiguous(), w.contiguous(), bias, {0, 0}, {1, 1}, {1, 1}, 1);
}

/// The gradients of a pointwise convolution (pointwiseOnOneDnn) on oneDNN: the input's is the
/// convolution of g with the transposed weight; the weight's is the sum over the batch of
/// g[n] x[n]^T, each a pointwise convolution with the input channels as the batch (x[n] as
/// [Cin, HW, 1, 1], g[n] as [Cout, HW, 1, 1]: views, no copies).
std::array<at::Tensor, 3> oneDnnPointwiseBackward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                                                   std::array<bool, 3> mask) {
  const at::Tensor g = grad.contiguous();
  std::array<at::Tensor, 3> out;
  if (mask[0]) out[0] = oneDnnPointwise(g, w.transpose(0, 1), c10::nullopt);
  if (mask[1]) {
    const int64_t batch = x.size(0), cin = x.size(1), cout = g.size(1), pixels = x.size(2) * x.size(3);
    const at::Tensor xc = x.contiguous();
    at::Tensor sum;
    for (int64_t i = 0; i < batch; ++i) {
      at::Tensor part = oneDnnPointwise(xc[i].view({cin, pixels, 1, 1}), g[i].view({cout, pixels, 1, 1}), c10::nullopt);
      sum = i == 0 ? part : sum.add_(part);
    }
    out[1] = sum.view({cin, cout}).t().reshape(w.sizes()).to(w.scalar_type());
  }
  if (mask[2]) out[2] = g.sum({0, 2, 3});
  return out;
}

/// A pointwise convolution on oneDNN in both directions (pointwiseOnOneDnn); it keeps x for
/// the backward, as ATen's does.
struct OneDnnPointwiseConv : torch::autograd::Function<OneDnnPointwiseConv> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
    ctx->save_for_backward({x, w});
    return oneDnnPointwise(x, w, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    auto [gx, gw, gb] = oneDnnPointwiseBackward(grads[0], saved[0], saved[1],
                                                {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)});
    return {gx, gw, gb};
  }
};

Tensors conv(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  ConvCall c = convCall(n, in);
  if (pointwiseOnOneDnn(c.x, in[1], c)) return one(OneDnnPointwiseConv::apply(c.x, in[1], has(in, 2) ? in[2] : at::Tensor()));
  c10::optional<at::Tensor> bias;
  if (has(in, 2)) bias = in[2];
  return one(at::convolution(c.x, in[1], bias, c.strides, c.padding, c.dilations, false, Ints(c.padding.size(), 0), c.groups));
}

// ------------------------------------------------------------------ replays from a kept output

/// y = a @ b (numpy matmul semantics, 1-D operands included) with y given. Like LibTorch's
/// own matmul, it keeps each operand only for the other's gradient. The kept y comes in as a
/// pointer, not as an input: an input handed back would become a view whose base pins the
/// buffer for as long as the stage's tape, after the value itself died.
struct KeptMatMul : torch::autograd::Function<KeptMatMul> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, const at::Tensor* y) {
    ctx->save_for_backward({b.requires_grad() ? a : at::Tensor(), a.requires_grad() ? b : at::Tensor()});
    ctx->saved_data["a"] = a.sizes().vec();
    ctx->saved_data["b"] = b.sizes().vec();
    return y->detach();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list saved = ctx->get_saved_variables();
    const Ints aSizes = ctx->saved_data["a"].toIntVector(), bSizes = ctx->saved_data["b"].toIntVector();
    const bool a1 = aSizes.size() == 1, b1 = bSizes.size() == 1;
    at::Tensor g = grads[0];
    if (a1) g = g.unsqueeze(-2);
    if (b1) g = g.unsqueeze(-1);
    at::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) {
      at::Tensor b = b1 ? saved[1].unsqueeze(-1) : saved[1];
      ga = at::sum_to(at::matmul(g, b.transpose(-1, -2)), a1 ? Ints{1, aSizes[0]} : aSizes).reshape(aSizes);
    }
    if (ctx->needs_input_grad(1)) {
      at::Tensor a = a1 ? saved[0].unsqueeze(0) : saved[0];
      if (bSizes.size() == 2 && a.dim() > 2) {
        // A weight shared by a batch of rows: one matrix product over the folded rows, as
        // autograd's own matmul backward does (a batched product would make a [batch, K, N]
        // temporary before the sum).
        const int64_t k = a.size(-1), n = g.size(-1);
        gb = at::mm(a.reshape({-1, k}).t(), g.reshape({-1, n}));
      } else {
        gb = at::sum_to(at::matmul(a.transpose(-1, -2), g), b1 ? Ints{bSizes[0], 1} : bSizes).reshape(bSizes);
      }
    }
    return {ga, gb, at::Tensor()};
  }
};

/// y = alpha * a @ b + beta * c (Gemm, operands already transposed) with y given.
struct KeptGemm : torch::autograd::Function<KeptGemm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, const at::Tensor* y,
                            double alpha, double beta, bool hasC) {
    ctx->save_for_backward({b.requires_grad() ? a : at::Tensor(), a.requires_grad() ? b : at::Tensor()});
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["c"] = c.sizes().vec();
    ctx->saved_data["hasC"] = hasC;
    // As autograd's addmm records it: strides (1, rows).
    auto columnMajor = [](const at::Tensor& t) { return t.dim() == 2 && t.stride(0) == 1 && t.stride(1) == t.size(0); };
    ctx->saved_data["aColumnMajor"] = columnMajor(a);
    ctx->saved_data["bColumnMajor"] = columnMajor(b);
    return y->detach();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list saved = ctx->get_saved_variables();
    const double alpha = ctx->saved_data["alpha"].toDouble(), beta = ctx->saved_data["beta"].toDouble();
    const at::Tensor& g = grads[0];
    at::Tensor ga, gb, gc;
    // The products autograd's addmm backward computes (mm_mat1_backward, mm_mat2_backward): an
    // operand given transposed (transA/transB: column-major) gets its gradient as the
    // transpose of the product for the untransposed matrix. A BLAS that blocks by layout
    // (OpenBLAS) rounds the two forms differently, so this keeps a replayed step's gradients
    // bit-identical to store-all's. Scaled in place, and not at all by 1: a scaled copy would
    // be a second gradient-sized buffer next to the product (an MLP layer's B measured one map
    // over the simulator).
    if (ctx->needs_input_grad(0)) {
      const at::Tensor& b = saved[1];
      ga = ctx->saved_data["aColumnMajor"].toBool() ? at::mm(b, g.t()).t() : at::mm(g, b.t());
      if (alpha != 1.0) ga.mul_(alpha);
    }
    if (ctx->needs_input_grad(1)) {
      const at::Tensor& a = saved[0];
      gb = ctx->saved_data["bColumnMajor"].toBool() ? at::mm(g.t(), a).t() : at::mm(a.t(), g);
      if (alpha != 1.0) gb.mul_(alpha);
    }
    if (ctx->saved_data["hasC"].toBool() && ctx->needs_input_grad(2)) {
      gc = at::sum_to(g, ctx->saved_data["c"].toIntVector());
      if (beta != 1.0) gc = gc * beta;
    }
    return {ga, gb, gc, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

/// y = conv(x, w) + bias (ATen's convolution, symmetric padding) with y given.
struct KeptConv : torch::autograd::Function<KeptConv> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor* y,
                            const ConvCall* call, bool hasBias) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["strides"] = call->strides;
    ctx->saved_data["padding"] = call->padding;
    ctx->saved_data["dilations"] = call->dilations;
    ctx->saved_data["groups"] = call->groups;
    ctx->saved_data["bias"] = hasBias;
    (void)bias;
    return y->detach();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list saved = ctx->get_saved_variables();
    const Ints padding = ctx->saved_data["padding"].toIntVector();
    const bool hasBias = ctx->saved_data["bias"].toBool();
    const Ints biasSizes{saved[1].size(0)};
    at::OptionalIntArrayRef biasArg;
    if (hasBias) biasArg = at::IntArrayRef(biasSizes);
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1), hasBias && ctx->needs_input_grad(2)};
    const ConvCall call{at::Tensor(), ctx->saved_data["strides"].toIntVector(), padding, ctx->saved_data["dilations"].toIntVector(),
                        ctx->saved_data["groups"].toInt()};
    if (pointwiseOnOneDnn(saved[0], saved[1], call)) {
      auto [gx, gw, gb] = oneDnnPointwiseBackward(grads[0], saved[0], saved[1], mask);
      return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor()};
    }
    auto [gx, gw, gb] = at::convolution_backward(grads[0].contiguous(), saved[0], saved[1], biasArg, call.strides, call.padding,
                                                 call.dilations, false, Ints(padding.size(), 0), call.groups, mask);
    return {gx, gw, hasBias ? gb : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

Tensors convTranspose(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const at::Tensor& w = in[1];
  const size_t rank = static_cast<size_t>(w.dim() - 2);
  const Ints strides = n.attrInts("strides", Ints(rank, 1));
  const Ints dilations = n.attrInts("dilations", Ints(rank, 1));
  const Ints outputPadding = n.attrInts("output_padding", Ints(rank, 0));
  const int64_t group = n.attrInt("group", 1);
  Ints full(rank), begin(rank, 0), end(rank, 0);
  for (size_t i = 0; i < rank; ++i)
    full[i] = strides[i] * (x.size(static_cast<int64_t>(i) + 2) - 1) + (w.size(static_cast<int64_t>(i) + 2) - 1) * dilations[i] + 1;
  const std::string autoPad = n.attrString("auto_pad", "NOTSET");
  Ints outputShape = n.attrInts("output_shape");
  if (outputShape.size() > rank) outputShape.erase(outputShape.begin(), outputShape.end() - static_cast<int64_t>(rank));
  if (outputShape.empty() && (autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER"))
    for (size_t i = 0; i < rank; ++i) outputShape.push_back(x.size(static_cast<int64_t>(i) + 2) * strides[i]);
  if (!outputShape.empty()) {
    for (size_t i = 0; i < rank; ++i) {
      // Python's floor division, as the ONNX reference: a negative total extends the end.
      const int64_t total = full[i] + outputPadding[i] - outputShape[i];
      const int64_t half = total >= 0 ? total / 2 : -((1 - total) / 2);
      begin[i] = autoPad == "SAME_UPPER" ? half : total - half;
      end[i] = total - begin[i];
    }
  } else if (hasAttr(n, "pads")) {
    Ints pads = n.attrInts("pads");
    for (size_t i = 0; i < rank; ++i) {
      begin[i] = pads[i];
      end[i] = pads[i + rank];
    }
  }
  c10::optional<at::Tensor> bias;
  if (has(in, 2)) bias = in[2];
  // ATen's transposed convolution takes symmetric padding and an output padding smaller than
  // the stride or dilation; anything else crops or extends the full result.
  bool native = begin == end;
  for (size_t i = 0; i < rank && native; ++i)
    native = begin[i] >= 0 && outputPadding[i] >= 0 && (outputPadding[i] < strides[i] || outputPadding[i] < dilations[i]);
  if (native) return one(at::convolution(x, w, bias, strides, begin, dilations, true, outputPadding, group));
  at::Tensor y = at::convolution(x, w, c10::nullopt, strides, Ints(rank, 0), dilations, true, Ints(rank, 0), group);
  Ints cropBegin(rank), cropEnd(rank);
  for (size_t i = 0; i < rank; ++i) {
    cropBegin[i] = -begin[i];
    cropEnd[i] = outputPadding[i] - end[i];
  }
  y = at::constant_pad_nd(y, torchPads(cropBegin, cropEnd), 0);
  if (bias) {
    Ints shape(rank + 2, 1);
    shape[1] = -1;
    y = y + bias->reshape(shape);
  }
  return one(y);
}

// ------------------------------------------------------------------ pooling

/// A 2-D window from its packed form {kernel H, W, stride H, W, pad H, W[, dilation H, W]}: the
/// form the pooling functions below take and keep for their backward (dilations 1 when absent).
pool::Window2d window2d(const Ints& w) {
  return {w[0], w[1], w[2], w[3], w[4], w[5], w.size() > 6 ? w[6] : 1, w.size() > 7 ? w[7] : 1};
}

/// 2-D max pooling of a float CPU tensor on tbp's loops (PoolLoops.h), the values and indices
/// of at::max_pool2d_with_indices bit for bit, about 5x faster forward and 15x backward than
/// LibTorch 1.13's NCHW kernel. It keeps what ATen's keeps for the backward, the input and the
/// int64 indices (the MaxPool rule), and makes the indices without autograd too.
struct CpuMaxPool2d : torch::autograd::Function<CpuMaxPool2d> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, Ints window, bool ceilMode) {
    const pool::Window2d w = window2d(window);
    const at::Tensor x = input.contiguous();
    const int64_t planes = x.size(0) * x.size(1), height = x.size(2), width = x.size(3);
    const int64_t outH = pool::pooledSize(height, w.kernelH, w.padH, w.strideH, w.dilationH, ceilMode);
    const int64_t outW = pool::pooledSize(width, w.kernelW, w.padW, w.strideW, w.dilationW, ceilMode);
    at::Tensor y = at::empty({x.size(0), x.size(1), outH, outW}, x.options());
    at::Tensor indices = at::empty(y.sizes(), x.options().dtype(at::kLong));
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    int64_t* ip = indices.data_ptr<int64_t>();
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> rowMax(static_cast<size_t>(outW));
      std::vector<int32_t> rowArg(static_cast<size_t>(outW));
      for (int64_t p = begin; p < end; ++p)
        pool::maxPoolPlane(xp + p * height * width, height, width, w, outH, outW, yp + p * outH * outW, ip + p * outH * outW,
                           rowMax.data(), rowArg.data());
    });
    ctx->mark_non_differentiable({indices});
    // Autograd would otherwise hand the backward a zero gradient the size of the indices.
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({input, indices});
    return {y, indices};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& indices = saved[1];
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const at::Tensor g = grads[0].contiguous();
    at::Tensor gx = at::zeros(x.sizes(), x.options());
    const int64_t planes = x.size(0) * x.size(1), plane = x.size(2) * x.size(3), count = g.size(2) * g.size(3);
    const float* gp = g.data_ptr<float>();
    const int64_t* ip = indices.data_ptr<int64_t>();
    float* gxp = gx.data_ptr<float>();
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) pool::maxPoolBackwardPlane(gp + p * count, ip + p * count, count, gxp + p * plane);
    });
    return {gx, at::Tensor(), at::Tensor()};
  }
};

/// Whether tbp's pooling loops take `x` (4-D, float, on the CPU, planes indexable in 32 bits)
/// with `window` (kernel, stride, padding and dilation, each {H, W}; dilations 1 when absent),
/// a window ATen would take too (any other goes to ATen, which says what is wrong with it).
bool cpuPool2d(const at::Tensor& x, const Ints& window, bool ceilMode) {
  if (x.dim() != 4 || !x.device().is_cpu() || x.scalar_type() != at::kFloat || x.size(2) * x.size(3) >= (int64_t{1} << 31))
    return false;
  return pool::acceptsWindow(window2d(window), x.size(2), x.size(3), ceilMode);
}

/// 2-D average pooling of a float CPU tensor on tbp's loops, at::avg_pool2d's values and
/// gradients bit for bit (LibTorch 1.13's NCHW kernels: resnet50's stem shape at batch 96,
/// 3x3 stride 2, 25 ms forward and 53 ms backward at one thread). Like ATen's, it keeps the
/// input for the backward (the AveragePool rule). `divisor` 0: none.
struct CpuAvgPool2d : torch::autograd::Function<CpuAvgPool2d> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, Ints window, bool ceilMode, bool countPadding,
                            int64_t divisor) {
    const pool::Window2d w = window2d(window);
    const at::Tensor x = input.contiguous();
    const int64_t planes = x.size(0) * x.size(1), height = x.size(2), width = x.size(3);
    const int64_t outH = pool::pooledSize(height, w.kernelH, w.padH, w.strideH, 1, ceilMode);
    const int64_t outW = pool::pooledSize(width, w.kernelW, w.padW, w.strideW, 1, ceilMode);
    at::Tensor y = at::empty({x.size(0), x.size(1), outH, outW}, x.options());
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(static_cast<size_t>(2 * outW));
      for (int64_t p = begin; p < end; ++p)
        pool::avgPoolPlane(xp + p * height * width, height, width, w, outH, outW, countPadding, divisor,
                           yp + p * outH * outW, scratch.data());
    });
    ctx->save_for_backward({input});
    ctx->saved_data["window"] = window;
    ctx->saved_data["countPadding"] = countPadding;
    ctx->saved_data["divisor"] = divisor;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const Ints window = ctx->saved_data["window"].toIntVector();
    const bool countPadding = ctx->saved_data["countPadding"].toBool();
    const int64_t divisor = ctx->saved_data["divisor"].toInt();
    const pool::Window2d w = window2d(window);
    const at::Tensor g = grads[0].contiguous();
    at::Tensor gx = at::zeros(x.sizes(), x.options());
    const int64_t planes = x.size(0) * x.size(1), height = x.size(2), width = x.size(3);
    const int64_t outH = g.size(2), outW = g.size(3);
    const float* gp = g.data_ptr<float>();
    float* gxp = gx.data_ptr<float>();
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(static_cast<size_t>(outW));
      for (int64_t p = begin; p < end; ++p)
        pool::avgPoolBackwardPlane(gp + p * outH * outW, height, width, w, outH, outW, countPadding, divisor,
                                   gxp + p * height * width, scratch.data());
    });
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

/// Pools over 1-3 spatial dims; 1-D pools run as 2-D ones over a unit height.
Tensors maxPool(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  at::Tensor x = asFloat(in[0]);
  const size_t rank = static_cast<size_t>(x.dim() - 2);
  const Ints spatial(x.sizes().begin() + 2, x.sizes().end());
  Window w = windowOf(n, x.sizes().slice(2), n.attrInts("kernel_shape"));
  const bool ceilMode = n.attrInt("ceil_mode", 0) != 0;
  const bool native = !needsPaddedCopy(n, w);
  Ints padding = w.begin;
  if (!native) {
    x = at::constant_pad_nd(x, torchPads(w.begin, w.end), -std::numeric_limits<double>::infinity());
    padding.assign(rank, 0);
  }
  Ints padded(x.sizes().begin() + 2, x.sizes().end());
  auto lift = [&](Ints v, int64_t unit) {
    if (rank == 1) v.insert(v.begin(), unit);
    return v;
  };
  at::Tensor xx = rank == 1 ? x.unsqueeze(2) : x;
  at::Tensor y, idx;
  const Ints kernel2 = lift(w.kernel, 1), strides2 = lift(w.strides, 1), pads2 = lift(padding, 0), dilations2 = lift(w.dilations, 1);
  const bool planar = rank < 3 && kernel2.size() == 2 && strides2.size() == 2 && pads2.size() == 2 && dilations2.size() == 2;
  const Ints window = planar ? Ints{kernel2[0], kernel2[1], strides2[0], strides2[1], pads2[0], pads2[1], dilations2[0], dilations2[1]}
                             : Ints{};
  if (planar && cpuPool2d(xx, window, ceilMode)) {
    variable_list r = CpuMaxPool2d::apply(xx, window, ceilMode);
    y = r[0];
    idx = r[1];
  } else {
    std::tie(y, idx) =
        rank == 3 ? at::max_pool3d_with_indices(xx, w.kernel, w.strides, padding, w.dilations, ceilMode)
                  : at::max_pool2d_with_indices(xx, kernel2, strides2, pads2, dilations2, ceilMode);
  }
  if (rank == 1) {
    y = y.squeeze(2);
    idx = idx.squeeze(2);
  }
  if (n.outputs.size() < 2) return one(y);
  // ONNX indices: flat over the whole unpadded tensor, row-major (storage_order 0) or with the
  // spatial dims in reverse (storage_order 1). ATen's are flat over one padded plane.
  at::Tensor flat = at::zeros_like(idx);
  std::vector<at::Tensor> coord(rank);
  at::Tensor rest = idx;
  for (size_t i = rank; i-- > 0;) {
    coord[i] = at::remainder(rest, padded[i]) - (native ? 0 : w.begin[i]);
    rest = at::div(rest, padded[i], "floor");
  }
  const bool columnMajor = n.attrInt("storage_order", 0) == 1;
  for (size_t k = 0; k < rank; ++k) {
    size_t i = columnMajor ? rank - 1 - k : k;
    flat = flat * spatial[i] + coord[i];
  }
  int64_t plane = 1;
  for (int64_t s : spatial) plane *= s;
  Ints base(rank + 2, 1);
  base[0] = x.size(0);
  base[1] = x.size(1);
  flat = flat + at::arange(x.size(0) * x.size(1), idx.options()).reshape(base) * plane;
  return {y, flat};
}

at::Tensor avgPoolRaw(const at::Tensor& x, const Ints& kernel, const Ints& strides, const Ints& padding, bool ceilMode,
                      bool countPad, c10::optional<int64_t> divisor) {
  if (kernel.size() == 3) return at::avg_pool3d(x, kernel, strides, padding, ceilMode, countPad, divisor);
  const bool flat = kernel.size() == 1;
  const at::Tensor xx = flat ? x.unsqueeze(2) : x;
  const bool planar = kernel.size() <= 2 && strides.size() == kernel.size() && padding.size() == kernel.size();
  const Ints k = planar && flat ? Ints{1, kernel[0]} : kernel, s = planar && flat ? Ints{1, strides[0]} : strides;
  const Ints p = planar && flat ? Ints{0, padding[0]} : padding;
  const Ints window = planar && k.size() == 2 ? Ints{k[0], k[1], s[0], s[1], p[0], p[1]} : Ints{};
  if (!window.empty() && cpuPool2d(xx, window, ceilMode) && divisor.value_or(1) != 0) {
    at::Tensor y = CpuAvgPool2d::apply(xx, window, ceilMode, countPad, divisor.value_or(0));
    return flat ? y.squeeze(2) : y;
  }
  if (kernel.size() == 2) return at::avg_pool2d(x, kernel, strides, padding, ceilMode, countPad, divisor);
  return at::avg_pool2d(x.unsqueeze(2), {1, kernel[0]}, {1, strides[0]}, {0, padding[0]}, ceilMode, countPad, divisor).squeeze(2);
}

Tensors averagePool(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  at::Tensor x = asFloat(in[0]);
  const size_t rank = static_cast<size_t>(x.dim() - 2);
  Window w = windowOf(n, x.sizes().slice(2), n.attrInts("kernel_shape"));
  const bool ceilMode = n.attrInt("ceil_mode", 0) != 0;
  const bool countPad = n.attrInt("count_include_pad", 0) != 0;
  const bool native = !needsPaddedCopy(n, w);
  if (native) return one(avgPoolRaw(x, w.kernel, w.strides, w.begin, ceilMode, countPad, c10::nullopt));
  // Asymmetric pads: window sums over the zero-padded input divided by the number of window
  // elements that are inputs (or inputs and pads).
  const Ints zeros(rank, 0), pads = torchPads(w.begin, w.end);
  at::Tensor sums = avgPoolRaw(at::constant_pad_nd(x, pads, 0), w.kernel, w.strides, zeros, ceilMode, true, 1);
  Ints onesShape(rank + 2, 1);
  std::copy(x.sizes().begin() + 2, x.sizes().end(), onesShape.begin() + 2);
  at::Tensor ones = at::constant_pad_nd(at::ones(onesShape, x.options()), pads, countPad ? 1 : 0);
  at::Tensor counts = avgPoolRaw(ones, w.kernel, w.strides, zeros, ceilMode, true, 1);
  return one(sums / counts);
}

/// The mean over `dims` as ATen computes it (a sum divided in place), but recorded as a sum:
/// autograd's MeanBackward keeps its whole input (LibTorch 1.13), a sum only the sizes, which
/// is what the memory model counts (mobilenet_v3_small's pooled map measured 3.4 MiB over).
at::Tensor meanOf(const at::Tensor& x, const Ints& dims, bool keep) {
  const at::Tensor f = asFloat(x);
  int64_t count = 1;
  for (int64_t d : dims) count *= f.size(d);
  return at::sum(f, dims, keep).div_(static_cast<double>(count));
}

Tensors globalAveragePool(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  Ints dims = allAxes(in[0].dim());
  dims.erase(dims.begin(), dims.begin() + 2);
  return one(meanOf(in[0], dims, true));
}
Tensors globalMaxPool(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  Ints dims = allAxes(in[0].dim());
  dims.erase(dims.begin(), dims.begin() + 2);
  return one(at::amax(in[0], dims, true));
}

// ------------------------------------------------------------------ normalization

/// y = (x - mean) * invstd * w + b over the channels (dim 1) with the batch statistics given,
/// and BatchNorm's training backward (the batch statistics depend on x). The forward is ATen's
/// inference kernel fed with the batch mean and biased variance, so a replay handed the same
/// statistics reproduces it bit for bit; the backward is the one autograd runs for
/// native_batch_norm in training, from the saved mean and inverse std.
struct BatchNormWithStats : torch::autograd::Function<BatchNormWithStats> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            const at::Tensor* mean, const at::Tensor* var, double eps, bool records) {
    at::Tensor y = std::get<0>(at::native_batch_norm(x, w, b, *mean, *var, false, 0.0, eps));
    if (records) {
      // mean and invstd, as native_batch_norm's own node keeps them (the mean may be the
      // step's kept statistic: then it costs nothing more).
      at::Tensor invstd = (var->to(at::kDouble) + eps).rsqrt().to(var->scalar_type());
      ctx->save_for_backward({x, w, *mean, invstd});
      ctx->saved_data["eps"] = eps;
    }
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list saved = ctx->get_saved_variables();
    auto [gx, gw, gb] = at::native_batch_norm_backward(grads[0], saved[0], saved[1], c10::nullopt, c10::nullopt, saved[2], saved[3], true,
                                                       ctx->saved_data["eps"].toDouble(),
                                                       {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)});
    return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

Tensors batchNorm(const KernelContext& context, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor &x = in[0], &runningMean = in[3], &runningVar = in[4];
  const double eps = n.attrFloat("epsilon", 1e-5), momentum = n.attrFloat("momentum", 0.9);
  // Training: the training_mode attribute (opset 14+), or any output beyond Y (opsets 7-13);
  // the stage model decides the same way which BatchNorms keep statistics for replays.
  if (!ir::isTrainingBatchNorm(n)) return one(at::batch_norm(x, in[1], in[2], runningMean.detach(), runningVar.detach(), false, 0.0, eps, false));
  // The batch statistics: those of the node's first forward in this step when the executor
  // kept them (a replay normalizes in one pass over x instead of three), else computed now
  // (the same reductions native_batch_norm runs: the mean is its save_mean bit for bit).
  std::array<at::Tensor, 2> stats;
  std::array<at::Tensor, 2>* kept = context.batchStats ? &(*context.batchStats)[context.node] : nullptr;
  if (kept && (*kept)[0].defined()) {
    stats = *kept;
  } else {
    at::NoGradGuard noGrad;
    std::tie(stats[0], stats[1]) = at::batch_norm_update_stats(x.detach(), c10::nullopt, c10::nullopt, 0.0);
    if (kept) *kept = stats;
  }
  // (Autograd runs a Function's forward with grad mode off: whether it records is asked here.)
  const bool records = at::GradMode::is_enabled() && (x.requires_grad() || in[1].requires_grad() || in[2].requires_grad());
  at::Tensor y = BatchNormWithStats::apply(x, in[1], in[2], &stats[0], &stats[1], eps, records);
  if (n.outputs.size() == 1 && !context.firstForward) return one(y);
  // ONNX: running = running * momentum + batch * (1 - momentum), with the biased batch
  // variance (PyTorch's momentum is 1 - ONNX's and it keeps the unbiased variance).
  at::NoGradGuard noGrad;
  at::Tensor newMean = runningMean * momentum + stats[0] * (1 - momentum);
  at::Tensor newVar = runningVar * momentum + stats[1] * (1 - momentum);
  if (context.firstForward) {
    runningMean.copy_(newMean);
    runningVar.copy_(newVar);
  }
  // Opsets 7-13 also output the saved batch mean and variance.
  return {y, newMean, newVar, stats[0], stats[1]};
}

/// ATen's group norm with one group per channel: the same statistics as at::instance_norm,
/// from one vectorized pass instead of a batch norm over an [1, N*C, ...] view, 3x faster
/// forward and backward on the U-Net's GroupNorm instances (docs/runtime.md).
Tensors instanceNorm(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(at::group_norm(in[0], in[0].size(1), in[1], in[2], n.attrFloat("epsilon", 1e-5)));
}

/// PyTorch's GroupNorm: scale and bias hold one value per channel ([C] or [C, 1, ...]).
Tensors groupNorm(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(at::group_norm(in[0], n.attrInt("num_groups", 1), in[1].reshape({-1}), in[2].reshape({-1}), n.attrFloat("epsilon", 1e-5)));
}

Tensors layerNorm(const KernelContext&, const Graph& g, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const int64_t axis = normAxis(n.attrInt("axis", -1), x.dim());
  const Ints shape(x.sizes().begin() + axis, x.sizes().end());
  at::Tensor scale = in[1].sizes() == at::IntArrayRef(shape) ? in[1] : in[1].expand(shape);
  c10::optional<at::Tensor> bias;
  if (has(in, 2)) bias = in[2].sizes() == at::IntArrayRef(shape) ? in[2] : in[2].expand(shape);
  const double eps = n.attrFloat("epsilon", 1e-5);
  if (n.outputs.size() == 1) return one(at::layer_norm(x, shape, scale, bias, eps));
  auto [y, mu, rstd] = at::native_layer_norm(x, shape, scale, bias, eps);
  Tensors out{y, mu.reshape(outShape(g, n, 1))};
  if (n.outputs.size() > 2) out.push_back(rstd.reshape(outShape(g, n, 2)));
  return out;
}

Tensors softmax(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(at::softmax(in[0], n.attrInt("axis", -1)));
}
Tensors logSoftmax(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(at::log_softmax(in[0], n.attrInt("axis", -1)));
}

/// A bool mask whose elements are true with probability 1 - `ratio`. On a CPU it is drawn
/// counter-based: one 64-bit key from `gen` (so a replay that restores the generator's state
/// draws the same mask), then element i is kept when the i-th 32-bit half of SplitMix64's
/// output stream from that key is at least round(ratio * 2^32). ATen's bernoulli_ draws a
/// double from its Mersenne twister per element, serially: about 4 ns an element, which was
/// 28 % of GPT-2's forward once its MatMuls ran on OpenBLAS (docs/benchmarks.md). Elsewhere
/// (CUDA's bernoulli_ is Philox-based and parallel) ATen draws it.
at::Tensor keepMask(const at::Tensor& x, double ratio, const c10::optional<at::Generator>& gen) {
  at::Tensor keep = at::empty(x.sizes(), x.options().dtype(at::kBool));
  if (!x.device().is_cpu()) return keep.bernoulli_(1.0 - ratio, gen);
  at::Generator g = gen ? *gen : at::detail::getDefaultCPUGenerator();
  uint64_t key = 0;
  {
    auto* impl = g.get<at::CPUGeneratorImpl>();
    std::lock_guard<std::mutex> lock(impl->mutex_);
    key = impl->random64();
  }
  const uint64_t threshold = static_cast<uint64_t>(std::llround(std::clamp(ratio, 0.0, 1.0) * 4294967296.0));
  bool* out = keep.data_ptr<bool>();
  const int64_t n = keep.numel();
  // Two elements per 64-bit output; the pairs are independent, so threads split them freely
  // and the mask does not depend on --threads.
  at::parallel_for(0, (n + 1) / 2, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      uint64_t z = key + static_cast<uint64_t>(j + 1) * 0x9E3779B97F4A7C15ULL;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      z ^= z >> 31;
      out[2 * j] = (z & 0xFFFFFFFFULL) >= threshold;
      if (2 * j + 1 < n) out[2 * j + 1] = (z >> 32) >= threshold;
    }
  });
  return keep;
}

Tensors dropout(const KernelContext& context, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const double ratio = has(in, 1) ? scalar(in[1]) : n.attrFloat("ratio", 0.5);
  const bool training = has(in, 2) ? scalar(in[2]) != 0 : n.attrInt("training_mode", 0) != 0;
  const bool wantMask = n.outputs.size() > 1;
  if (!training || ratio == 0) {
    Tensors out{x};
    if (wantMask) out.push_back(at::ones(x.sizes(), x.options().dtype(at::kBool)));
    return out;
  }
  c10::optional<at::Generator> gen;
  if (context.generator) gen = *context.generator;
  at::Tensor keep = keepMask(x, ratio, gen);
  // Autograd saves only the bool mask (Ops.def's Mask); scaling the fresh result in place
  // saves nothing more. `where`, not x * keep: the product promotes the mask to x's type in
  // a temporary the size of x, forward and backward.
  at::Tensor y = at::where(keep, x, at::zeros({}, x.options()));
  y.mul_(1.0 / (1.0 - ratio));
  Tensors out{y};
  if (wantMask) out.push_back(keep);
  return out;
}

// ------------------------------------------------------------------ reductions

enum class Reduction { Sum, Mean, Max, Min, Prod, L2, SumSquare };

template <Reduction R>
Tensors reduce(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  at::Tensor x = in[0];
  Ints axes = axesOf(n, in, 1);
  const bool keep = n.attrInt("keepdims", 1) != 0;
  if (axes.empty()) {
    if (n.attrInt("noop_with_empty_axes", 0)) return one(x);
    axes = allAxes(x.dim());
  }
  for (int64_t& a : axes) a = normAxis(a, x.dim());
  switch (R) {
  case Reduction::Sum: return one(at::sum(x, axes, keep));
  case Reduction::Mean: return one(meanOf(x, axes, keep));
  case Reduction::Max: return one(x.dim() == 0 ? x : at::amax(x, axes, keep));
  case Reduction::Min: return one(x.dim() == 0 ? x : at::amin(x, axes, keep));
  case Reduction::Prod: {
    std::sort(axes.rbegin(), axes.rend());
    for (int64_t a : axes) x = at::prod(x, a, keep);
    return one(x);
  }
  case Reduction::L2: return one(at::linalg_vector_norm(asFloat(x), 2, axes, keep));
  case Reduction::SumSquare: return one(at::sum(x * x, axes, keep));
  }
  return {};
}

template <bool IsMax>
Tensors argReduce(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const int64_t axis = normAxis(n.attrInt("axis", 0), in[0].dim());
  const bool keep = n.attrInt("keepdims", 1) != 0;
  at::Tensor x = asFloat(in[0]);
  if (!n.attrInt("select_last_index", 0)) return one(IsMax ? at::argmax(x, axis, keep) : at::argmin(x, axis, keep));
  at::Tensor flipped = x.flip(axis);
  at::Tensor i = IsMax ? at::argmax(flipped, axis, keep) : at::argmin(flipped, axis, keep);
  return one(x.size(axis) - 1 - i);
}

Tensors cumSum(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const int64_t axis = normAxis(static_cast<int64_t>(scalar(in[1])), in[0].dim());
  const bool reverse = n.attrInt("reverse", 0) != 0;
  at::Tensor x = reverse ? in[0].flip(axis) : in[0];
  if (n.attrInt("exclusive", 0)) {
    Ints pads(2 * static_cast<size_t>(x.dim() - axis), 0);
    pads[pads.size() - 2] = 1;
    pads[pads.size() - 1] = -1;
    x = at::constant_pad_nd(x, pads, 0);
  }
  at::Tensor y = at::cumsum(x, axis);
  return one(reverse ? y.flip(axis) : y);
}

// ------------------------------------------------------------------ shapes and data movement

Tensors reshape(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  Ints shape = ints(in[1]);
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] == 0 && !n.attrInt("allowzero", 0)) shape[i] = in[0].size(static_cast<int64_t>(i));
  return one(in[0].reshape(shape));
}
Tensors flatten(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const int64_t axis = normAxis(n.attrInt("axis", 1), x.dim());
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < x.dim(); ++i) (i < axis ? outer : inner) *= x.size(i);
  return one(x.reshape({outer, inner}));
}
Tensors squeeze(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  Ints axes = axesOf(n, in, 1);
  if (axes.empty()) return one(at::squeeze(in[0]));
  for (int64_t& a : axes) a = normAxis(a, in[0].dim());
  std::sort(axes.rbegin(), axes.rend());
  at::Tensor x = in[0];
  for (int64_t a : axes) x = x.squeeze(a);
  return one(x);
}
Tensors unsqueeze(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  Ints axes = axesOf(n, in, 1);
  const int64_t rank = in[0].dim() + static_cast<int64_t>(axes.size());
  for (int64_t& a : axes) a = normAxis(a, rank);
  std::sort(axes.begin(), axes.end());
  at::Tensor x = in[0];
  for (int64_t a : axes) x = x.unsqueeze(a);
  return one(x);
}
Tensors transpose(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  Ints perm = n.attrInts("perm");
  if (perm.empty())
    for (int64_t i = in[0].dim() - 1; i >= 0; --i) perm.push_back(i);
  return one(in[0].permute(perm).contiguous());
}
Tensors concat(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  return one(at::cat(in, normAxis(n.attrInt("axis", 0), in[0].dim())));
}
Tensors splitOf(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const int64_t axis = normAxis(n.attrInt("axis", 0), x.dim());
  Ints sizes = hasAttr(n, "split") ? n.attrInts("split") : has(in, 1) ? ints(in[1]) : Ints{};
  if (sizes.empty()) {
    const int64_t parts = static_cast<int64_t>(n.outputs.size());
    const int64_t chunk = (x.size(axis) + parts - 1) / parts;
    for (int64_t left = x.size(axis); left > 0; left -= chunk) sizes.push_back(std::min(chunk, left));
    sizes.resize(n.outputs.size(), 0);
  }
  Tensors out = at::split_with_sizes(x, sizes, axis);
  for (at::Tensor& t : out) t = t.contiguous();
  return out;
}

Tensors slice(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  at::Tensor x = in[0];
  Ints starts, ends, axes, steps;
  if (hasAttr(n, "starts")) { // before opset 10
    starts = n.attrInts("starts");
    ends = n.attrInts("ends");
    axes = n.attrInts("axes");
  } else {
    starts = ints(in[1]);
    ends = ints(in[2]);
    if (has(in, 3)) axes = ints(in[3]);
    if (has(in, 4)) steps = ints(in[4]);
  }
  if (axes.empty()) axes = allAxes(static_cast<int64_t>(starts.size()));
  steps.resize(starts.size(), 1);
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t a = normAxis(axes[i], x.dim()), d = x.size(a), step = steps[i];
    int64_t s = starts[i], e = ends[i];
    if (s < 0) s += d;
    if (e < 0) e += d;
    if (step > 0) {
      s = std::clamp<int64_t>(s, 0, d);
      e = std::clamp<int64_t>(e, 0, d);
      x = x.slice(a, s, std::max(s, e), step);
    } else if (d == 0) {
      x = x.slice(a, 0, 0);
    } else {
      s = std::clamp<int64_t>(s, 0, d - 1);
      e = std::clamp<int64_t>(e, -1, d - 1);
      at::Tensor idx = s > e ? at::arange(s, e, step, x.options().dtype(at::kLong)) : at::empty({0}, x.options().dtype(at::kLong));
      x = x.index_select(a, idx);
    }
  }
  return one(x.contiguous());
}

/// Indices as int64 with negative ones counted from the end of a dim of size `size`; the input
/// itself when it already is (autograd then keeps no copy).
at::Tensor indices(const at::Tensor& t, int64_t size) {
  at::Tensor idx = t.to(at::kLong);
  return idx.numel() > 0 && (idx < 0).any().item<bool>() ? at::where(idx < 0, idx + size, idx) : idx;
}

Tensors gather(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const int64_t axis = normAxis(n.attrInt("axis", 0), x.dim());
  at::Tensor idx = indices(in[1], x.size(axis));
  Ints shape(x.sizes().begin(), x.sizes().begin() + axis);
  shape.insert(shape.end(), idx.sizes().begin(), idx.sizes().end());
  shape.insert(shape.end(), x.sizes().begin() + axis + 1, x.sizes().end());
  return one(x.index_select(axis, idx.reshape({-1})).reshape(shape));
}
/// at::gather's backward keeps its whole data input; a gather through flat indices keeps only
/// the indices, as Ops.def says.
Tensors gatherElements(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const int64_t axis = normAxis(n.attrInt("axis", 0), x.dim());
  at::Tensor idx = indices(in[1], x.size(axis));
  at::Tensor flat = at::zeros_like(idx);
  int64_t stride = 1;
  for (int64_t d = x.dim() - 1; d >= 0; --d) {
    Ints shape(static_cast<size_t>(x.dim()), 1);
    shape[static_cast<size_t>(d)] = idx.size(d);
    at::Tensor coord = d == axis ? idx : at::arange(idx.size(d), idx.options()).reshape(shape);
    flat = flat + coord * stride;
    stride *= x.size(d);
  }
  return one(x.reshape({-1}).index_select(0, flat.reshape({-1})).reshape(idx.sizes()));
}
Tensors expand(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  return one(in[0].expand(at::infer_size(in[0].sizes(), ints(in[1]))).contiguous());
}
Tensors tile(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0].repeat(ints(in[1]))); }

Tensors pad(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  at::Tensor x = in[0];
  const int64_t rank = x.dim();
  const std::string mode = n.attrString("mode", "constant");
  Ints pads = hasAttr(n, "pads") ? n.attrInts("pads") : ints(in[1]); // attribute before opset 11
  Ints axes = has(in, 3) ? ints(in[3]) : allAxes(rank);
  Ints begin(static_cast<size_t>(rank), 0), end(static_cast<size_t>(rank), 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    const size_t a = static_cast<size_t>(normAxis(axes[i], rank));
    begin[a] = pads[i];
    end[a] = pads[i + axes.size()];
  }
  if (mode == "constant") {
    const double value = hasAttr(n, "value") ? n.attrFloat("value", 0.0) : has(in, 2) ? scalar(in[2]) : 0.0;
    return one(at::constant_pad_nd(x, torchPads(begin, end), value));
  }
  // edge and reflect: gather along each padded axis.
  for (int64_t a = 0; a < rank; ++a) {
    const int64_t b = begin[static_cast<size_t>(a)], e = end[static_cast<size_t>(a)], d = x.size(a);
    if (b == 0 && e == 0) continue;
    Ints idx;
    for (int64_t i = -b; i < d + e; ++i) {
      int64_t j = i;
      if (mode == "edge") {
        j = std::clamp<int64_t>(i, 0, d - 1);
      } else if (d > 1) {
        const int64_t period = 2 * (d - 1);
        j = ((i % period) + period) % period;
        if (j >= d) j = period - j;
      } else {
        j = 0;
      }
      idx.push_back(j);
    }
    x = x.index_select(a, at::tensor(idx, x.options().dtype(at::kLong)));
  }
  return one(x);
}

Tensors depthToSpace(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const int64_t b = n.attrInt("blocksize", 1), N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor y = n.attrString("mode", "DCR") == "CRD"
                     ? x.reshape({N, C / (b * b), b, b, H, W}).permute({0, 1, 4, 2, 5, 3})
                     : x.reshape({N, b, b, C / (b * b), H, W}).permute({0, 3, 4, 1, 5, 2});
  return one(y.reshape({N, C / (b * b), H * b, W * b}));
}
Tensors spaceToDepth(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const at::Tensor& x = in[0];
  const int64_t b = n.attrInt("blocksize", 1), N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  return one(x.reshape({N, C, H / b, b, W / b, b}).permute({0, 3, 5, 1, 2, 4}).reshape({N, C * b * b, H / b, W / b}));
}

Tensors trilu(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const int64_t k = has(in, 1) ? static_cast<int64_t>(scalar(in[1])) : 0;
  return one(n.attrInt("upper", 1) ? at::triu(in[0], k) : at::tril(in[0], k));
}

Tensors shapeOf(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const int64_t rank = in[0].dim();
  int64_t start = std::clamp<int64_t>(normAxis(n.attrInt("start", 0), rank), 0, rank);
  int64_t end = std::clamp<int64_t>(normAxis(n.attrInt("end", rank), rank), 0, rank);
  Ints dims(in[0].sizes().begin() + start, in[0].sizes().begin() + std::max(start, end));
  return one(at::tensor(dims, at::TensorOptions().dtype(at::kLong)).to(in[0].device()));
}
Tensors sizeOf(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  return one(at::scalar_tensor(in[0].numel(), at::TensorOptions().dtype(at::kLong).device(in[0].device())));
}
Tensors constantOfShape(const KernelContext& context, const Graph& g, const Node& n, const Tensors& in) {
  const at::ScalarType type = torchDType(g.value(n.outputs[0]).type.dtype);
  const double value = n.attrFloat("value", 0.0);
  at::Scalar s = at::isFloatingType(type) ? at::Scalar(value)
                 : type == at::kBool     ? at::Scalar(value != 0)
                                         : at::Scalar(static_cast<int64_t>(value));
  return one(at::full(ints(in[0]), s, at::TensorOptions().dtype(type).device(context.device)));
}
Tensors range(const KernelContext& context, const Graph& g, const Node& n, const Tensors& in) {
  const at::ScalarType type = torchDType(g.value(n.outputs[0]).type.dtype);
  const double start = scalar(in[0]), limit = scalar(in[1]), delta = scalar(in[2]);
  const int64_t count = std::max<int64_t>(static_cast<int64_t>(std::ceil((limit - start) / delta)), 0);
  if (at::isFloatingType(type))
    return one(at::arange(count, at::TensorOptions().dtype(at::kDouble).device(context.device)).mul(delta).add(start).to(type));
  return one(at::arange(count, at::TensorOptions().dtype(at::kLong).device(context.device))
                 .mul(static_cast<int64_t>(delta))
                 .add(static_cast<int64_t>(start)));
}
Tensors oneHot(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  const int64_t depth = static_cast<int64_t>(scalar(in[1]));
  const int64_t rank = in[0].dim() + 1;
  const int64_t axis = normAxis(n.attrInt("axis", -1), rank);
  at::Tensor idx = in[0].to(at::kLong);
  idx = at::where(idx < 0, idx + depth, idx).unsqueeze(axis);
  Ints classShape(static_cast<size_t>(rank), 1);
  classShape[static_cast<size_t>(axis)] = depth;
  at::Tensor classes = at::arange(depth, idx.options()).reshape(classShape);
  const at::Tensor& values = in[2];
  return one(at::where(idx == classes, values[1], values[0]));
}

// Resize/Upsample: separable resampling, one gather + weighted sum per resized axis, with the
// neighbour and coefficient rules of the ONNX reference implementation.
struct ResizeMode {
  std::string mode = "nearest", transform = "half_pixel", nearest = "round_prefer_floor";
  double cubicA = -0.75, extrapolation = 0.0;
  bool excludeOutside = false;
};

at::Tensor resample(at::Tensor x, const ResizeMode& m, const std::vector<double>& scales, const Ints& sizes,
                    const std::vector<double>& roi) {
  const int64_t rank = x.dim();
  if (rank == 4 && at::isFloatingType(x.scalar_type())) {
    // Nearest upsampling by powers of two (PyTorch's interpolate, exported): ATen's kernel
    // computes the same indices in one pass, without the per-axis intermediates below.
    std::vector<double> factors = scales;
    if (sizes.size() == 4) {
      factors.clear();
      for (int64_t a = 0; a < 4; ++a) factors.push_back(static_cast<double>(sizes[static_cast<size_t>(a)]) / static_cast<double>(x.size(a)));
    }
    if (ir::isNearestUpsample2d(m.mode, m.transform, m.nearest, factors))
      return at::upsample_nearest2d(x, {x.size(2) * static_cast<int64_t>(factors[2]), x.size(3) * static_cast<int64_t>(factors[3])},
                                    factors[2], factors[3]);
  }
  const bool integral = !at::isFloatingType(x.scalar_type());
  for (int64_t a = 0; a < rank; ++a) {
    const int64_t inLen = x.size(a);
    const double scale = sizes.empty() ? scales[static_cast<size_t>(a)] : static_cast<double>(sizes[static_cast<size_t>(a)]) / static_cast<double>(inLen);
    const int64_t outLen = sizes.empty() ? static_cast<int64_t>(std::floor(scale * static_cast<double>(inLen))) : sizes[static_cast<size_t>(a)];
    const bool crop = m.transform == "tf_crop_and_resize";
    double roiStart = 0, roiEnd = 1;
    if (crop && roi.size() == static_cast<size_t>(2 * rank)) {
      roiStart = roi[static_cast<size_t>(a)];
      roiEnd = roi[static_cast<size_t>(a + rank)];
    }
    if (scale == 1.0 && outLen == inLen && (!crop || (roiStart == 0 && roiEnd == 1))) continue;
    const double outWidth = scale * static_cast<double>(inLen);
    const int taps = m.mode == "nearest" ? 1 : m.mode == "cubic" ? 4 : 2;
    Ints index;
    std::vector<double> weight;
    std::vector<uint8_t> inside;
    for (int64_t j = 0; j < outLen; ++j) {
      const double xo = static_cast<double>(j);
      double xi = 0;
      if (m.transform == "align_corners") xi = outWidth == 1 ? 0 : xo * static_cast<double>(inLen - 1) / (outWidth - 1);
      else if (m.transform == "asymmetric") xi = xo / scale;
      else if (m.transform == "pytorch_half_pixel") xi = outWidth == 1 ? -0.5 : (xo + 0.5) / scale - 0.5;
      else if (m.transform == "tf_half_pixel_for_nn") xi = (xo + 0.5) / scale;
      else if (crop)
        xi = (outWidth == 1 ? (roiEnd - roiStart) * static_cast<double>(inLen - 1) / 2
                            : xo * (roiEnd - roiStart) * static_cast<double>(inLen - 1) / (outWidth - 1)) +
             roiStart * static_cast<double>(inLen - 1);
      else xi = (xo + 0.5) / scale - 0.5; // half_pixel
      inside.push_back(!crop || (xi >= 0 && xi <= static_cast<double>(inLen - 1)));
      // Neighbours left of xi are preferred: the ratio lies in (0, 1].
      int64_t base = static_cast<int64_t>(std::floor(xi));
      double ratio = xi - static_cast<double>(base);
      if (ratio == 0) {
        base -= 1;
        ratio = 1;
      }
      auto clampIndex = [&](int64_t i) { return std::clamp<int64_t>(i, 0, inLen - 1); };
      if (taps == 1) {
        bool upper = ratio == 1;
        if (!upper) {
          if (m.nearest == "round_prefer_ceil") upper = ratio >= 0.5;
          else if (m.nearest == "floor") upper = false;
          else if (m.nearest == "ceil") upper = true;
          else upper = ratio > 0.5;
        }
        index.push_back(clampIndex(base + (upper ? 1 : 0)));
        weight.push_back(1);
        continue;
      }
      std::vector<double> c;
      int64_t first = base;
      if (taps == 2) {
        c = {1 - ratio, ratio};
      } else {
        const double A = m.cubicA, r = ratio, s = 1 - ratio;
        c = {((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A, ((A + 2) * r - (A + 3)) * r * r + 1,
             ((A + 2) * s - (A + 3)) * s * s + 1, ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A};
        first = base - 1;
      }
      if (m.excludeOutside) {
        double total = 0;
        for (int t = 0; t < taps; ++t) {
          const int64_t i = first + t;
          if (i < 0 || i >= inLen) c[static_cast<size_t>(t)] = 0;
          total += c[static_cast<size_t>(t)];
        }
        for (double& v : c) v /= total;
      }
      for (int t = 0; t < taps; ++t) {
        index.push_back(clampIndex(first + t));
        weight.push_back(c[static_cast<size_t>(t)]);
      }
    }
    at::Tensor idx = at::tensor(index, x.options().dtype(at::kLong));
    at::Tensor g = x.index_select(a, idx);
    if (taps > 1) {
      if (integral) g = g.to(at::kFloat);
      Ints tapped(g.sizes().begin(), g.sizes().end());
      tapped[static_cast<size_t>(a)] = outLen;
      tapped.insert(tapped.begin() + a + 1, taps);
      Ints wshape(static_cast<size_t>(rank + 1), 1);
      wshape[static_cast<size_t>(a)] = outLen;
      wshape[static_cast<size_t>(a + 1)] = taps;
      at::Tensor w = at::tensor(weight, g.options().dtype(at::kDouble)).to(g.scalar_type()).reshape(wshape);
      g = (g.reshape(tapped) * w).sum(a + 1);
    }
    if (crop && std::find(inside.begin(), inside.end(), 0) != inside.end()) {
      Ints mshape(static_cast<size_t>(rank), 1);
      mshape[static_cast<size_t>(a)] = outLen;
      at::Tensor mask = at::tensor(Ints(inside.begin(), inside.end()), x.options().dtype(at::kLong)).to(at::kBool).reshape(mshape);
      g = at::where(mask, g, at::scalar_tensor(m.extrapolation, g.options()));
    }
    x = g;
  }
  return x;
}

Tensors resize(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  ResizeMode m;
  m.mode = n.attrString("mode", "nearest");
  std::vector<double> scales, roi;
  Ints sizes;
  if (in.size() == 2) { // opset 10: (X, scales), Upsample's asymmetric coordinates
    m.transform = "asymmetric";
    m.nearest = "floor";
    scales = doubles(in[1]);
  } else {
    m.transform = n.attrString("coordinate_transformation_mode", "half_pixel");
    m.nearest = n.attrString("nearest_mode", "round_prefer_floor");
    m.cubicA = n.attrFloat("cubic_coeff_a", -0.75);
    m.excludeOutside = n.attrInt("exclude_outside", 0) != 0;
    m.extrapolation = n.attrFloat("extrapolation_value", 0.0);
    if (has(in, 1) && in[1].numel() > 0) roi = doubles(in[1]);
    if (has(in, 2) && in[2].numel() > 0) scales = doubles(in[2]);
    if (has(in, 3) && in[3].numel() > 0) sizes = ints(in[3]);
  }
  return one(resample(in[0], m, scales, sizes, roi));
}
Tensors upsample(const KernelContext&, const Graph&, const Node& n, const Tensors& in) {
  ResizeMode m;
  m.mode = n.attrString("mode", "nearest");
  if (m.mode == "bilinear" || m.mode == "trilinear") m.mode = "linear";
  m.transform = "asymmetric";
  m.nearest = "floor";
  std::vector<double> scales = hasAttr(n, "scales") ? std::get<std::vector<double>>(n.attrs.at("scales")) : doubles(in[1]);
  return one(resample(in[0], m, scales, {}, {}));
}

// ------------------------------------------------------------------ tbp's losses

Tensors sumLoss(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0].sum()); }
Tensors meanLoss(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one(in[0].mean()); }
Tensors mseLoss(const KernelContext&, const Graph&, const Node&, const Tensors& in) { return one((in[0] - in[1]).pow(2).mean()); }
Tensors crossEntropy(const KernelContext&, const Graph&, const Node&, const Tensors& in) {
  int64_t classes = in[0].size(-1);
  at::Tensor logp = at::log_softmax(in[0].reshape({-1, classes}), -1);
  return one(at::nll_loss(logp, in[1].reshape({-1})));
}

// ------------------------------------------------------------------ the table

/// Runs `K` as the rest of the runtime expects a kernel to behave:
///  - inputs that Ops.def says take no gradient (shapes, indices, running statistics, all inputs
///    of Mod, comparisons, ...) reach the kernel detached, so autograd neither differentiates
///    nor saves them;
///  - every output is contiguous (Einsum's can come out permuted): a Reshape, Flatten,
///    Squeeze or Unsqueeze of a value is then always a view, as the stage model assumes
///    (plan::isBufferView);
///  - no output is an autograd view. The executor frees a stage's leaves and dead outputs by
///    swapping their storage, and an autograd view keeps its base alive: a Reshape's output
///    would pin its input's buffer, and InstanceNormalization's (ATen returns a view of its
///    batch-norm output) a hidden buffer of its own, past the point where the simulator frees
///    them, until the stage's backward. So an output that is an input tensor itself (Identity,
///    a Clip without bounds) or a view of its whole buffer becomes `_unsafe_view` (same
///    storage, not tracked as a view); one that shares a larger buffer (a contiguous slice or
///    split part) is copied, since the stage model counts it as a buffer of its own size;
///  - each output is cast to the IR dtype of the node's output (ATen promotes where ONNX keeps
///    the input type: integer sums, argmax, pools computed in float).
template <Kernel K>
Tensors typed(const KernelContext& context, const Graph& g, const Node& n, const Tensors& in) {
  const uint32_t noGrad = ir::opInfo(n.op).noGradInputs;
  bool detach = false;
  for (size_t i = 0; i < in.size() && i < 32; ++i) detach = detach || ((noGrad >> i) & 1u && in[i].defined() && in[i].requires_grad());
  Tensors detached;
  if (detach) {
    detached = in;
    for (size_t i = 0; i < in.size() && i < 32; ++i)
      if ((noGrad >> i) & 1u && in[i].defined()) detached[i] = in[i].detach();
  }
  Tensors out = K(context, g, n, detach ? detached : in);
  if (out.size() > n.outputs.size()) out.resize(n.outputs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    if (!out[i].defined()) continue;
    if (!out[i].is_contiguous()) out[i] = out[i].contiguous();
    bool isInput = false;
    for (const at::Tensor& t : in) isInput = isInput || (t.defined() && t.unsafeGetTensorImpl() == out[i].unsafeGetTensorImpl());
    if (out[i].has_storage() && out[i].storage().nbytes() > out[i].nbytes()) out[i] = out[i].clone(at::MemoryFormat::Contiguous);
    else if (isInput || out[i].is_view()) out[i] = at::_unsafe_view(out[i], out[i].sizes());
    const at::ScalarType want = torchDType(g.value(n.outputs[i]).type.dtype);
    if (out[i].scalar_type() != want) out[i] = out[i].to(want);
  }
  return out;
}

#define K(op, fn) {ir::Op::op, typed<fn>}
constexpr std::pair<ir::Op, Kernel> kKernels[] = {
    K(Identity, identity), K(Relu, relu), K(LeakyRelu, leakyRelu), K(Elu, elu), K(Selu, selu), K(Celu, celu),
    K(Sigmoid, sigmoid), K(HardSigmoid, hardSigmoid), K(HardSwish, hardSwish), K(Tanh, tanh),
    K(Softplus, softplus), K(Softsign, softsign), K(Exp, exp), K(Log, log), K(Sqrt, sqrt),
    K(Reciprocal, reciprocal), K(Neg, neg), K(Abs, abs), K(Erf, erf), K(Gelu, gelu), K(Silu, silu), K(Sin, sin), K(Cos, cos),
    K(Sign, sign), K(Floor, floor), K(Ceil, ceil), K(Round, round), K(Not, logicalNot), K(IsNaN, isNaN),
    K(IsInf, isInf), K(Cast, cast), K(Clip, clip), K(Dropout, dropout),
    K(Add, add), K(Sub, sub), K(Mul, mul), K(Div, div), K(Pow, pow), K(Max, max), K(Min, min),
    K(Mean, mean), K(Sum, sum), K(PRelu, prelu), K(Mod, mod), K(Equal, equal), K(Less, less),
    K(LessOrEqual, lessOrEqual), K(Greater, greater), K(GreaterOrEqual, greaterOrEqual),
    K(And, logicalAnd), K(Or, logicalOr), K(Xor, logicalXor), K(Where, where),
    K(MatMul, matmul), K(Gemm, gemm), K(Conv, conv), K(ConvTranspose, convTranspose), K(Einsum, einsum),
    K(MaxPool, maxPool), K(AveragePool, averagePool), K(GlobalAveragePool, globalAveragePool),
    K(GlobalMaxPool, globalMaxPool),
    K(BatchNormalization, batchNorm), K(InstanceNormalization, instanceNorm), K(GroupNorm, groupNorm),
    K(LayerNormalization, layerNorm), K(Softmax, softmax), K(LogSoftmax, logSoftmax),
    K(ReduceMean, reduce<Reduction::Mean>), K(ReduceSum, reduce<Reduction::Sum>),
    K(ReduceMax, reduce<Reduction::Max>), K(ReduceMin, reduce<Reduction::Min>),
    K(ReduceProd, reduce<Reduction::Prod>), K(ReduceL2, reduce<Reduction::L2>),
    K(ReduceSumSquare, reduce<Reduction::SumSquare>), K(ArgMax, argReduce<true>), K(ArgMin, argReduce<false>),
    K(CumSum, cumSum),
    K(Reshape, reshape), K(Flatten, flatten), K(Squeeze, squeeze), K(Unsqueeze, unsqueeze),
    K(Transpose, transpose), K(Concat, concat), K(Split, splitOf), K(Slice, slice), K(Gather, gather),
    K(GatherElements, gatherElements), K(Expand, expand), K(Tile, tile), K(Pad, pad), K(Resize, resize),
    K(Upsample, upsample), K(DepthToSpace, depthToSpace), K(SpaceToDepth, spaceToDepth), K(Trilu, trilu),
    K(Shape, shapeOf), K(Size, sizeOf), K(ConstantOfShape, constantOfShape), K(Range, range), K(OneHot, oneHot),
    K(SumLoss, sumLoss), K(MeanLoss, meanLoss), K(MseLoss, mseLoss), K(CrossEntropyLoss, crossEntropy),
};
#undef K

} // namespace

Tensors replayKept(const KernelContext&, const Graph&, const Node& n, const Tensors& in, const at::Tensor& kept) {
  bool records = false;
  for (const at::Tensor& t : in) records = records || (t.defined() && t.requires_grad());
  if (!records || !at::GradMode::is_enabled()) return one(kept);
  switch (n.op) {
  case ir::Op::MatMul: return one(KeptMatMul::apply(in[0], in[1], &kept));
  case ir::Op::Gemm: {
    at::Tensor a = n.attrInt("transA", 0) ? in[0].t() : in[0];
    at::Tensor b = n.attrInt("transB", 0) ? in[1].t() : in[1];
    // An absent operand travels as an empty tensor: custom functions take no undefined inputs.
    return one(KeptGemm::apply(a, b, has(in, 2) ? in[2] : at::empty({0}, kept.options()), &kept, n.attrFloat("alpha", 1.0),
                               n.attrFloat("beta", 1.0), has(in, 2)));
  }
  case ir::Op::Conv: {
    ConvCall c = convCall(n, in);
    return one(KeptConv::apply(c.x, in[1], has(in, 2) ? in[2] : at::empty({0}, kept.options()), &kept, &c, has(in, 2)));
  }
  default: break;
  }
  TBP_CHECK(false && "replayKept: not a cacheable op");
  return {};
}

Kernel kernelFor(ir::Op op) {
  static const std::array<Kernel, ir::kNumOps> table = [] {
    std::array<Kernel, ir::kNumOps> t{};
    for (const auto& [o, k] : kKernels) t[static_cast<size_t>(o)] = k;
    return t;
  }();
  return table[static_cast<size_t>(op)];
}

at::ScalarType torchDType(ir::DType d) {
  switch (d) {
  case ir::DType::F32: return at::kFloat;
  case ir::DType::F16: return at::kHalf;
  case ir::DType::BF16: return at::kBFloat16;
  case ir::DType::F64: return at::kDouble;
  case ir::DType::I8: return at::kChar;
  case ir::DType::I16: return at::kShort;
  case ir::DType::I32: return at::kInt;
  case ir::DType::I64: return at::kLong;
  case ir::DType::U8: return at::kByte;
  case ir::DType::Bool: return at::kBool;
  case ir::DType::U16:
  case ir::DType::U32:
  case ir::DType::U64: return at::kLong;
  }
  return at::kLong;
}

} // namespace tbp::runtime
