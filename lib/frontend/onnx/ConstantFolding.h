#pragma once
// Private to the ONNX frontend: folds integer shape computations into initializers.

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <vector>

namespace tbp::frontend {

/// The shape of a tensor type when every dimension is known (after shape inference);
/// nullopt for a non-tensor type, an unknown rank or a symbolic dimension.
inline std::optional<std::vector<int64_t>> staticShape(const onnx::TypeProto& type) {
  if (!type.has_tensor_type() || !type.tensor_type().has_shape()) return std::nullopt;
  std::vector<int64_t> dims;
  for (const auto& d : type.tensor_type().shape().dim()) {
    if (!d.has_dim_value()) return std::nullopt;
    dims.push_back(d.dim_value());
  }
  return dims;
}

/// Thrown by foldIntegerConstants when a node that folds is invalid on its constant inputs
/// (an integer division by zero, a Reshape that changes the element count, an index out of
/// range, ...). The message names the node and what is wrong; the importer reports it as bad
/// input.
class FoldError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Evaluates nodes whose inputs are all known integer or boolean tensors (initializers,
/// Constant nodes, Shape of a value whose shape is inferred) and that compute integer or boolean
/// results (Shape, Gather, Concat, Unsqueeze, Slice, Range, arithmetic, comparisons, ...),
/// replacing each by an initializer. Exported models carry such subgraphs when they have
/// symbolic dimensions; once the dimensions are bound they are constants, and folding them lets
/// ONNX shape inference find every shape. Returns the number of nodes folded. Requires types
/// from a previous shape-inference pass in graph.value_info/input/output.
/// Throws FoldError when a node that folds is invalid on its constants.
int foldIntegerConstants(onnx::GraphProto& graph);

/// The values of an integer or boolean tensor stored in the model (not external data, at most
/// 4M elements); nullopt otherwise.
std::optional<std::vector<int64_t>> integerValues(const onnx::TensorProto& tensor);

} // namespace tbp::frontend

namespace tbp::frontend {

/// Fills shapes that ONNX 1.12's shape inference leaves unknown although the inputs are known:
/// Einsum outputs (computed from the equation) and the statistics outputs of training-mode
/// BatchNormalization before opset 14 (shape of the scale). Writes them into graph.value_info
/// and returns how many values it completed.
int completeMissingShapes(onnx::GraphProto& graph);

} // namespace tbp::frontend
