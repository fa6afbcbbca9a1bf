#pragma once
/// \file
/// The IR (DESIGN.md §3): a Graph of Values and Nodes with dense integer ids.

#include "tbp/ir/Op.h"
#include "tbp/ir/Types.h"
#include "tbp/support/Status.h"

#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace tbp::ir {

/// Dense id of a value in its graph.
using ValueId = uint32_t;
/// Dense id of a node in its graph.
using NodeId = uint32_t;
/// Marks an absent optional input, or "no producer".
inline constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();

/// What a value is.
enum class ValueKind : uint8_t {
  Input,      ///< graph input (data fed each step)
  Parameter,  ///< trainable weight: always resident, gets a gradient
  Constant,   ///< frozen weight or constant tensor: always resident, no gradient
  Activation, ///< produced by a node
};

/// The text-format name of a kind (`input`, `param`, `const`, `act`).
const char* valueKindName(ValueKind kind);

/// Raw little-endian element data of a parameter or constant.
using TensorData = std::shared_ptr<const std::string>;

/// A tensor in the graph.
struct Value {
  std::string name;          ///< unique within the graph
  ValueKind kind;            ///< input, parameter, constant or activation
  TensorType type;           ///< dtype and concrete shape
  uint64_t bytes = 0;        ///< checked byte size of `type`
  NodeId producer = kNone;   ///< producing node (activations only)
  std::vector<NodeId> users; ///< consuming nodes, in node order, one entry per use
  TensorData data;           ///< element data of parameters/constants when known
};

/// An attribute value.
using AttrValue = std::variant<int64_t, double, std::string, std::vector<int64_t>,
                               std::vector<double>, std::vector<std::string>>;
/// Attributes by name; std::map keeps iteration (and so every dump) deterministic.
using Attributes = std::map<std::string, AttrValue>;

/// A node's kernel temporaries measured on the device that runs it (`runtime::profileScratch`),
/// each direction alone. ir::forwardScratchBytes / ir::backwardScratchBytes take the larger of
/// this and their static rules (measured inside whole steps with LibTorch 1.13's CPU kernels,
/// where some backwards allocate more than alone). Not part of the text IR or the fingerprint.
struct MeasuredScratch {
  uint64_t forward = 0;  ///< beyond the outputs, while the forward kernel runs
  uint64_t backward = 0; ///< beyond the input gradients it makes, while its backward runs
};

/// An operation.
struct Node {
  std::string name;             ///< the model's node name (may be empty)
  Op op;                        ///< op from the vocabulary
  std::vector<ValueId> inputs;  ///< input values; kNone for an absent optional input
  std::vector<ValueId> outputs; ///< output values (each produced by this node only)
  Attributes attrs;             ///< attributes
  std::optional<MeasuredScratch> scratch; ///< measured kernel temporaries, when calibrated

  /// The integer attribute `key`, or `fallback`.
  int64_t attrInt(const std::string& key, int64_t fallback) const;
  /// The float attribute `key`, or `fallback`.
  double attrFloat(const std::string& key, double fallback) const;
  /// The integer-list attribute `key`, or `fallback`.
  std::vector<int64_t> attrInts(const std::string& key, std::vector<int64_t> fallback = {}) const;
  /// The string attribute `key`, or `fallback`.
  std::string attrString(const std::string& key, std::string fallback = {}) const;
};

/// A forward graph. Values and nodes are stored in creation order; ids are indices.
class Graph {
public:
  /// An empty graph named `name`.
  explicit Graph(std::string name = "graph") : name_(std::move(name)) {}

  /// The graph's name.
  const std::string& name() const { return name_; }
  void setName(std::string name) { name_ = std::move(name); }

  /// Adds a value. Fails (BadInput) on a duplicate name, a negative dimension or a byte size
  /// that overflows 64 bits; the message names the value.
  Expected<ValueId> addValue(std::string name, ValueKind kind, TensorType type,
                             TensorData data = nullptr);
  /// Adds a node; its outputs must be activations without a producer yet (checked).
  NodeId addNode(std::string name, Op op, std::vector<ValueId> inputs,
                 std::vector<ValueId> outputs, Attributes attrs = {});
  /// Marks a value as a graph output.
  void addOutput(ValueId id) { outputs_.push_back(id); }
  /// Replaces the graph outputs.
  void setOutputs(std::vector<ValueId> outputs) { outputs_ = std::move(outputs); }
  /// Changes the kind of a parameter or constant (freezing); never of inputs/activations.
  void setKind(ValueId id, ValueKind kind);

  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const Value& value(ValueId id) const { return values_[id]; }
  const Node& node(NodeId id) const { return nodes_[id]; }
  /// Records the kernel temporaries measured for node `id` on a device (Node::scratch).
  void setMeasuredScratch(NodeId id, std::optional<MeasuredScratch> scratch) { nodes_[id].scratch = scratch; }
  size_t numValues() const { return values_.size(); }
  size_t numNodes() const { return nodes_.size(); }
  /// Graph outputs in declaration order.
  const std::vector<ValueId>& outputs() const { return outputs_; }
  /// Graph inputs (kind Input) in id order.
  std::vector<ValueId> inputs() const;

  /// Looks a value up by name.
  std::optional<ValueId> findValue(const std::string& name) const;

  /// Total bytes of values of `kind`.
  uint64_t bytesOfKind(ValueKind kind) const;

private:
  std::string name_;
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<ValueId> outputs_;
  std::unordered_map<std::string, ValueId> byName_;
};

} // namespace tbp::ir
