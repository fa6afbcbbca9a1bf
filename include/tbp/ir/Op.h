#pragma once
/// \file
/// The op vocabulary (generated from Ops.def) and the per-op rules declared beside it.

#include <cstdint>
#include <optional>
#include <string_view>

namespace tbp::ir {

/// One tbp op. The enumerators come from Ops.def in declaration order.
enum class Op : uint16_t {
#define TBP_OP(id, ...) id,
#include "tbp/ir/Ops.def"
#undef TBP_OP
};

/// Number of ops in the vocabulary.
inline constexpr size_t kNumOps = 0
#define TBP_OP(id, ...) +1
#include "tbp/ir/Ops.def"
#undef TBP_OP
    ;

/// How an op's forward FLOPs are estimated.
enum class FlopRule : uint8_t {
  Zero,          ///< views, copies and shape computations: no arithmetic
  OutElem,       ///< perElem FLOPs per output element (all outputs)
  InElem,        ///< perElem FLOPs per element of input 0
  MatMul,        ///< 2·M·N·K per batch element, with numpy-style batch broadcasting
  Gemm,          ///< 2·M·N·K plus M·N for the bias
  Conv,          ///< 2 · output elements · (input channels / group) · kernel volume
  ConvTranspose, ///< 2 · input elements · (output channels / group) · kernel volume
  Einsum,        ///< 2 · product of the sizes of all distinct equation letters
  Pool,          ///< perElem FLOPs per output element per kernel window element
};

/// Saved state beyond whole inputs and outputs that an op's backward needs.
enum class ExtraSaved : uint8_t {
  None,          ///< nothing
  Mask,          ///< one byte per output element (Dropout's keep mask)
  MaxIndices,    ///< one int64 index per output element (MaxPool's argmax)
  BatchStats,    ///< two f32 per channel (axis 1): saved mean and inverse std
  RowStats,      ///< two f32 per normalized row (LayerNorm's mean and inverse std)
  InstanceStats, ///< two f32 per (batch, channel) pair
  GroupStats,    ///< two f32 per (batch, group) pair (GroupNorm's `num_groups`)
};

/// The static rules of one op.
struct OpInfo {
  const char* name;       ///< text-format and display name
  FlopRule flops;         ///< FLOP rule
  uint32_t flopsPerElem;  ///< multiplier for element-wise, reduction and pooling rules
  uint32_t savedInputs;   ///< bit i: input i is saved for backward
  uint32_t savedOutputs;  ///< bit j: output j is saved for backward
  ExtraSaved extra;       ///< extra saved state
  uint32_t noGradInputs;  ///< bit i: input i receives no gradient
  uint32_t crossInputs;   ///< bit i: saved input i only serves the other inputs' gradients
  uint32_t backwardScratchHalves; ///< backward temporaries, in halves of output 0's bytes
  uint32_t minInputs;     ///< inputs a node must have (all present)
  uint32_t maxInputs;     ///< inputs a node may have, absent optional ones counted
};

/// The rules of `op`.
const OpInfo& opInfo(Op op);
/// The name of `op`.
inline const char* opName(Op op) { return opInfo(op).name; }
/// Looks an op up by its name; nullopt when tbp has no such op.
std::optional<Op> opFromName(std::string_view name);

} // namespace tbp::ir
