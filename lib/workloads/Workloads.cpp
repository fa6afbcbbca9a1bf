// The built-in workloads: each is built op by op in the IR, written as ONNX and read back, so
// `tbp run --workload W` and `tbp run exported.onnx` see the same graph.

#include "tbp/workloads/Workloads.h"

#include "tbp/frontend/onnx/OnnxExporter.h"
#include "tbp/frontend/onnx/OnnxImporter.h"
#include "tbp/ir/Verify.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>

namespace tbp::workloads {

namespace {

using ir::DType;
using ir::Op;
using ir::Shape;
using ir::ValueId;
using ir::ValueKind;

// ------------------------------------------------------------------ graph builder

/// Adds values and nodes with names, shapes and seeded parameter data.
class Builder {
public:
  Builder(const std::string& name, uint64_t seed) : g_(name), state_(seed * 0x9e3779b97f4a7c15ULL + 1) {}

  /// The graph, with `output` as its only output.
  ir::Graph finish(ValueId output) {
    g_.addOutput(output);
    return std::move(g_);
  }
  const Shape& shape(ValueId v) const { return g_.value(v).type.shape; }

  ValueId input(const std::string& name, DType dtype, Shape shape) { return add(name, ValueKind::Input, {dtype, std::move(shape)}, nullptr); }

  /// A trainable weight drawn from N(0, std²).
  ValueId weight(const std::string& name, Shape shape, double stddev) {
    std::vector<float> v(elements(shape));
    for (float& x : v) x = static_cast<float>(normal() * stddev);
    return add(name, ValueKind::Parameter, {DType::F32, std::move(shape)}, pack(v));
  }
  /// A tensor filled with `value`: a parameter (norm scales and biases) or a constant.
  ValueId filled(const std::string& name, Shape shape, float value, ValueKind kind = ValueKind::Parameter) {
    std::vector<float> v(elements(shape), value);
    return add(name, kind, {DType::F32, std::move(shape)}, pack(v));
  }
  ValueId scalar(const std::string& name, float value) { return filled(name, {}, value, ValueKind::Constant); }
  ValueId ints(const std::string& name, const std::vector<int64_t>& values) {
    return add(name, ValueKind::Constant, {DType::I64, {static_cast<int64_t>(values.size())}}, pack(values));
  }
  ValueId bools(const std::string& name, Shape shape, const std::vector<uint8_t>& values) {
    return add(name, ValueKind::Constant, {DType::Bool, std::move(shape)}, pack(values));
  }

  /// One node with one f32 (or `dtype`) output named `name`.
  ValueId node(Op op, const std::string& name, std::vector<ValueId> in, Shape out, ir::Attributes attrs = {}, DType dtype = DType::F32) {
    return nodeMulti(op, name, std::move(in), {{dtype, std::move(out)}}, std::move(attrs)).front();
  }
  std::vector<ValueId> nodeMulti(Op op, const std::string& name, std::vector<ValueId> in, std::vector<ir::TensorType> outs,
                                 ir::Attributes attrs = {}) {
    std::vector<ValueId> ids;
    for (size_t i = 0; i < outs.size(); ++i)
      ids.push_back(add(name + (outs.size() > 1 ? "_out" + std::to_string(i) : "_out"), ValueKind::Activation, outs[i], nullptr));
    g_.addNode(name, op, std::move(in), ids, std::move(attrs));
    return ids;
  }

  /// Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return next() % n; }

private:
  static size_t elements(const Shape& s) {
    size_t n = 1;
    for (int64_t d : s) n *= static_cast<size_t>(d);
    return n;
  }
  template <typename T>
  static ir::TensorData pack(const std::vector<T>& v) {
    auto data = std::make_shared<std::string>(v.size() * sizeof(T), '\0');
    if (!v.empty()) std::memcpy(data->data(), v.data(), data->size());
    return data;
  }
  ValueId add(const std::string& name, ValueKind kind, ir::TensorType type, ir::TensorData data) {
    Expected<ValueId> id = g_.addValue(name, kind, std::move(type), std::move(data));
    if (!id) throw std::runtime_error(id.status().message());
    return *id;
  }
  // splitmix64 and Box-Muller: the same stream on every platform.
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double normal() {
    if (hasSpare_) {
      hasSpare_ = false;
      return spare_;
    }
    const double r = std::sqrt(-2.0 * std::log(uniform())), t = 6.283185307179586 * uniform();
    spare_ = r * std::sin(t);
    hasSpare_ = true;
    return r * std::cos(t);
  }

  ir::Graph g_;
  uint64_t state_;
  double spare_ = 0;
  bool hasSpare_ = false;
};

Shape withLast(Shape s, int64_t last) {
  s.back() = last;
  return s;
}

// ------------------------------------------------------------------ layers

ValueId linear(Builder& b, const std::string& p, ValueId x, int64_t in, int64_t out, bool bias = true) {
  ValueId w = b.weight(p + ".weight", {in, out}, 1.0 / std::sqrt(static_cast<double>(in)));
  ValueId y = b.node(Op::MatMul, p + "/MatMul", {x, w}, withLast(b.shape(x), out));
  if (!bias) return y;
  ValueId bb = b.filled(p + ".bias", {out}, 0.0f);
  return b.node(Op::Add, p + "/Add", {y, bb}, b.shape(y));
}

ValueId layerNorm(Builder& b, const std::string& p, ValueId x) {
  const int64_t d = b.shape(x).back();
  ValueId scale = b.filled(p + ".weight", {d}, 1.0f), bias = b.filled(p + ".bias", {d}, 0.0f);
  return b.node(Op::LayerNormalization, p + "/LayerNormalization", {x, scale, bias}, b.shape(x), {{"axis", int64_t{-1}}, {"epsilon", 1e-5}});
}

/// x * sigmoid(1.702 x).
ValueId qgelu(Builder& b, const std::string& p, ValueId x, ValueId k) {
  ValueId kx = b.node(Op::Mul, p + "/qgelu_scale", {x, k}, b.shape(x));
  ValueId s = b.node(Op::Sigmoid, p + "/qgelu_sigmoid", {kx}, b.shape(x));
  return b.node(Op::Mul, p + "/qgelu", {x, s}, b.shape(x));
}

/// x * sigmoid(x).
ValueId silu(Builder& b, const std::string& p, ValueId x) {
  ValueId s = b.node(Op::Sigmoid, p + "/silu_sigmoid", {x}, b.shape(x));
  return b.node(Op::Mul, p + "/silu", {x, s}, b.shape(x));
}

struct TransformerSize {
  int64_t batch, seq, width, heads, layers, vocab;
};

/// Constants the attention layers share.
struct AttentionConstants {
  ValueId splitShape, mergeShape, scale, qgeluK;
  std::optional<ValueId> keep, masked; ///< causal mask (bool [S,S], true at and below the diagonal) and its fill
};

ValueId attention(Builder& b, const std::string& p, ValueId x, const TransformerSize& t, const AttentionConstants& c) {
  const int64_t dh = t.width / t.heads;
  auto heads = [&](const std::string& name, std::vector<int64_t> perm) {
    ValueId y = linear(b, p + "." + name, x, t.width, t.width);
    ValueId r = b.node(Op::Reshape, p + "/" + name + "_split", {y, c.splitShape}, {t.batch, t.seq, t.heads, dh});
    Shape s = b.shape(r), out(4);
    for (size_t i = 0; i < 4; ++i) out[i] = s[static_cast<size_t>(perm[i])];
    return b.node(Op::Transpose, p + "/" + name + "_heads", {r}, out, {{"perm", perm}});
  };
  ValueId q = heads("q", {0, 2, 1, 3}), k = heads("k", {0, 2, 3, 1}), v = heads("v", {0, 2, 1, 3});
  ValueId s = b.node(Op::MatMul, p + "/scores", {q, k}, {t.batch, t.heads, t.seq, t.seq});
  s = b.node(Op::Mul, p + "/scaled", {s, c.scale}, b.shape(s));
  if (c.keep) s = b.node(Op::Where, p + "/causal", {*c.keep, s, *c.masked}, b.shape(s));
  ValueId pr = b.node(Op::Softmax, p + "/softmax", {s}, b.shape(s), {{"axis", int64_t{-1}}});
  ValueId o = b.node(Op::MatMul, p + "/context", {pr, v}, {t.batch, t.heads, t.seq, dh});
  o = b.node(Op::Transpose, p + "/merge_heads", {o}, {t.batch, t.seq, t.heads, dh}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
  o = b.node(Op::Reshape, p + "/merge", {o, c.mergeShape}, {t.batch, t.seq, t.width});
  return linear(b, p + ".out", o, t.width, t.width);
}

ValueId mlp(Builder& b, const std::string& p, ValueId x, const TransformerSize& t, const AttentionConstants& c) {
  ValueId h = linear(b, p + ".fc1", x, t.width, 4 * t.width);
  h = qgelu(b, p, h, c.qgeluK);
  return linear(b, p + ".fc2", h, 4 * t.width, t.width);
}

/// gpt2 / long_context (pre-LN, causal) and transformer (post-LN, bidirectional).
ir::Graph transformer(const std::string& name, const TransformerSize& t, bool decoder) {
  Builder b(name, 1);
  ValueId ids = b.input("input_ids", DType::I64, {t.batch, t.seq});
  ValueId wte = b.weight("wte.weight", {t.vocab, t.width}, 0.02);
  ValueId wpe = b.weight("wpe.weight", {t.seq, t.width}, 0.02);
  AttentionConstants c;
  c.splitShape = b.ints("attn.split_shape", {t.batch, t.seq, t.heads, t.width / t.heads});
  c.mergeShape = b.ints("attn.merge_shape", {t.batch, t.seq, t.width});
  c.scale = b.scalar("attn.scale", static_cast<float>(1.0 / std::sqrt(static_cast<double>(t.width / t.heads))));
  c.qgeluK = b.scalar("qgelu.k", 1.702f);
  if (decoder) {
    std::vector<uint8_t> keep(static_cast<size_t>(t.seq * t.seq));
    for (int64_t i = 0; i < t.seq; ++i)
      for (int64_t j = 0; j < t.seq; ++j) keep[static_cast<size_t>(i * t.seq + j)] = j <= i;
    c.keep = b.bools("attn.causal_keep", {t.seq, t.seq}, keep);
    c.masked = b.scalar("attn.masked", -1e9f);
  }
  ValueId h = b.node(Op::Gather, "embed/tokens", {wte, ids}, {t.batch, t.seq, t.width}, {{"axis", int64_t{0}}});
  h = b.node(Op::Add, "embed/positions", {h, wpe}, b.shape(h));
  for (int64_t l = 0; l < t.layers; ++l) {
    const std::string p = "blocks." + std::to_string(l);
    if (decoder) {
      h = b.node(Op::Add, p + "/attn_residual", {h, attention(b, p + ".attn", layerNorm(b, p + ".ln_1", h), t, c)}, b.shape(h));
      h = b.node(Op::Add, p + "/mlp_residual", {h, mlp(b, p + ".mlp", layerNorm(b, p + ".ln_2", h), t, c)}, b.shape(h));
    } else {
      h = layerNorm(b, p + ".ln_1", b.node(Op::Add, p + "/attn_residual", {h, attention(b, p + ".attn", h, t, c)}, b.shape(h)));
      h = layerNorm(b, p + ".ln_2", b.node(Op::Add, p + "/mlp_residual", {h, mlp(b, p + ".mlp", h, t, c)}, b.shape(h)));
    }
  }
  if (decoder) h = layerNorm(b, "ln_f", h);
  ValueId logits = linear(b, decoder ? "lm_head" : "head", h, t.width, t.vocab, /*bias=*/false);
  return b.finish(logits);
}

// ------------------------------------------------------------------ convolutional

ValueId conv(Builder& b, const std::string& p, ValueId x, int64_t cout, int64_t k, int64_t stride, int64_t pad, bool bias) {
  const Shape s = b.shape(x); // a copy: adding the weight may move the value table
  const int64_t cin = s[1];
  ValueId w = b.weight(p + ".weight", {cout, cin, k, k}, std::sqrt(2.0 / static_cast<double>(cin * k * k)));
  std::vector<ValueId> in{x, w};
  if (bias) in.push_back(b.filled(p + ".bias", {cout}, 0.0f));
  const int64_t oh = (s[2] + 2 * pad - k) / stride + 1, ow = (s[3] + 2 * pad - k) / stride + 1;
  return b.node(Op::Conv, p + "/Conv", in, {s[0], cout, oh, ow},
                {{"dilations", std::vector<int64_t>{1, 1}}, {"group", int64_t{1}}, {"kernel_shape", std::vector<int64_t>{k, k}},
                 {"pads", std::vector<int64_t>{pad, pad, pad, pad}}, {"strides", std::vector<int64_t>{stride, stride}}});
}

/// BatchNorm in training mode: batch statistics, running statistics updated (PyTorch momentum 0.1).
ValueId batchNorm(Builder& b, const std::string& p, ValueId x) {
  const int64_t c = b.shape(x)[1];
  ValueId scale = b.filled(p + ".weight", {c}, 1.0f), bias = b.filled(p + ".bias", {c}, 0.0f);
  ValueId mean = b.filled(p + ".running_mean", {c}, 0.0f, ValueKind::Constant);
  ValueId var = b.filled(p + ".running_var", {c}, 1.0f, ValueKind::Constant);
  return b.nodeMulti(Op::BatchNormalization, p + "/BatchNormalization", {x, scale, bias, mean, var},
                     {{DType::F32, b.shape(x)}, {DType::F32, {c}}, {DType::F32, {c}}},
                     {{"epsilon", 1e-5}, {"momentum", 0.9}, {"training_mode", int64_t{1}}})
      .front();
}

struct ResnetSize {
  int64_t batch, side, width, blocks;
};

ir::Graph resnet(const ResnetSize& r) {
  Builder b("resnet", 2);
  ValueId x = b.input("image", DType::F32, {r.batch, 3, r.side, r.side});
  ValueId h = b.node(Op::Relu, "stem/relu", {batchNorm(b, "stem.bn", conv(b, "stem.conv", x, r.width, 3, 1, 1, false))}, {r.batch, r.width, r.side, r.side});
  for (int64_t stage = 0; stage < 4; ++stage) {
    const int64_t width = r.width << stage;
    for (int64_t blk = 0; blk < r.blocks; ++blk) {
      const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(blk);
      const int64_t stride = stage > 0 && blk == 0 ? 2 : 1;
      ValueId y = batchNorm(b, p + ".bn1", conv(b, p + ".conv1", h, width, 3, stride, 1, false));
      y = b.node(Op::Relu, p + "/relu1", {y}, b.shape(y));
      y = batchNorm(b, p + ".bn2", conv(b, p + ".conv2", y, width, 3, 1, 1, false));
      ValueId shortcut = stride == 1 && b.shape(h)[1] == width ? h : batchNorm(b, p + ".down.bn", conv(b, p + ".down.conv", h, width, 1, stride, 0, false));
      y = b.node(Op::Add, p + "/residual", {y, shortcut}, b.shape(y));
      h = b.node(Op::Relu, p + "/relu2", {y}, b.shape(y));
    }
  }
  const int64_t c = b.shape(h)[1];
  h = b.node(Op::GlobalAveragePool, "head/pool", {h}, {r.batch, c, 1, 1});
  h = b.node(Op::Flatten, "head/flatten", {h}, {r.batch, c}, {{"axis", int64_t{1}}});
  ValueId w = b.weight("fc.weight", {100, c}, 1.0 / std::sqrt(static_cast<double>(c)));
  ValueId bias = b.filled("fc.bias", {100}, 0.0f);
  ValueId logits = b.node(Op::Gemm, "fc/Gemm", {h, w, bias}, {r.batch, 100}, {{"alpha", 1.0}, {"beta", 1.0}, {"transB", int64_t{1}}});
  return b.finish(logits);
}

struct UnetSize {
  int64_t batch, side, width, levels;
};

ValueId unetBlock(Builder& b, const std::string& p, ValueId x, int64_t cout) {
  ValueId h = silu(b, p + ".act1", batchNorm(b, p + ".norm1", conv(b, p + ".conv1", x, cout, 3, 1, 1, true)));
  return silu(b, p + ".act2", batchNorm(b, p + ".norm2", conv(b, p + ".conv2", h, cout, 3, 1, 1, true)));
}

ir::Graph unet(const UnetSize& u) {
  Builder b("unet", 3);
  ValueId h = b.input("image", DType::F32, {u.batch, 3, u.side, u.side});
  std::vector<ValueId> skips;
  for (int64_t l = 0; l < u.levels; ++l) {
    h = unetBlock(b, "down." + std::to_string(l), h, u.width << l);
    skips.push_back(h);
    if (l + 1 < u.levels) {
      Shape s = b.shape(h);
      h = b.node(Op::MaxPool, "down." + std::to_string(l) + "/pool", {h}, {s[0], s[1], s[2] / 2, s[3] / 2},
                 {{"ceil_mode", int64_t{0}}, {"kernel_shape", std::vector<int64_t>{2, 2}}, {"pads", std::vector<int64_t>{0, 0, 0, 0}},
                  {"strides", std::vector<int64_t>{2, 2}}});
    }
  }
  for (int64_t l = u.levels - 2; l >= 0; --l) {
    const std::string p = "up." + std::to_string(l);
    const int64_t c = u.width << l;
    Shape s = b.shape(h);
    ValueId w = b.weight(p + ".upconv.weight", {s[1], c, 2, 2}, std::sqrt(1.0 / static_cast<double>(s[1] * 4)));
    ValueId bias = b.filled(p + ".upconv.bias", {c}, 0.0f);
    h = b.node(Op::ConvTranspose, p + "/upconv", {h, w, bias}, {s[0], c, s[2] * 2, s[3] * 2},
               {{"dilations", std::vector<int64_t>{1, 1}}, {"group", int64_t{1}}, {"kernel_shape", std::vector<int64_t>{2, 2}},
                {"pads", std::vector<int64_t>{0, 0, 0, 0}}, {"strides", std::vector<int64_t>{2, 2}}});
    Shape cs = b.shape(h);
    cs[1] *= 2;
    h = b.node(Op::Concat, p + "/skip", {h, skips[static_cast<size_t>(l)]}, cs, {{"axis", int64_t{1}}});
    h = unetBlock(b, p, h, c);
  }
  ValueId out = conv(b, "out", h, 3, 1, 1, 0, true);
  return b.finish(out);
}

// ------------------------------------------------------------------ synthetic

struct ChainSize {
  int64_t batch, width, layers;
};

ir::Graph chain(const ChainSize& c) {
  Builder b("chain", 4);
  ValueId h = b.input("x", DType::F32, {c.batch, c.width});
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "layers." + std::to_string(l);
    h = b.node(Op::Relu, p + "/relu", {linear(b, p, h, c.width, c.width)}, {c.batch, c.width});
  }
  return b.finish(h);
}

struct DagSize {
  int64_t nodes, batch, width;
};

/// Seeded: each op is a Relu(MatMul) layer, an Add or Mul of two earlier values, or a Tanh or
/// Sigmoid; operands are mostly recent values, with one in eight a long skip.
ir::Graph randomDag(const DagSize& d) {
  Builder b("random_dag", 5);
  ValueId x = b.input("x", DType::F32, {d.batch, d.width});
  std::vector<ValueId> values{linear(b, "n0", x, d.width, d.width, false)};
  auto pick = [&] {
    const uint64_t n = values.size();
    const uint64_t back = b.below(8) == 0 ? b.below(n) : b.below(std::min<uint64_t>(3, n));
    return values[n - 1 - back];
  };
  const Shape shape{d.batch, d.width};
  for (int64_t i = 1; i < d.nodes; ++i) {
    const std::string p = "n" + std::to_string(i);
    switch (b.below(8)) {
    case 0: case 1: case 2: values.push_back(b.node(Op::Relu, p + "/relu", {linear(b, p, pick(), d.width, d.width, false)}, shape)); break;
    case 3: case 4: values.push_back(b.node(Op::Add, p + "/add", {pick(), pick()}, shape)); break;
    case 5: values.push_back(b.node(Op::Mul, p + "/mul", {pick(), pick()}, shape)); break;
    case 6: values.push_back(b.node(Op::Tanh, p + "/tanh", {pick()}, shape)); break;
    default: values.push_back(b.node(Op::Sigmoid, p + "/sigmoid", {pick()}, shape)); break;
    }
  }
  return b.finish(values.back());
}

// ------------------------------------------------------------------ the table

struct Entry {
  const char* name;
  const char* what;
  std::function<ir::Graph(Profile)> build;
  std::function<std::string(Profile)> sizes;
};

template <typename T>
T pick3(Profile p, T small, T medium, T large) {
  return p == Profile::Small ? small : p == Profile::Medium ? medium : large;
}

std::string str(const TransformerSize& t) {
  return "B" + std::to_string(t.batch) + " S" + std::to_string(t.seq) + " D" + std::to_string(t.width) + " H" + std::to_string(t.heads) +
         " L" + std::to_string(t.layers) + " V" + std::to_string(t.vocab);
}

TransformerSize gpt2Size(Profile p) { return pick3<TransformerSize>(p, {8, 128, 128, 4, 4, 512}, {4, 256, 256, 8, 6, 1024}, {16, 512, 512, 8, 12, 8192}); }
TransformerSize encoderSize(Profile p) { return pick3<TransformerSize>(p, {8, 128, 128, 4, 4, 512}, {4, 256, 256, 8, 6, 1024}, {32, 512, 512, 8, 12, 8192}); }
TransformerSize longSize(Profile p) { return pick3<TransformerSize>(p, {1, 1024, 64, 2, 6, 256}, {1, 2048, 128, 4, 6, 512}, {1, 8192, 128, 4, 4, 512}); }
ResnetSize resnetSize(Profile p) { return pick3<ResnetSize>(p, {8, 64, 16, 3}, {16, 128, 32, 3}, {32, 224, 64, 3}); }
UnetSize unetSize(Profile p) { return pick3<UnetSize>(p, {2, 64, 16, 3}, {4, 128, 32, 4}, {8, 256, 64, 4}); }
ChainSize chainSize(Profile p) { return pick3<ChainSize>(p, {1024, 128, 16}, {4096, 256, 24}, {16384, 1024, 64}); }
DagSize dagSize(Profile p) { return pick3<DagSize>(p, {200, 1024, 128}, {600, 1024, 128}, {5000, 1024, 256}); }

const std::vector<Entry>& table() {
  static const std::vector<Entry> entries = {
      {"transformer", "encoder, post-LN, bidirectional attention", [](Profile p) { return transformer("transformer", encoderSize(p), false); },
       [](Profile p) { return str(encoderSize(p)); }},
      {"gpt2", "decoder, pre-LN, causal attention", [](Profile p) { return transformer("gpt2", gpt2Size(p), true); },
       [](Profile p) { return str(gpt2Size(p)); }},
      {"resnet", "basic-block ResNet, BatchNorm in training mode", [](Profile p) { return resnet(resnetSize(p)); },
       [](Profile p) {
         ResnetSize r = resnetSize(p);
         return "B" + std::to_string(r.batch) + " R" + std::to_string(r.side) + " C" + std::to_string(r.width) + " blocks " + std::to_string(r.blocks) + "x4";
       }},
      {"long_context", "decoder whose attention grows with the square of the sequence", [](Profile p) { return transformer("long_context", longSize(p), true); },
       [](Profile p) { return str(longSize(p)); }},
      {"unet", "diffusion-style U-Net with long skips", [](Profile p) { return unet(unetSize(p)); },
       [](Profile p) {
         UnetSize u = unetSize(p);
         return "B" + std::to_string(u.batch) + " R" + std::to_string(u.side) + " C" + std::to_string(u.width) + " levels " + std::to_string(u.levels);
       }},
      {"chain", "MLP chain (Linear + Relu)", [](Profile p) { return chain(chainSize(p)); },
       [](Profile p) {
         ChainSize c = chainSize(p);
         return "B" + std::to_string(c.batch) + " D" + std::to_string(c.width) + " L" + std::to_string(c.layers);
       }},
      {"random_dag", "seeded DAG of matmuls and elementwise ops with long skips", [](Profile p) { return randomDag(dagSize(p)); },
       [](Profile p) {
         DagSize d = dagSize(p);
         return "N" + std::to_string(d.nodes) + " B" + std::to_string(d.batch) + " D" + std::to_string(d.width);
       }},
  };
  return entries;
}

const Entry* find(const std::string& name) {
  for (const Entry& e : table())
    if (name == e.name) return &e;
  return nullptr;
}

Status unknown(const std::string& name) {
  std::string list;
  for (const std::string& n : workloadNames()) list += (list.empty() ? "" : ", ") + n;
  return usageError("unknown workload '" + name + "': expected one of " + list);
}

} // namespace

std::optional<Profile> parseProfile(const std::string& text) {
  if (text == "small") return Profile::Small;
  if (text == "medium") return Profile::Medium;
  if (text == "large") return Profile::Large;
  return std::nullopt;
}

const char* profileName(Profile profile) {
  switch (profile) {
  case Profile::Small: return "small";
  case Profile::Medium: return "medium";
  case Profile::Large: return "large";
  }
  return "?";
}

const std::vector<std::string>& workloadNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const Entry& e : table()) n.emplace_back(e.name);
    return n;
  }();
  return names;
}

std::string describe(const std::string& name, Profile profile) {
  const Entry* e = find(name);
  return e ? std::string(e->what) + "; " + e->sizes(profile) : std::string();
}

Expected<std::string> exportWorkload(const std::string& name, Profile profile) {
  const Entry* e = find(name);
  if (!e) return unknown(name);
  const std::string source = "workload " + name + "/" + profileName(profile);
  try {
    ir::Graph g = e->build(profile);
    TBP_RETURN_IF_ERROR(ir::verify(g, source));
    return frontend::exportOnnx(g, source);
  } catch (const std::exception& ex) {
    return Status(ErrorCode::Internal, source + ": " + ex.what());
  }
}

Expected<ir::Graph> buildWorkload(const std::string& name, Profile profile, bool withData) {
  Expected<std::string> bytes = exportWorkload(name, profile);
  if (!bytes) return bytes.status();
  frontend::OnnxImportOptions options;
  options.loadData = withData;
  Expected<ir::Graph> g = frontend::importOnnxBytes(*bytes, "workload " + name + "/" + profileName(profile), options);
  if (!g) return Status(ErrorCode::Internal, "built-in " + g.status().message());
  return g;
}

} // namespace tbp::workloads
