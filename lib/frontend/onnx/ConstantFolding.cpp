#include "ConstantFolding.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <optional>
#include <unordered_map>

namespace tbp::frontend {

namespace {

using TP = onnx::TensorProto;
constexpr size_t kMaxFoldedElements = size_t{1} << 22;

/// An integer or boolean tensor being folded.
struct IntTensor {
  int elemType = TP::INT64;
  std::vector<int64_t> dims;
  std::vector<int64_t> data;
  size_t size() const { return data.size(); }
};

bool isFoldableType(int t) {
  return t == TP::INT64 || t == TP::INT32 || t == TP::BOOL || t == TP::INT8 || t == TP::UINT8 ||
         t == TP::INT16 || t == TP::UINT16 || t == TP::UINT32;
}

size_t elemSize(int t) {
  switch (t) {
  case TP::INT64: return 8;
  case TP::INT32: case TP::UINT32: return 4;
  case TP::INT16: case TP::UINT16: return 2;
  default: return 1;
  }
}

std::optional<IntTensor> fromProto(const TP& t) {
  if (!isFoldableType(t.data_type()) || t.data_location() == TP::EXTERNAL) return std::nullopt;
  IntTensor out;
  out.elemType = t.data_type();
  out.dims.assign(t.dims().begin(), t.dims().end());
  size_t n = 1;
  for (int64_t d : out.dims) n *= static_cast<size_t>(std::max<int64_t>(d, 0));
  if (n > kMaxFoldedElements) return std::nullopt;
  if (t.has_raw_data()) {
    const std::string& raw = t.raw_data();
    size_t es = elemSize(t.data_type());
    if (raw.size() != n * es) return std::nullopt;
    for (size_t i = 0; i < n; ++i) {
      int64_t v = 0;
      switch (t.data_type()) {
      case TP::INT64: std::memcpy(&v, raw.data() + 8 * i, 8); break;
      case TP::INT32: { int32_t x; std::memcpy(&x, raw.data() + 4 * i, 4); v = x; break; }
      case TP::UINT32: { uint32_t x; std::memcpy(&x, raw.data() + 4 * i, 4); v = x; break; }
      case TP::INT16: { int16_t x; std::memcpy(&x, raw.data() + 2 * i, 2); v = x; break; }
      case TP::UINT16: { uint16_t x; std::memcpy(&x, raw.data() + 2 * i, 2); v = x; break; }
      case TP::INT8: v = static_cast<int8_t>(raw[i]); break;
      default: v = static_cast<uint8_t>(raw[i]); break;
      }
      out.data.push_back(v);
    }
  } else if (t.data_type() == TP::INT64) {
    out.data.assign(t.int64_data().begin(), t.int64_data().end());
  } else {
    out.data.assign(t.int32_data().begin(), t.int32_data().end());
  }
  if (out.data.size() != n) return std::nullopt;
  return out;
}

TP toProto(const IntTensor& t, const std::string& name) {
  TP p;
  p.set_name(name);
  p.set_data_type(t.elemType);
  for (int64_t d : t.dims) p.add_dims(d);
  std::string raw(t.data.size() * elemSize(t.elemType), '\0');
  for (size_t i = 0; i < t.data.size(); ++i) {
    int64_t v = t.data[i];
    switch (t.elemType) {
    case TP::INT64: std::memcpy(raw.data() + 8 * i, &v, 8); break;
    case TP::INT32: case TP::UINT32: { int32_t x = static_cast<int32_t>(v); std::memcpy(raw.data() + 4 * i, &x, 4); break; }
    case TP::INT16: case TP::UINT16: { int16_t x = static_cast<int16_t>(v); std::memcpy(raw.data() + 2 * i, &x, 2); break; }
    default: raw[i] = static_cast<char>(v); break;
    }
  }
  p.set_raw_data(std::move(raw));
  return p;
}

/// Element count of `dims`; SIZE_MAX when a dimension is negative or the product overflows.
size_t numel(const std::vector<int64_t>& dims) {
  size_t n = 1;
  for (int64_t d : dims)
    if (d < 0 || __builtin_mul_overflow(n, static_cast<size_t>(d), &n)) return SIZE_MAX;
  return n;
}

std::string shapeText(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

// Integer arithmetic as ONNX runtimes do it on int64: two's-complement wraparound, never C++'s
// undefined behaviour on overflow.
int64_t wrapAdd(int64_t a, int64_t b) { return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b)); }
int64_t wrapSub(int64_t a, int64_t b) { return static_cast<int64_t>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b)); }
int64_t wrapMul(int64_t a, int64_t b) { return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b)); }
int64_t wrapNeg(int64_t a) { return wrapSub(0, a); }

std::vector<size_t> stridesOf(const std::vector<int64_t>& dims) {
  std::vector<size_t> s(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) s[i - 1] = s[i] * static_cast<size_t>(dims[i]);
  return s;
}

int64_t normAxis(int64_t axis, size_t rank) { return axis < 0 ? axis + static_cast<int64_t>(rank) : axis; }

/// Numpy broadcasting of any number of inputs; returns nullopt when shapes do not broadcast.
std::optional<IntTensor> broadcast(const std::vector<const IntTensor*>& ins, int outType,
                                   const std::function<int64_t(const std::vector<int64_t>&)>& f) {
  size_t rank = 0;
  for (auto* t : ins) rank = std::max(rank, t->dims.size());
  std::vector<int64_t> dims(rank, 1);
  for (auto* t : ins)
    for (size_t i = 0; i < t->dims.size(); ++i) {
      int64_t& d = dims[rank - t->dims.size() + i];
      int64_t e = t->dims[i];
      if (d == 1) d = e;
      else if (e != 1 && e != d) return std::nullopt;
    }
  IntTensor out{outType, dims, {}};
  size_t n = numel(dims);
  if (n > kMaxFoldedElements) return std::nullopt;
  std::vector<std::vector<size_t>> strides;
  for (auto* t : ins) {
    std::vector<size_t> s = stridesOf(t->dims), full(rank, 0);
    for (size_t i = 0; i < t->dims.size(); ++i)
      full[rank - t->dims.size() + i] = t->dims[i] == 1 ? 0 : s[i];
    strides.push_back(full);
  }
  std::vector<size_t> outStrides = stridesOf(dims);
  std::vector<int64_t> args(ins.size());
  out.data.resize(n);
  for (size_t flat = 0; flat < n; ++flat) {
    for (size_t k = 0; k < ins.size(); ++k) {
      size_t offset = 0, rem = flat;
      for (size_t i = 0; i < rank; ++i) {
        size_t idx = rem / outStrides[i];
        rem %= outStrides[i];
        offset += idx * strides[k][i];
      }
      args[k] = ins[k]->data[offset];
    }
    out.data[flat] = f(args);
  }
  return out;
}

std::vector<int64_t> attrInts(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return {a.ints().begin(), a.ints().end()};
  return {};
}
std::optional<int64_t> attrInt(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return std::nullopt;
}
bool hasAttr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return true;
  return false;
}

/// Who a FoldError is about: "node 'name' (Op)", or the value it produces when unnamed.
std::string who(const onnx::NodeProto& n) {
  if (!n.name().empty()) return "node '" + n.name() + "' (" + n.op_type() + ")";
  return "the " + n.op_type() + " node producing '" + (n.output_size() ? n.output(0) : std::string()) + "'";
}

[[noreturn]] void foldError(const onnx::NodeProto& n, const std::string& what) {
  throw FoldError(who(n) + ": " + what + " (its inputs are constants)");
}

/// Gathers slices of `data` along `axis` per index list (Gather semantics).
std::optional<IntTensor> gather(const onnx::NodeProto& node, const IntTensor& data, const IntTensor& idx, int64_t axis) {
  const int64_t given = axis;
  axis = normAxis(axis, data.dims.size());
  if (axis < 0 || axis >= static_cast<int64_t>(data.dims.size()))
    foldError(node, "axis " + std::to_string(given) + " is out of range for rank " + std::to_string(data.dims.size()));
  IntTensor out{data.elemType, {}, {}};
  out.dims.insert(out.dims.end(), data.dims.begin(), data.dims.begin() + axis);
  out.dims.insert(out.dims.end(), idx.dims.begin(), idx.dims.end());
  out.dims.insert(out.dims.end(), data.dims.begin() + axis + 1, data.dims.end());
  size_t outer = numel({data.dims.begin(), data.dims.begin() + axis});
  size_t inner = numel({data.dims.begin() + axis + 1, data.dims.end()});
  int64_t len = data.dims[static_cast<size_t>(axis)];
  for (size_t o = 0; o < outer; ++o)
    for (int64_t i : idx.data) {
      const int64_t index = i;
      if (i < 0) i += len;
      if (i < 0 || i >= len)
        foldError(node, "index " + std::to_string(index) + " is out of range for a dimension of " + std::to_string(len));
      for (size_t k = 0; k < inner; ++k)
        out.data.push_back(data.data[(o * static_cast<size_t>(len) + static_cast<size_t>(i)) * inner + k]);
    }
  return out;
}

std::optional<IntTensor> slice(const onnx::NodeProto& node, const IntTensor& data, std::vector<int64_t> starts, std::vector<int64_t> ends,
                               std::vector<int64_t> axes, std::vector<int64_t> steps) {
  size_t rank = data.dims.size();
  if (axes.empty()) for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    foldError(node, "starts, ends, axes and steps have different lengths");
  std::vector<int64_t> begin(rank, 0), step(rank, 1), count(data.dims);
  for (size_t k = 0; k < starts.size(); ++k) {
    int64_t a = normAxis(axes[k], rank);
    if (a < 0 || a >= static_cast<int64_t>(rank))
      foldError(node, "axis " + std::to_string(axes[k]) + " is out of range for rank " + std::to_string(rank));
    if (steps[k] == 0) foldError(node, "a step is 0");
    int64_t dim = data.dims[static_cast<size_t>(a)];
    int64_t s = starts[k], e = ends[k];
    if (s < 0) s += dim;
    if (e < 0) e += dim;
    if (steps[k] > 0) {
      s = std::clamp<int64_t>(s, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      count[static_cast<size_t>(a)] = e > s ? 1 + (e - s - 1) / steps[k] : 0;
    } else {
      s = std::clamp<int64_t>(s, 0, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      // -(step + 1) + 1 = -step without negating INT64_MIN.
      count[static_cast<size_t>(a)] = s > e ? 1 + static_cast<int64_t>(static_cast<uint64_t>(s - e - 1) / (static_cast<uint64_t>(-(steps[k] + 1)) + 1)) : 0;
    }
    begin[static_cast<size_t>(a)] = s;
    step[static_cast<size_t>(a)] = steps[k];
  }
  IntTensor out{data.elemType, count, {}};
  size_t n = numel(count);
  std::vector<size_t> inStrides = stridesOf(data.dims), outStrides = stridesOf(count);
  for (size_t flat = 0; flat < n; ++flat) {
    size_t rem = flat, offset = 0;
    for (size_t i = 0; i < rank; ++i) {
      int64_t idx = static_cast<int64_t>(rem / outStrides[i]);
      rem %= outStrides[i];
      offset += static_cast<size_t>(begin[i] + idx * step[i]) * inStrides[i];
    }
    out.data.push_back(data.data[offset]);
  }
  return out;
}



class Folder {
public:
  explicit Folder(onnx::GraphProto& g) : g_(g) {
    for (const auto& vi : g.input()) types_[vi.name()] = &vi.type();
    for (const auto& vi : g.value_info()) types_[vi.name()] = &vi.type();
    for (const auto& vi : g.output()) types_[vi.name()] = &vi.type();
    for (const auto& init : g.initializer())
      if (auto t = fromProto(init)) known_[init.name()] = std::move(*t);
  }

  int run() {
    int folded = 0;
    std::vector<int> keep;
    for (int i = 0; i < g_.node_size(); ++i) {
      const onnx::NodeProto& n = g_.node(i);
      bool isOutput = false;
      for (const auto& o : g_.output()) isOutput = isOutput || (n.output_size() > 0 && o.name() == n.output(0));
      std::optional<IntTensor> v = isDefault(n) && n.output_size() == 1 && !isOutput ? evaluate(n) : std::nullopt;
      if (!v) {
        keep.push_back(i);
        continue;
      }
      *g_.add_initializer() = toProto(*v, n.output(0));
      known_[n.output(0)] = std::move(*v);
      ++folded;
    }
    if (folded == 0) return 0;
    google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
    for (int i : keep) *nodes.Add() = std::move(*g_.mutable_node(i));
    g_.mutable_node()->Swap(&nodes);
    // Types recorded by the previous inference pass for folded values may be less precise than
    // the initializers that replace them (symbolic dims): drop them.
    google::protobuf::RepeatedPtrField<onnx::ValueInfoProto> infos;
    for (auto& vi : *g_.mutable_value_info())
      if (!known_.count(vi.name())) *infos.Add() = std::move(vi);
    g_.mutable_value_info()->Swap(&infos);
    return folded;
  }

private:
  static bool isDefault(const onnx::NodeProto& n) { return n.domain().empty() || n.domain() == "ai.onnx"; }

  const IntTensor* in(const onnx::NodeProto& n, int k) const {
    if (k >= n.input_size() || n.input(k).empty()) return nullptr;
    auto it = known_.find(n.input(k));
    return it == known_.end() ? nullptr : &it->second;
  }

  /// The fully known shape of value `name`, from inference.
  std::optional<std::vector<int64_t>> shapeOf(const std::string& name) const {
    auto it = types_.find(name);
    return it == types_.end() ? std::nullopt : staticShape(*it->second);
  }

  std::optional<IntTensor> evaluate(const onnx::NodeProto& n) {
    const std::string& op = n.op_type();
    if (op == "Shape") {
      auto dims = n.input_size() ? shapeOf(n.input(0)) : std::nullopt;
      if (!dims) return std::nullopt;
      int64_t r = static_cast<int64_t>(dims->size());
      int64_t s = normAxis(attrInt(n, "start").value_or(0), dims->size());
      int64_t e = normAxis(attrInt(n, "end").value_or(r), dims->size());
      s = std::clamp<int64_t>(s, 0, r);
      e = std::clamp<int64_t>(e, 0, r);
      IntTensor t{TP::INT64, {std::max<int64_t>(e - s, 0)}, {}};
      for (int64_t i = s; i < e; ++i) t.data.push_back((*dims)[static_cast<size_t>(i)]);
      return t;
    }
    if (op == "Size") {
      auto dims = n.input_size() ? shapeOf(n.input(0)) : std::nullopt;
      if (!dims) return std::nullopt;
      return IntTensor{TP::INT64, {}, {static_cast<int64_t>(numel(*dims))}};
    }
    // Every other foldable op needs all its present inputs known.
    for (int k = 0; k < n.input_size(); ++k)
      if (!n.input(k).empty() && !in(n, k)) return std::nullopt;
    const IntTensor* a = in(n, 0);
    const IntTensor* b = in(n, 1);
    if (op == "Identity" && a) return *a;
    if (op == "Cast" && a) {
      int to = static_cast<int>(attrInt(n, "to").value_or(0));
      if (!isFoldableType(to)) return std::nullopt;
      IntTensor t = *a;
      t.elemType = to;
      if (to == TP::BOOL) for (auto& v : t.data) v = v != 0;
      return t;
    }
    if (op == "Gather" && a && b) return gather(n, *a, *b, attrInt(n, "axis").value_or(0));
    if ((op == "Unsqueeze" || op == "Squeeze") && a) {
      std::vector<int64_t> axes = b ? b->data : attrInts(n, "axes");
      IntTensor t = *a;
      if (op == "Unsqueeze") {
        size_t rank = a->dims.size() + axes.size();
        for (auto& ax : axes) {
          const int64_t given = ax;
          ax = normAxis(ax, rank);
          if (ax < 0 || ax >= static_cast<int64_t>(rank))
            foldError(n, "axis " + std::to_string(given) + " is out of range for an output of rank " + std::to_string(rank));
        }
        std::sort(axes.begin(), axes.end());
        if (std::adjacent_find(axes.begin(), axes.end()) != axes.end()) foldError(n, "an axis is repeated");
        for (int64_t ax : axes) {
          t.dims.insert(t.dims.begin() + ax, 1);
        }
      } else {
        for (int64_t ax : axes) {
          const int64_t r = normAxis(ax, a->dims.size());
          if (r < 0 || r >= static_cast<int64_t>(a->dims.size()))
            foldError(n, "axis " + std::to_string(ax) + " is out of range for rank " + std::to_string(a->dims.size()));
          if (a->dims[static_cast<size_t>(r)] != 1)
            foldError(n, "axis " + std::to_string(ax) + " has size " + std::to_string(a->dims[static_cast<size_t>(r)]) + ", not 1");
        }
        std::vector<int64_t> dims;
        for (size_t i = 0; i < a->dims.size(); ++i) {
          bool drop = axes.empty() ? a->dims[i] == 1
                                   : std::any_of(axes.begin(), axes.end(), [&](int64_t ax) { return normAxis(ax, a->dims.size()) == static_cast<int64_t>(i); });
          if (!drop) dims.push_back(a->dims[i]);
        }
        t.dims = dims;
      }
      return t;
    }
    if (op == "Concat" && a) {
      int64_t axis = normAxis(attrInt(n, "axis").value_or(0), a->dims.size());
      if (axis != 0 || a->dims.size() != 1) return std::nullopt; // shape vectors only
      IntTensor t{a->elemType, {0}, {}};
      for (int k = 0; k < n.input_size(); ++k) {
        const IntTensor* x = in(n, k);
        if (!x || x->dims.size() != 1) return std::nullopt;
        t.data.insert(t.data.end(), x->data.begin(), x->data.end());
      }
      t.dims[0] = static_cast<int64_t>(t.data.size());
      return t;
    }
    if (op == "Slice" && a) {
      if (n.input_size() >= 3) {
        const IntTensor* axes = in(n, 3);
        const IntTensor* steps = in(n, 4);
        return slice(n, *a, in(n, 1)->data, in(n, 2)->data, axes ? axes->data : std::vector<int64_t>{},
                     steps ? steps->data : std::vector<int64_t>{});
      }
      return slice(n, *a, attrInts(n, "starts"), attrInts(n, "ends"), attrInts(n, "axes"), {});
    }
    if (op == "Reshape" && a && b) {
      std::vector<int64_t> dims = b->data;
      int64_t infer = -1;
      size_t known = 1;
      for (size_t i = 0; i < dims.size(); ++i) {
        if (dims[i] == 0 && !attrInt(n, "allowzero").value_or(0) && i < a->dims.size()) dims[i] = a->dims[i];
        if (dims[i] == -1) {
          if (infer >= 0) foldError(n, "the shape has more than one -1");
          infer = static_cast<int64_t>(i);
        } else if (dims[i] < 0) {
          foldError(n, "the shape has the negative dimension " + std::to_string(dims[i]));
        } else {
          known = numel({static_cast<int64_t>(known), dims[i]});
        }
      }
      if (infer >= 0 && known != 0 && known != SIZE_MAX && a->size() % known == 0) dims[static_cast<size_t>(infer)] = static_cast<int64_t>(a->size() / known);
      if (numel(dims) != a->size())
        foldError(n, "cannot reshape " + std::to_string(a->size()) + " elements into the shape " + shapeText(b->data));
      IntTensor t = *a;
      t.dims = dims;
      return t;
    }
    if (op == "ConstantOfShape" && a) {
      int type = TP::FLOAT;
      int64_t value = 0;
      for (const auto& at : n.attribute())
        if (at.name() == "value") {
          type = at.t().data_type();
          auto v = fromProto(at.t());
          if (!v || v->data.empty()) return std::nullopt;
          value = v->data[0];
        }
      if (numel(a->data) == SIZE_MAX) foldError(n, "the shape " + shapeText(a->data) + " has a negative dimension or too many elements");
      if (!isFoldableType(type) || numel(a->data) > kMaxFoldedElements) return std::nullopt;
      return IntTensor{type, a->data, std::vector<int64_t>(numel(a->data), value)};
    }
    if (op == "Range" && a && b && in(n, 2)) {
      if (a->size() != 1 || b->size() != 1 || in(n, 2)->size() != 1) foldError(n, "start, limit and delta must be scalars");
      int64_t start = a->data[0], limit = b->data[0], delta = in(n, 2)->data[0];
      if (delta == 0) foldError(n, "delta is 0");
      IntTensor t{a->elemType, {0}, {}};
      for (int64_t v = start; delta > 0 ? v < limit : v > limit;) {
        t.data.push_back(v);
        if (t.data.size() > kMaxFoldedElements) return std::nullopt;
        if (__builtin_add_overflow(v, delta, &v)) break;
      }
      t.dims[0] = static_cast<int64_t>(t.data.size());
      return t;
    }
    if (op == "Expand" && a && b) {
      if (numel(b->data) == SIZE_MAX) foldError(n, "the shape " + shapeText(b->data) + " has a negative dimension or too many elements");
      if (numel(b->data) > kMaxFoldedElements) return std::nullopt;
      IntTensor shapeT{a->elemType, b->data, std::vector<int64_t>(numel(b->data), 0)};
      return broadcast({a, &shapeT}, a->elemType, [](const std::vector<int64_t>& v) { return v[0]; });
    }
    if ((op == "ReduceProd" || op == "ReduceSum") && a && !hasAttr(n, "axes") && n.input_size() == 1 && !attrInt(n, "keepdims").value_or(1)) {
      int64_t acc = op == "ReduceProd" ? 1 : 0;
      for (int64_t v : a->data) acc = op == "ReduceProd" ? wrapMul(acc, v) : wrapAdd(acc, v);
      return IntTensor{a->elemType, {}, {acc}};
    }
    if (op == "Not" && a) {
      IntTensor t = *a;
      for (auto& v : t.data) v = !v;
      return t;
    }
    if ((op == "Neg" || op == "Abs") && a) {
      IntTensor t = *a;
      for (auto& v : t.data) v = op == "Neg" || v < 0 ? wrapNeg(v) : v;
      return t;
    }
    using Fn = std::function<int64_t(const std::vector<int64_t>&)>;
    static const std::unordered_map<std::string, std::pair<bool, Fn>> kBinary = {
        {"Add", {false, [](const auto& v) { return wrapAdd(v[0], v[1]); }}},
        {"Sub", {false, [](const auto& v) { return wrapSub(v[0], v[1]); }}},
        {"Mul", {false, [](const auto& v) { return wrapMul(v[0], v[1]); }}},
        // INT64_MIN / -1 wraps to INT64_MIN; a zero divisor was refused before broadcasting.
        {"Div", {false, [](const auto& v) { return v[1] == -1 ? wrapNeg(v[0]) : v[0] / v[1]; }}},
        // Python's (and ONNX fmod=0's) sign of the divisor.
        {"Mod", {false, [](const auto& v) {
           if (v[1] == -1) return int64_t{0};
           const int64_t r = v[0] % v[1];
           return r != 0 && ((r < 0) != (v[1] < 0)) ? r + v[1] : r;
         }}},
        {"Min", {false, [](const auto& v) { return std::min(v[0], v[1]); }}},
        {"Max", {false, [](const auto& v) { return std::max(v[0], v[1]); }}},
        {"Equal", {true, [](const auto& v) { return int64_t{v[0] == v[1]}; }}},
        {"Less", {true, [](const auto& v) { return int64_t{v[0] < v[1]}; }}},
        {"LessOrEqual", {true, [](const auto& v) { return int64_t{v[0] <= v[1]}; }}},
        {"Greater", {true, [](const auto& v) { return int64_t{v[0] > v[1]}; }}},
        {"GreaterOrEqual", {true, [](const auto& v) { return int64_t{v[0] >= v[1]}; }}},
        {"And", {true, [](const auto& v) { return int64_t{v[0] && v[1]}; }}},
        {"Or", {true, [](const auto& v) { return int64_t{v[0] || v[1]}; }}},
    };
    auto it = kBinary.find(op);
    if ((op == "Div" || op == "Mod") && b && std::find(b->data.begin(), b->data.end(), 0) != b->data.end())
      foldError(n, "integer division by zero");
    if (it != kBinary.end() && a && b && n.input_size() == 2)
      return broadcast({a, b}, it->second.first ? TP::BOOL : a->elemType, it->second.second);
    if (op == "Where" && a && b && in(n, 2))
      return broadcast({a, b, in(n, 2)}, b->elemType, [](const std::vector<int64_t>& v) { return v[0] ? v[1] : v[2]; });
    return std::nullopt;
  }

  onnx::GraphProto& g_;
  std::unordered_map<std::string, const onnx::TypeProto*> types_;
  std::unordered_map<std::string, IntTensor> known_;
};

} // namespace

std::optional<std::vector<int64_t>> integerValues(const onnx::TensorProto& tensor) {
  std::optional<IntTensor> t = fromProto(tensor);
  if (!t) return std::nullopt;
  return std::move(t->data);
}

int foldIntegerConstants(onnx::GraphProto& graph) {
  // Constant nodes of integer type become initializers first so they are known.
  google::protobuf::RepeatedPtrField<onnx::NodeProto> rest;
  for (auto& n : *graph.mutable_node()) {
    bool isIntConstant = (n.domain().empty() || n.domain() == "ai.onnx") && n.op_type() == "Constant" &&
                         n.output_size() == 1 && n.attribute_size() == 1 &&
                         ((n.attribute(0).name() == "value" && isFoldableType(n.attribute(0).t().data_type())) ||
                          n.attribute(0).name() == "value_int" || n.attribute(0).name() == "value_ints");
    if (!isIntConstant) {
      *rest.Add() = std::move(n);
      continue;
    }
    const auto& a = n.attribute(0);
    TP t;
    if (a.name() == "value") t = a.t();
    else {
      t.set_data_type(TP::INT64);
      if (a.name() == "value_ints") t.add_dims(a.ints_size());
      if (a.name() == "value_int") t.add_int64_data(a.i());
      for (int64_t v : a.ints()) t.add_int64_data(v);
    }
    t.set_name(n.output(0));
    *graph.add_initializer() = std::move(t);
  }
  graph.mutable_node()->Swap(&rest);
  return Folder(graph).run();
}

} // namespace tbp::frontend

namespace tbp::frontend {

namespace {

using Dims = std::vector<int64_t>;

/// Known dims of every value that has a fully known shape.
std::unordered_map<std::string, std::pair<int, Dims>> knownShapes(const onnx::GraphProto& g) {
  std::unordered_map<std::string, std::pair<int, Dims>> out;
  auto add = [&](const onnx::ValueInfoProto& vi) {
    if (!vi.type().has_tensor_type() || !vi.type().tensor_type().has_shape()) return;
    Dims dims;
    for (const auto& d : vi.type().tensor_type().shape().dim()) {
      if (!d.has_dim_value()) return;
      dims.push_back(d.dim_value());
    }
    out[vi.name()] = {vi.type().tensor_type().elem_type(), dims};
  };
  for (const auto& vi : g.input()) add(vi);
  for (const auto& vi : g.value_info()) add(vi);
  for (const auto& vi : g.output()) add(vi);
  for (const auto& init : g.initializer())
    out[init.name()] = {init.data_type(), Dims(init.dims().begin(), init.dims().end())};
  return out;
}

/// Output shape of an Einsum equation given operand shapes; nullopt when it does not parse.
std::optional<Dims> einsumShape(const std::string& equation, const std::vector<Dims>& operands) {
  std::string eq;
  for (char c : equation)
    if (!std::isspace(static_cast<unsigned char>(c))) eq += c;
  size_t arrow = eq.find("->");
  std::string lhs = eq.substr(0, arrow);
  std::vector<std::string> terms;
  size_t start = 0;
  while (true) {
    size_t comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (terms.size() != operands.size()) return std::nullopt;
  std::unordered_map<char, int64_t> size;
  std::unordered_map<char, int> count;
  Dims ellipsis;
  for (size_t k = 0; k < terms.size(); ++k) {
    std::string t = terms[k];
    size_t dots = t.find("...");
    size_t letters = t.size() - (dots == std::string::npos ? 0 : 3);
    if (operands[k].size() < letters) return std::nullopt;
    size_t ellRank = operands[k].size() - letters;
    if (dots == std::string::npos && ellRank != 0) return std::nullopt;
    size_t axis = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      if (i == dots) {
        Dims e(operands[k].begin() + static_cast<long>(axis), operands[k].begin() + static_cast<long>(axis + ellRank));
        if (e.size() > ellipsis.size()) ellipsis.insert(ellipsis.begin(), e.size() - ellipsis.size(), 1);
        for (size_t j = 0; j < e.size(); ++j) {
          int64_t& d = ellipsis[ellipsis.size() - e.size() + j];
          if (d == 1) d = e[j];
        }
        axis += ellRank;
        i += 2;
        continue;
      }
      char c = t[i];
      int64_t d = operands[k][axis++];
      if (!size.count(c) || size[c] == 1) size[c] = d;
      ++count[c];
    }
  }
  Dims out;
  if (arrow == std::string::npos) {
    out = ellipsis;
    std::vector<char> once;
    for (const auto& [c, n] : count)
      if (n == 1) once.push_back(c);
    std::sort(once.begin(), once.end());
    for (char c : once) out.push_back(size[c]);
    return out;
  }
  std::string rhs = eq.substr(arrow + 2);
  for (size_t i = 0; i < rhs.size(); ++i) {
    if (rhs.compare(i, 3, "...") == 0) {
      out.insert(out.end(), ellipsis.begin(), ellipsis.end());
      i += 2;
    } else if (size.count(rhs[i])) {
      out.push_back(size[rhs[i]]);
    } else {
      return std::nullopt;
    }
  }
  return out;
}

void setValueInfo(onnx::GraphProto& g, const std::string& name, int elemType, const Dims& dims) {
  onnx::ValueInfoProto* vi = nullptr;
  for (auto& v : *g.mutable_value_info())
    if (v.name() == name) vi = &v;
  if (!vi) {
    vi = g.add_value_info();
    vi->set_name(name);
  }
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elemType);
  tt->clear_shape();
  auto* shape = tt->mutable_shape();
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

} // namespace

int completeMissingShapes(onnx::GraphProto& g) {
  auto known = knownShapes(g);
  int completed = 0;
  for (const auto& n : g.node()) {
    if (!(n.domain().empty() || n.domain() == "ai.onnx")) continue;
    if (n.op_type() == "Einsum" && n.output_size() == 1 && !known.count(n.output(0))) {
      std::vector<Dims> operands;
      int elemType = 0;
      for (const auto& in : n.input()) {
        auto it = known.find(in);
        if (it == known.end()) { operands.clear(); break; }
        operands.push_back(it->second.second);
        elemType = it->second.first;
      }
      std::string equation;
      for (const auto& a : n.attribute())
        if (a.name() == "equation") equation = a.s();
      if (operands.empty() || operands.size() != static_cast<size_t>(n.input_size())) continue;
      if (auto dims = einsumShape(equation, operands)) {
        setValueInfo(g, n.output(0), elemType, *dims);
        ++completed;
      }
    } else if (n.op_type() == "BatchNormalization" && n.input_size() >= 2) {
      auto scale = known.find(n.input(1));
      auto x = known.find(n.input(0));
      if (scale == known.end() || x == known.end()) continue;
      for (int k = 1; k < n.output_size(); ++k)
        if (!n.output(k).empty() && !known.count(n.output(k))) {
          setValueInfo(g, n.output(k), x->second.first, scale->second.second);
          ++completed;
        }
    }
  }
  return completed;
}

} // namespace tbp::frontend
