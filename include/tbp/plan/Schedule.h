#pragma once
/// \file
/// The instruction stream of DESIGN.md §4 (the Rotor vocabulary).

#include "tbp/support/Status.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tbp::plan {

/// What an instruction does.
enum class InstrKind : uint8_t {
  ForwardCheckpoint, ///< `F_ck k`: forward stage k without autograd, keep F_k as a checkpoint
  ForwardNone,       ///< `F_n k`: forward stage k without autograd, keep nothing new
  ForwardAll,        ///< `F_all k`: forward stage k with autograd, keep its tape
  Loss,              ///< `Loss`: seed the adjoint of the loss; the backward sweep starts
  Backward,          ///< `B k`: backward of stage k; frees its tape and its checkpoint
};

/// One instruction; `stage` is 1-based and 0 for Loss.
struct Instruction {
  InstrKind kind;
  uint32_t stage = 0;
  /// On a forward (`F_n 3 cache`): also keep the stage's cacheable outputs (Stage::cacheable)
  /// until B k; while they are held, forwards of the stage take them instead of recomputing.
  bool cache = false;

  bool operator==(const Instruction& o) const { return kind == o.kind && stage == o.stage && cache == o.cache; }
  bool operator!=(const Instruction& o) const { return !(*this == o); }
  /// True for the three forward kinds.
  bool isForward() const { return kind == InstrKind::ForwardCheckpoint || kind == InstrKind::ForwardNone || kind == InstrKind::ForwardAll; }
};

/// An instruction stream.
using Stream = std::vector<Instruction>;

/// Formats `F_ck 3`, `F_n 4`, `F_all 5`, `Loss`, `B 5`; a forward that caches ends in ` cache`.
std::string formatInstruction(const Instruction& instr);
/// Parses the formatted form; BadInput naming the text when it does not parse.
Expected<Instruction> parseInstruction(std::string_view text);

/// Shorthands for building streams.
inline Instruction fck(uint32_t k) { return {InstrKind::ForwardCheckpoint, k}; }
inline Instruction fn(uint32_t k) { return {InstrKind::ForwardNone, k}; }
inline Instruction fall(uint32_t k) { return {InstrKind::ForwardAll, k}; }
inline Instruction loss() { return {InstrKind::Loss, 0}; }
inline Instruction bwd(uint32_t k) { return {InstrKind::Backward, k}; }

} // namespace tbp::plan
