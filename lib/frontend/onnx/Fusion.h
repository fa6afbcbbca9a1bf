#pragma once
// Private to the ONNX frontend: rewrites of exported op patterns before the graph is built.

#include <onnx/onnx_pb.h>

namespace tbp::frontend {

/// Domain of the nodes the fusion passes write: buildGraph maps them to tbp ops by op_type.
/// No ONNX model can use it: checkOps rejects every domain but the default one.
inline constexpr const char* kFusedDomain = "tbp.fused";

/// Turns each Dropout that passes its input through into an Identity (which elideIdentities
/// then removes): one not in training mode (no training_mode input, as in every export before
/// opset 12 and every inference export, or a constant false one) or with a constant ratio of
/// 0 (a training export with p=0), whose mask output nobody reads. The runtime computes such a
/// Dropout as the identity anyway; as a Dropout it would be planned with a mask, a random
/// state and backward scratch it never has. Returns the number of Dropouts turned.
int elideInertDropouts(onnx::GraphProto& graph);

/// Replaces each expanded GELU by one `tbp.fused` Gelu node with attribute `approximate`:
///  - "none": 0.5·x·(1 + erf(x/√2)), as torch.onnx exports nn.GELU() (x/√2 may be x·(1/√2));
///  - "tanh": 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as torch.onnx exports
///    nn.GELU(approximate="tanh") and as Hugging Face's gelu_new writes it (x³ as Pow(x, 3)
///    with the exponent exactly 3, x·(x·x) or (x·x)·x).
/// The factors 0.5, x and (1 + …) may be multiplied in any grouping and order; constants are
/// float or double scalars (initializers or Constant nodes) within 1e-5 of the exact value. A
/// pattern is fused only when each of its intermediate values has no other consumer and is not
/// a graph output, and only when x and the output have the same inferred type (constants
/// that broadcast x to another shape do not match), so the rewrite never changes what the
/// graph computes beyond rounding; scalar initializers of a fused pattern stop being read
/// (and so stop being trainable parameters).
/// The fused node takes the place of the pattern's last node (the order stays topological);
/// Constant nodes only the pattern read are removed. Precondition: shape inference has run
/// (the output keeps its value_info). Returns the number of GELUs fused.
int fuseGelu(onnx::GraphProto& graph);

/// Replaces each x · sigmoid(x) (a Sigmoid whose only reader is a Mul by the Sigmoid's own
/// input, either way round: torch.onnx's nn.SiLU) by one `tbp.fused` Silu node. Silu keeps x
/// for its backward where the pair kept x and sigmoid(x), and runs as one kernel. Same
/// conditions and placement as fuseGelu. Returns the number of SiLUs fused.
int fuseSilu(onnx::GraphProto& graph);

/// Replaces each GroupNorm as torch.onnx writes it before opset 18 (Reshape to [N, G, -1],
/// InstanceNormalization with scale 1 and bias 0, Reshape back, Mul by a per-channel scale,
/// Add a per-channel bias; the Shape(x) that feeds the second Reshape goes too) by one
/// `tbp.fused` GroupNorm(x, scale, bias) with attributes num_groups and epsilon, named after
/// the InstanceNormalization with the last path component `GroupNorm`. It keeps x and two
/// statistics per group for the backward where the chain kept x and the normalized map, and
/// runs as ATen's group_norm. Returns the number fused.
int fuseGroupNorm(onnx::GraphProto& graph);

} // namespace tbp::frontend
