#include "Fusion.h"

#include "ConstantFolding.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tbp::frontend {

namespace {

using Node = onnx::NodeProto;
using TP = onnx::TensorProto;

/// The value of a float or double tensor of one element.
std::optional<double> scalarOf(const TP& t) {
  int64_t count = 1;
  for (int64_t d : t.dims()) count *= d;
  if (count != 1 || t.data_location() == TP::EXTERNAL) return std::nullopt;
  if (t.data_type() == TP::FLOAT) {
    if (t.float_data_size() == 1) return t.float_data(0);
    if (t.raw_data().size() != sizeof(float)) return std::nullopt;
    float f;
    std::memcpy(&f, t.raw_data().data(), sizeof f);
    return f;
  }
  if (t.data_type() == TP::DOUBLE) {
    if (t.double_data_size() == 1) return t.double_data(0);
    if (t.raw_data().size() != sizeof(double)) return std::nullopt;
    double d;
    std::memcpy(&d, t.raw_data().data(), sizeof d);
    return d;
  }
  if (t.data_type() == TP::BOOL) {
    if (t.int32_data_size() == 1) return t.int32_data(0) != 0;
    if (t.raw_data().size() != 1) return std::nullopt;
    return t.raw_data()[0] != 0;
  }
  return std::nullopt;
}

/// One fused pattern: the nodes it replaces and the unary op that takes their place.
struct Match {
  std::vector<int> nodes; ///< indices of the pattern's nodes
  std::string x, y;       ///< input and output of the fused op
  std::string op = "Gelu"; ///< the tbp op: Gelu, Silu or GroupNorm
  std::vector<std::string> params; ///< inputs after x (GroupNorm's scale and bias)
  std::vector<onnx::AttributeProto> attrs; ///< the fused node's attributes
  int anchor = -1;        ///< the Erf, Tanh, Sigmoid or InstanceNormalization node (names the fused one)
};

onnx::AttributeProto namedAttr(const std::string& name, onnx::AttributeProto_AttributeType type) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(type);
  return a;
}
onnx::AttributeProto stringAttr(const std::string& name, const std::string& value) {
  auto a = namedAttr(name, onnx::AttributeProto_AttributeType_STRING);
  a.set_s(value);
  return a;
}
onnx::AttributeProto intAttr(const std::string& name, int64_t value) {
  auto a = namedAttr(name, onnx::AttributeProto_AttributeType_INT);
  a.set_i(value);
  return a;
}
onnx::AttributeProto floatAttr(const std::string& name, float value) {
  auto a = namedAttr(name, onnx::AttributeProto_AttributeType_FLOAT);
  a.set_f(value);
  return a;
}

/// Structural queries over one graph's nodes, as the pattern matchers need them.
class Patterns {
public:
  explicit Patterns(const onnx::GraphProto& g) : g_(g) {
    for (int i = 0; i < g.node_size(); ++i) {
      indexOf_[&g.node(i)] = i;
      for (const auto& o : g.node(i).output())
        if (!o.empty()) producer_[o] = i;
      for (const auto& in : g.node(i).input())
        if (!in.empty()) consumers_[in].push_back(i);
    }
    std::unordered_set<std::string> graphInputs;
    for (const auto& in : g.input()) graphInputs.insert(in.name());
    for (const auto& o : g.output()) outputs_.insert(o.name());
    for (const auto& t : g.initializer())
      if (!graphInputs.count(t.name())) initializers_[t.name()] = &t;
    for (const auto* list : {&g.input(), &g.value_info(), &g.output()})
      for (const auto& vi : *list) types_[vi.name()] = &vi.type();
  }

  std::optional<Match> erfGelu(int anchor) const {
    const Node& erf = g_.node(anchor);
    if (!is(erf, "Erf") || erf.input_size() != 1 || erf.output_size() != 1) return std::nullopt;
    Match m;
    m.anchor = anchor;
    m.attrs = {stringAttr("approximate", "none")};
    const std::string& u = erf.input(0);
    const Node* scale = producer(u);
    if (!scale || !sole(u)) return std::nullopt;
    if (is(*scale, "Div") && scale->input_size() == 2 && isConst(scale->input(1), std::sqrt(2.0)))
      m.x = scale->input(0);
    else if (auto x = otherThanConst(*scale, "Mul", std::sqrt(0.5)))
      m.x = *x;
    else
      return std::nullopt;
    m.nodes = {index(*scale), anchor};
    std::optional<std::string> a = plusOne(erf.output(0), m);
    if (!a) return std::nullopt;
    return product(*a, std::move(m));
  }

  std::optional<Match> tanhGelu(int anchor) const {
    const Node& tanh = g_.node(anchor);
    if (!is(tanh, "Tanh") || tanh.input_size() != 1 || tanh.output_size() != 1) return std::nullopt;
    Match m;
    m.anchor = anchor;
    m.attrs = {stringAttr("approximate", "tanh")};
    const std::string& v = tanh.input(0);
    const Node* scale = producer(v);
    if (!scale || !sole(v)) return std::nullopt;
    std::optional<std::string> w = otherThanConst(*scale, "Mul", std::sqrt(2.0 / M_PI));
    if (!w || !sole(*w)) return std::nullopt;
    const Node* inner = producer(*w);
    if (!inner || !is(*inner, "Add") || inner->input_size() != 2) return std::nullopt;
    // x + 0.044715·x³, either way round.
    for (int side = 0; side < 2; ++side) {
      const std::string& x = inner->input(side);
      const std::string& q = inner->input(1 - side);
      const Node* cubic = producer(q);
      if (!cubic || !sole(q)) continue;
      std::optional<std::string> cube = otherThanConst(*cubic, "Mul", 0.044715);
      if (!cube || !sole(*cube)) continue;
      std::optional<std::vector<int>> cubeNodes = cubeOf(*cube, x);
      if (!cubeNodes) continue;
      m.x = x;
      m.nodes = *cubeNodes;
      for (const Node* n : {cubic, inner, scale}) m.nodes.push_back(index(*n));
      m.nodes.push_back(anchor);
      std::optional<std::string> a = plusOne(tanh.output(0), m);
      if (!a) return std::nullopt;
      return product(*a, std::move(m));
    }
    return std::nullopt;
  }

  /// x · sigmoid(x), either way round, as torch.onnx exports nn.SiLU (Swish-1).
  std::optional<Match> silu(int anchor) const {
    const Node& sigmoid = g_.node(anchor);
    if (!is(sigmoid, "Sigmoid") || sigmoid.input_size() != 1 || sigmoid.output_size() != 1) return std::nullopt;
    const Node* mul = soleConsumer(sigmoid.output(0), "Mul");
    if (!mul || otherOperand(*mul, "Mul", sigmoid.output(0)) != sigmoid.input(0)) return std::nullopt;
    Match m;
    m.op = "Silu";
    m.anchor = anchor;
    m.x = sigmoid.input(0);
    m.y = mul->output(0);
    m.nodes = {anchor, index(*mul)};
    return m;
  }

  /// torch.onnx's nn.GroupNorm (opset < 18): Reshape(x, [N, G, -1]) -> InstanceNormalization
  /// with scale 1 and bias 0 over the G groups -> Reshape back to x's shape (its shape from a
  /// constant or from Shape(x)) -> Mul by a per-channel scale -> Add a per-channel bias, the
  /// two [C] or [C, 1, ...]. Anchored at the InstanceNormalization.
  std::optional<Match> groupNorm(int anchor) const {
    const Node& norm = g_.node(anchor);
    if (!is(norm, "InstanceNormalization") || norm.input_size() != 3 || norm.output_size() != 1) return std::nullopt;
    const std::string& grouped = norm.input(0);
    const Node* in = producer(grouped);
    if (!in || !is(*in, "Reshape") || !sole(grouped)) return std::nullopt;
    Match m;
    m.op = "GroupNorm";
    m.anchor = anchor;
    m.x = in->input(0);
    const std::optional<std::vector<int64_t>> xs = shape(m.x), gs = shape(grouped);
    if (!xs || xs->size() < 3 || !gs || gs->size() != 3 || (*gs)[0] != (*xs)[0]) return std::nullopt;
    const int64_t channels = (*xs)[1], groups = (*gs)[1];
    if (groups < 1 || channels % groups != 0) return std::nullopt;
    // The InstanceNormalization only normalizes: scale 1, bias 0, one per group.
    if (!allEqual(norm.input(1), 1.0, groups) || !allEqual(norm.input(2), 0.0, groups)) return std::nullopt;
    float epsilon = 1e-5f;
    for (const auto& a : norm.attribute())
      if (a.name() == "epsilon") epsilon = a.f();
    m.attrs = {intAttr("num_groups", groups), floatAttr("epsilon", epsilon)};
    const Node* out = soleConsumer(norm.output(0), "Reshape");
    if (!out || shape(out->output(0)) != xs) return std::nullopt;
    const Node* mul = soleConsumer(out->output(0), "Mul");
    if (!mul) return std::nullopt;
    std::optional<std::string> scale = otherOperand(*mul, "Mul", out->output(0));
    const Node* add = soleConsumer(mul->output(0), "Add");
    if (!scale || !add) return std::nullopt;
    std::optional<std::string> bias = otherOperand(*add, "Add", mul->output(0));
    if (!bias || !perChannel(*scale, channels, xs->size()) || !perChannel(*bias, channels, xs->size())) return std::nullopt;
    m.params = {*scale, *bias};
    m.y = add->output(0);
    m.nodes = {index(*in), anchor, index(*out), index(*mul), index(*add)};
    // The Shape(x) that only the second Reshape reads goes with the pattern.
    if (const Node* s = producer(out->input(1)); s && is(*s, "Shape") && s->input_size() == 1 && s->input(0) == m.x && sole(out->input(1)))
      m.nodes.push_back(index(*s));
    return m;
  }

  /// `a` and `b` have the same inferred tensor type, shape included.
  bool sameType(const std::string& a, const std::string& b) const {
    auto ta = types_.find(a), tb = types_.find(b);
    return ta != types_.end() && tb != types_.end() && ta->second->has_tensor_type() && ta->second->tensor_type().has_shape() &&
           ta->second->SerializeAsString() == tb->second->SerializeAsString();
  }

  /// A Dropout that passes its input through: not in training mode (no training_mode input,
  /// or a constant false one) or with a constant ratio of 0, and no reader of its mask.
  bool inertDropout(int i) const {
    const Node& n = g_.node(i);
    if (!is(n, "Dropout") || n.input_size() < 1 || n.output_size() < 1 || n.input(0).empty() || n.output(0).empty())
      return false;
    if (n.output_size() >= 2 && !n.output(1).empty() && (consumers_.count(n.output(1)) || outputs_.count(n.output(1))))
      return false;
    const bool training = n.input_size() >= 3 && !n.input(2).empty() && constant(n.input(2)) != std::optional<double>(0.0);
    const bool zeroRatio = n.input_size() >= 2 && !n.input(1).empty() && constant(n.input(1)) == std::optional<double>(0.0);
    return !training || zeroRatio;
  }

private:
  static bool is(const Node& n, const char* op) {
    return (n.domain().empty() || n.domain() == "ai.onnx") && n.op_type() == op;
  }
  int index(const Node& n) const { return indexOf_.at(&n); }

  const Node* producer(const std::string& v) const {
    auto it = producer_.find(v);
    return it == producer_.end() ? nullptr : &g_.node(it->second);
  }
  /// `v` is read by exactly one node, once, and is not a graph output.
  bool sole(const std::string& v) const {
    auto it = consumers_.find(v);
    return it != consumers_.end() && it->second.size() == 1 && !outputs_.count(v);
  }
  /// The one node that reads `v`, when it is a `op` (see sole()).
  const Node* soleConsumer(const std::string& v, const char* op) const {
    if (!sole(v)) return nullptr;
    const Node& n = g_.node(consumers_.at(v).front());
    return is(n, op) ? &n : nullptr;
  }

  /// The static shape of `v` from shape inference (value_info, inputs, outputs, initializers).
  std::optional<std::vector<int64_t>> shape(const std::string& v) const {
    if (auto it = initializers_.find(v); it != initializers_.end())
      return std::vector<int64_t>(it->second->dims().begin(), it->second->dims().end());
    auto it = types_.find(v);
    return it == types_.end() ? std::nullopt : staticShape(*it->second);
  }
  /// `v` broadcasts one value per channel over an x of `rank` (channels on axis 1):
  /// [C, 1, ..., 1] of rank - 1, as torch.onnx unsqueezes GroupNorm's weight. ([C] alone
  /// would broadcast along the last axis.)
  bool perChannel(const std::string& v, int64_t channels, size_t rank) const {
    std::optional<std::vector<int64_t>> s = shape(v);
    if (!s || s->size() + 1 != rank || (*s)[0] != channels) return false;
    return std::all_of(s->begin() + 1, s->end(), [](int64_t d) { return d == 1; });
  }
  /// `v` is a float constant (initializer or Constant node) of `count` elements, all `want`.
  bool allEqual(const std::string& v, double want, int64_t count) const {
    const TP* t = nullptr;
    if (auto it = initializers_.find(v); it != initializers_.end()) t = it->second;
    else if (const Node* n = producer(v); n && is(*n, "Constant") && n->attribute_size() == 1 && n->attribute(0).name() == "value")
      t = &n->attribute(0).t();
    if (!t || t->data_location() == TP::EXTERNAL || t->data_type() != TP::FLOAT) return false;
    int64_t elements = 1;
    for (int64_t d : t->dims()) elements *= d;
    if (elements != count) return false;
    std::vector<float> values(static_cast<size_t>(count));
    if (t->float_data_size() == count) {
      std::copy(t->float_data().begin(), t->float_data().end(), values.begin());
    } else if (t->raw_data().size() == values.size() * sizeof(float)) {
      std::memcpy(values.data(), t->raw_data().data(), t->raw_data().size());
    } else {
      return false;
    }
    return std::all_of(values.begin(), values.end(), [want](float f) { return static_cast<double>(f) == want; });
  }

  std::optional<double> constant(const std::string& v) const {
    if (auto it = initializers_.find(v); it != initializers_.end()) return scalarOf(*it->second);
    const Node* n = producer(v);
    if (!n || !is(*n, "Constant") || n->attribute_size() != 1) return std::nullopt;
    const onnx::AttributeProto& a = n->attribute(0);
    if (a.name() == "value") return scalarOf(a.t());
    if (a.name() == "value_float") return a.f();
    return std::nullopt;
  }
  bool isConst(const std::string& v, double want) const {
    std::optional<double> c = constant(v);
    return c && std::fabs(*c - want) <= 1e-5 * std::fabs(want);
  }

  /// For a binary `op` node with one operand the constant `want`: the other operand.
  std::optional<std::string> otherThanConst(const Node& n, const char* op, double want) const {
    if (!is(n, op) || n.input_size() != 2 || n.output_size() != 1) return std::nullopt;
    if (isConst(n.input(1), want)) return n.input(0);
    if (isConst(n.input(0), want)) return n.input(1);
    return std::nullopt;
  }
  /// For a binary `op` node reading `known`: the other operand.
  std::optional<std::string> otherOperand(const Node& n, const char* op, const std::string& known) const {
    if (!is(n, op) || n.input_size() != 2 || n.output_size() != 1) return std::nullopt;
    if (n.input(0) == known) return n.input(1);
    if (n.input(1) == known) return n.input(0);
    return std::nullopt;
  }

  /// `cube` is x³: Pow(x, 3), Mul(x, x·x) or Mul(x·x, x). The nodes that compute it.
  std::optional<std::vector<int>> cubeOf(const std::string& cube, const std::string& x) const {
    const Node* c = producer(cube);
    if (!c) return std::nullopt;
    if (is(*c, "Pow") && c->input_size() == 2 && c->input(0) == x && constant(c->input(1)) == std::optional<double>(3.0))
      return std::vector<int>{index(*c)};
    std::optional<std::string> square = otherOperand(*c, "Mul", x);
    if (!square || !sole(*square)) return std::nullopt;
    const Node* s = producer(*square);
    if (!s || !is(*s, "Mul") || s->input_size() != 2 || s->input(0) != x || s->input(1) != x) return std::nullopt;
    return std::vector<int>{index(*s), index(*c)};
  }

  /// `v` + 1 (either way round), with `v` read only there: the sum, and its node added to `m`.
  std::optional<std::string> plusOne(const std::string& v, Match& m) const {
    const Node* add = soleConsumer(v, "Add");
    if (!add || otherOperand(*add, "Add", v) == std::nullopt || !isConst(*otherOperand(*add, "Add", v), 1.0))
      return std::nullopt;
    m.nodes.push_back(index(*add));
    return add->output(0);
  }

  /// Completes `m` with the product 0.5 · x · a in any grouping: (x·a)·0.5, (x·a)/2,
  /// (0.5·a)·x, (x·0.5)·a.
  std::optional<Match> product(const std::string& a, Match m) const {
    const Node* m1 = soleConsumer(a, "Mul");
    if (!m1) return std::nullopt;
    std::optional<std::string> other = otherOperand(*m1, "Mul", a);
    if (!other) return std::nullopt;
    const std::string o = *other;
    const std::string& p = m1->output(0);
    if (o == m.x || isConst(o, 0.5)) {
      if (!sole(p)) return std::nullopt;
      const Node& m2 = g_.node(consumers_.at(p).front());
      bool done = o == m.x ? (otherThanConst(m2, "Mul", 0.5) == p ||
                              (is(m2, "Div") && m2.input_size() == 2 && m2.input(0) == p && isConst(m2.input(1), 2.0)))
                           : otherOperand(m2, "Mul", p) == m.x;
      if (!done) return std::nullopt;
      m.nodes.push_back(index(*m1));
      m.nodes.push_back(index(m2));
      m.y = m2.output(0);
      return m;
    }
    const Node* half = producer(o);
    if (!half || !sole(o) || otherThanConst(*half, "Mul", 0.5) != m.x) return std::nullopt;
    m.nodes.push_back(index(*half));
    m.nodes.push_back(index(*m1));
    m.y = p;
    return m;
  }

  const onnx::GraphProto& g_;
  std::unordered_map<const Node*, int> indexOf_;
  std::unordered_map<std::string, int> producer_;
  std::unordered_map<std::string, std::vector<int>> consumers_;
  std::unordered_set<std::string> outputs_;
  std::unordered_map<std::string, const TP*> initializers_;
  std::unordered_map<std::string, const onnx::TypeProto*> types_;
};

/// `/blocks.0/mlp/act/Erf` -> `/blocks.0/mlp/act/Gelu`; `erf_3` -> `erf_3_gelu`.
std::string fusedName(const std::string& anchor, const std::string& op) {
  if (anchor.empty()) return anchor;
  size_t slash = anchor.rfind('/');
  std::string lower = op;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return slash == std::string::npos ? anchor + "_" + lower : anchor.substr(0, slash + 1) + op;
}

/// Finds the patterns `find` matches (each anchored at one node; a node joins at most one),
/// keeps those whose input and output have the same inferred type (a pattern whose constants
/// broadcast x to another shape, a [1,1] constant on an [8] input, is not one), and rewrites
/// each into one tbp.fused node at its last node's place. Returns the number fused.
template <typename Find>
int fuse(onnx::GraphProto& graph, Find find) {
  std::vector<Match> matches;
  {
    Patterns patterns(graph);
    std::vector<bool> taken(static_cast<size_t>(graph.node_size()), false);
    for (int i = 0; i < graph.node_size(); ++i) {
      std::optional<Match> m = find(patterns, i);
      if (!m || !patterns.sameType(m->x, m->y)) continue;
      if (std::any_of(m->nodes.begin(), m->nodes.end(), [&](int n) { return taken[static_cast<size_t>(n)]; })) continue;
      for (int n : m->nodes) taken[static_cast<size_t>(n)] = true;
      matches.push_back(std::move(*m));
    }
  }
  if (matches.empty()) return 0;

  // The fused node goes where the pattern's output is made (its last node in a topological
  // order); the rest of the pattern goes.
  std::unordered_map<int, const Match*> fusedAt;
  std::set<int> removed;
  std::set<std::string> patternReads;
  for (const Match& m : matches) {
    int last = *std::max_element(m.nodes.begin(), m.nodes.end());
    fusedAt[last] = &m;
    for (int n : m.nodes) {
      removed.insert(n);
      for (const auto& in : graph.node(n).input()) patternReads.insert(in);
    }
  }
  google::protobuf::RepeatedPtrField<Node> kept;
  for (int i = 0; i < graph.node_size(); ++i) {
    auto it = fusedAt.find(i);
    if (it != fusedAt.end()) {
      const Match& m = *it->second;
      Node* fused = kept.Add();
      fused->set_op_type(m.op);
      fused->set_domain(kFusedDomain);
      fused->set_name(fusedName(graph.node(m.anchor).name(), m.op));
      fused->add_input(m.x);
      for (const std::string& p : m.params) fused->add_input(p);
      fused->add_output(m.y);
      for (const onnx::AttributeProto& a : m.attrs) *fused->add_attribute() = a;
    } else if (!removed.count(i)) {
      *kept.Add() = std::move(*graph.mutable_node(i));
    }
  }
  // Constant nodes that only the patterns read.
  std::unordered_set<std::string> read;
  for (const Node& n : kept)
    for (const auto& in : n.input()) read.insert(in);
  for (const auto& o : graph.output()) read.insert(o.name());
  google::protobuf::RepeatedPtrField<Node> nodes;
  for (Node& n : kept) {
    bool unusedConstant = (n.domain().empty() || n.domain() == "ai.onnx") && n.op_type() == "Constant" &&
                          n.output_size() == 1 && patternReads.count(n.output(0)) && !read.count(n.output(0));
    if (!unusedConstant) *nodes.Add() = std::move(n);
  }
  graph.mutable_node()->Swap(&nodes);
  return static_cast<int>(matches.size());
}

} // namespace

int elideInertDropouts(onnx::GraphProto& graph) {
  std::vector<int> inert;
  {
    Patterns patterns(graph);
    for (int i = 0; i < graph.node_size(); ++i)
      if (patterns.inertDropout(i)) inert.push_back(i);
  }
  for (int i : inert) {
    Node& n = *graph.mutable_node(i);
    std::string in = n.input(0), out = n.output(0);
    n.clear_input();
    n.clear_output();
    n.clear_attribute();
    n.set_op_type("Identity");
    n.add_input(in);
    n.add_output(out);
  }
  return static_cast<int>(inert.size());
}

int fuseGelu(onnx::GraphProto& graph) {
  return fuse(graph, [](const Patterns& p, int i) {
    std::optional<Match> m = p.erfGelu(i);
    return m ? m : p.tanhGelu(i);
  });
}

int fuseSilu(onnx::GraphProto& graph) {
  return fuse(graph, [](const Patterns& p, int i) { return p.silu(i); });
}

int fuseGroupNorm(onnx::GraphProto& graph) {
  return fuse(graph, [](const Patterns& p, int i) { return p.groupNorm(i); });
}

} // namespace tbp::frontend
