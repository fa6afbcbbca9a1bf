#pragma once
// Private to the runtime: the kernel table, keyed by the IR op vocabulary.

#include "tbp/ir/Graph.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <array>
#include <vector>

namespace tbp::runtime {

/// What a kernel may need beyond its inputs.
struct KernelContext {
  /// Random source of stochastic ops (Dropout). The executor restores its state before a
  /// stage is recomputed, so replays draw the same masks (DESIGN.md §4).
  at::Generator* generator = nullptr;
  /// True on the first forward of the node in this step: op state (BatchNorm running
  /// statistics) changes only then.
  bool firstForward = true;
  /// The step's tensors by value id, for ops that update state held in a value (running stats).
  std::vector<at::Tensor>* values = nullptr;
  /// Where the step runs: kernels that make tensors from nothing (Range, ConstantOfShape)
  /// place them here.
  at::Device device = at::kCPU;
  /// Batch statistics (mean, biased variance) of the step's training BatchNorms by node id,
  /// kept from a node's first forward so that its replays normalize with them: one pass over
  /// x instead of three, and the same output bit for bit. Null: none are kept (a stage that
  /// is never replayed), every forward computes its own.
  std::vector<std::array<at::Tensor, 2>>* batchStats = nullptr;
  /// The node being run (index into batchStats).
  ir::NodeId node = 0;
};

/// Computes a node's outputs from its inputs (absent optional inputs are undefined tensors).
/// Kernels follow the ONNX semantics of the op at the opsets tbp imports (7-17), reading
/// whichever form the node carries (attribute before an opset, constant input after it), and
/// return tensors of the IR's output dtypes.
using Kernel = std::vector<at::Tensor> (*)(const KernelContext& context, const ir::Graph& graph,
                                           const ir::Node& node, const std::vector<at::Tensor>& inputs);

/// The kernel of `op`, or nullptr when the runtime has none (NonZero: its output shape
/// depends on the data, which the IR's static shapes cannot express).
Kernel kernelFor(ir::Op op);

/// Replays a contraction (Conv, MatMul, Gemm: plan::Stage::cacheable) whose output `kept` was
/// kept from the stage's first forward: nothing is recomputed. When autograd records (grad mode
/// on, an operand requiring a gradient), the result carries a backward node that computes the
/// operands' gradients from the operands it saves, as the op's own backward would, so a stage
/// replayed with autograd runs only its cheap ops again.
std::vector<at::Tensor> replayKept(const KernelContext& context, const ir::Graph& graph, const ir::Node& node,
                                   const std::vector<at::Tensor>& inputs, const at::Tensor& kept);

/// The ATen element type that holds values of `dtype`. LibTorch has no u16/u32/u64 tensors:
/// those are held as int64.
at::ScalarType torchDType(ir::DType dtype);

} // namespace tbp::runtime
