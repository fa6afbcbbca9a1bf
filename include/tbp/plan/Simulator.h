#pragma once
/// \file
/// The memory simulator: the single source of truth for the predicted peak and the recompute
/// cost of an instruction stream (DESIGN.md §4).
///
/// It tracks every tensor once, however many holders share it: the current forward state
/// (the frontier the last forward produced), checkpoints (F_k held by `F_ck k` until `B k`),
/// tapes (saved tensors of `F_all k` until `B k`) and adjoints. Memory at an instruction is
/// resident + parameter gradients made so far + held tensors + live adjoints + the
/// instruction's transient working set.

#include "tbp/plan/Schedule.h"
#include "tbp/plan/StageModel.h"

#include <vector>

namespace tbp::plan {

/// What a simulation found.
struct SimResult {
  uint64_t peakBytes = 0;           ///< predicted peak of the whole step
  size_t peakInstruction = 0;       ///< index of the instruction where it occurs
  uint64_t forwardFlops = 0;        ///< forward FLOPs executed (recomputation included)
  uint64_t forwardCost = 0;         ///< planner cost executed (estimatedCost, or measured ns)
  double recomputeRatio = 1.0;      ///< forwardFlops / forward FLOPs of one pass
  std::vector<uint64_t> timeline;   ///< peak bytes during each instruction
  size_t checkpointsMax = 0;        ///< most checkpoints held at once
};

/// Step-by-step simulation, for the simulator itself and for exhaustive searches.
class SimState {
public:
  /// A state before the first instruction.
  explicit SimState(const StageModel& model);

  /// Stages the stream forwards more than once (replayedStages): each of them keeps its
  /// replay state (Stage::replayStateBytes: generator state, BatchNorm batch statistics) from
  /// its first forward to the end. Without this call no stage counts as replayed.
  void setReplayed(std::vector<bool> replayed) { replayed_ = std::move(replayed); }

  /// Applies one instruction; on an invalid one returns BadInput saying why and leaves the state
  /// unusable. `peakDuring` receives the memory while it runs. `elide`: an `F_all k` that
  /// elides the stage's `elidable` ops (elidesForward; ignored where that rule does not hold
  /// for this state: a `cache` forward, or the stage's cache held).
  Status apply(const Instruction& instr, uint64_t& peakDuring, bool elide = false);
  /// Bytes held now (resident included), between instructions.
  uint64_t heldBytes() const;
  /// True when every stage has been backwarded.
  bool finished() const { return nextBackward_ == 0 && lossDone_; }
  /// Next stage to backward (L down to 1; 0 when done).
  size_t nextBackward() const { return nextBackward_; }
  /// Whether stage k's tape / checkpoint is held.
  bool hasTape(size_t k) const { return tape_[k]; }
  bool hasCheckpoint(size_t k) const { return checkpoint_[k]; }
  /// Whether stage k's cacheable outputs are held (a forward marked `cache` ran, B k did not).
  bool hasCache(size_t k) const { return cache_[k]; }
  /// The stage whose input frontier is the current state (0: none).
  size_t current() const { return current_; }
  bool lossDone() const { return lossDone_; }
  /// Checkpoints held now.
  size_t checkpoints() const { return checkpoints_; }

private:
  void acquire(const std::vector<ir::ValueId>& values);
  void release(const std::vector<ir::ValueId>& values);
  uint64_t tapeExtra(size_t k) const;
  void acquireExtra(size_t k);
  void releaseExtra(size_t k);
  /// Adjoints of one gradient group share a buffer (StageModel::gradGroup): counted once.
  ir::ValueId groupOf(ir::ValueId v) const;
  void addAdjoint(ir::ValueId v);
  void dropAdjoint(ir::ValueId v);
  bool available(ir::ValueId v) const;

  const StageModel* model_;
  std::vector<uint32_t> refs_;   ///< holders per value
  std::vector<uint32_t> bufferRefs_; ///< held values per buffer (StageModel::storageOf)
  std::vector<bool> adjoint_;    ///< live gradient per value
  std::vector<uint32_t> groupRefs_; ///< live adjoints per gradient group
  uint64_t liveBytes_ = 0;
  uint64_t adjointBytes_ = 0;
  uint64_t extraBytes_ = 0;
  uint64_t gradientBytes_ = 0;   ///< parameter gradients made so far
  std::vector<bool> tape_, checkpoint_, backwarded_, cache_, replayed_, stateHeld_;
  uint64_t stateBytes_ = 0;      ///< replay state kept (Stage::replayStateBytes)
  size_t current_ = 0;           ///< F_current_ is held as the current state (0: none)
  size_t nextBackward_;
  size_t checkpoints_ = 0;
  bool lossDone_ = false;
};

/// Whether instruction `i` of `stream` is a forward that elides stage k's `elidable` ops:
/// `F_all k` (not marked `cache`) directly followed by `B k`, with stage k's cache not held
/// (`cacheHeld`, the caller's state before the instruction) and something to elide. Such a
/// forward is always a replay: B k needs every later stage backwarded, so stage k ran before.
/// The simulator and the runtime both decide by this rule.
bool elidesForward(const StageModel& model, const Stream& stream, size_t i, bool cacheHeld);

/// Per stage (1..L): whether `stream` forwards it more than once.
std::vector<bool> replayedStages(const StageModel& model, const Stream& stream);

/// Simulates `stream` on `model`. Fails (BadInput) naming the first bad instruction:
/// `instruction 7 (F_n 4): ...`. `elide`: forwards right before their backward elide
/// (elidesForward), as the runtime runs them; false gives the figures tbp recorded in schedule
/// files before that rule (2026-12-05), which validation accepts as such.
Expected<SimResult> simulate(const StageModel& model, const Stream& stream, bool elide = true);

} // namespace tbp::plan
