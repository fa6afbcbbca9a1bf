#include "tbp/ir/Graph.h"

#include "tbp/support/Bytes.h"

namespace tbp::ir {

const char* valueKindName(ValueKind kind) {
  switch (kind) {
  case ValueKind::Input: return "input";
  case ValueKind::Parameter: return "param";
  case ValueKind::Constant: return "const";
  case ValueKind::Activation: return "act";
  }
  return "?";
}

namespace {
template <typename T> const T* findAttr(const Attributes& attrs, const std::string& key) {
  auto it = attrs.find(key);
  if (it == attrs.end()) return nullptr;
  return std::get_if<T>(&it->second);
}
} // namespace

int64_t Node::attrInt(const std::string& key, int64_t fallback) const {
  const int64_t* v = findAttr<int64_t>(attrs, key);
  return v ? *v : fallback;
}

double Node::attrFloat(const std::string& key, double fallback) const {
  if (const double* v = findAttr<double>(attrs, key)) return *v;
  if (const int64_t* i = findAttr<int64_t>(attrs, key)) return static_cast<double>(*i);
  return fallback;
}

std::vector<int64_t> Node::attrInts(const std::string& key, std::vector<int64_t> fallback) const {
  const auto* v = findAttr<std::vector<int64_t>>(attrs, key);
  return v ? *v : fallback;
}

std::string Node::attrString(const std::string& key, std::string fallback) const {
  const std::string* v = findAttr<std::string>(attrs, key);
  return v ? *v : fallback;
}

Expected<ValueId> Graph::addValue(std::string name, ValueKind kind, TensorType type,
                                  TensorData data) {
  if (byName_.count(name)) return badInput("value '" + name + "' is defined twice");
  Expected<uint64_t> bytes = checkedByteSize(type, "value '" + name + "'");
  if (!bytes) return bytes.status();
  ValueId id = static_cast<ValueId>(values_.size());
  byName_.emplace(name, id);
  values_.push_back(Value{std::move(name), kind, std::move(type), *bytes, kNone, {}, std::move(data)});
  return id;
}

NodeId Graph::addNode(std::string name, Op op, std::vector<ValueId> inputs,
                      std::vector<ValueId> outputs, Attributes attrs) {
  NodeId id = static_cast<NodeId>(nodes_.size());
  for (ValueId in : inputs) {
    if (in == kNone) continue;
    TBP_CHECK(in < values_.size());
    values_[in].users.push_back(id);
  }
  for (ValueId out : outputs) {
    TBP_CHECK(out < values_.size());
    TBP_CHECK(values_[out].kind == ValueKind::Activation && values_[out].producer == kNone);
    values_[out].producer = id;
  }
  nodes_.push_back(Node{std::move(name), op, std::move(inputs), std::move(outputs), std::move(attrs), std::nullopt});
  return id;
}

void Graph::setKind(ValueId id, ValueKind kind) {
  Value& v = values_[id];
  TBP_CHECK((v.kind == ValueKind::Parameter || v.kind == ValueKind::Constant) &&
            (kind == ValueKind::Parameter || kind == ValueKind::Constant));
  v.kind = kind;
}

std::vector<ValueId> Graph::inputs() const {
  std::vector<ValueId> out;
  for (ValueId i = 0; i < values_.size(); ++i)
    if (values_[i].kind == ValueKind::Input) out.push_back(i);
  return out;
}

std::optional<ValueId> Graph::findValue(const std::string& name) const {
  auto it = byName_.find(name);
  if (it == byName_.end()) return std::nullopt;
  return it->second;
}

uint64_t Graph::bytesOfKind(ValueKind kind) const {
  uint64_t total = 0;
  for (const Value& v : values_)
    if (v.kind == kind) total = checkedAdd(total, v.bytes).value_or(UINT64_MAX);
  return total;
}

} // namespace tbp::ir
