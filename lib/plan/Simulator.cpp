#include "tbp/plan/Simulator.h"

#include "tbp/support/Bytes.h"

#include <algorithm>
#include <charconv>

namespace tbp::plan {

using ir::ValueId;

std::string formatInstruction(const Instruction& instr) {
  const std::string cache = instr.cache ? " cache" : "";
  switch (instr.kind) {
  case InstrKind::ForwardCheckpoint: return "F_ck " + std::to_string(instr.stage) + cache;
  case InstrKind::ForwardNone: return "F_n " + std::to_string(instr.stage) + cache;
  case InstrKind::ForwardAll: return "F_all " + std::to_string(instr.stage) + cache;
  case InstrKind::Loss: return "Loss";
  case InstrKind::Backward: return "B " + std::to_string(instr.stage);
  }
  return "?";
}

Expected<Instruction> parseInstruction(std::string_view text) {
  if (text == "Loss") return loss();
  struct Prefix {
    std::string_view name;
    InstrKind kind;
  };
  static constexpr Prefix kPrefixes[] = {{"F_ck ", InstrKind::ForwardCheckpoint}, {"F_n ", InstrKind::ForwardNone},
                                         {"F_all ", InstrKind::ForwardAll}, {"B ", InstrKind::Backward}};
  constexpr std::string_view kCache = " cache";
  for (const Prefix& p : kPrefixes) {
    if (text.substr(0, p.name.size()) != p.name) continue;
    std::string_view number = text.substr(p.name.size());
    const bool cache = p.kind != InstrKind::Backward && number.size() > kCache.size() &&
                       number.substr(number.size() - kCache.size()) == kCache;
    if (cache) number.remove_suffix(kCache.size());
    uint32_t stage = 0;
    auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), stage);
    if (ec != std::errc() || ptr != number.data() + number.size() || stage == 0) break;
    return Instruction{p.kind, stage, cache};
  }
  return badInput("'" + std::string(text) + "' is not an instruction (F_ck k, F_n k, F_all k, each optionally followed by 'cache'; Loss, B k)");
}

SimState::SimState(const StageModel& model)
    : model_(&model), refs_(model.valueBytes.size(), 0), bufferRefs_(model.valueBytes.size(), 0), adjoint_(model.valueBytes.size(), false),
      groupRefs_(model.valueBytes.size(), 0),
      tape_(model.size() + 2, false), checkpoint_(model.size() + 2, false), backwarded_(model.size() + 2, false),
      cache_(model.size() + 2, false), replayed_(model.size() + 2, false), stateHeld_(model.size() + 2, false),
      current_(1), nextBackward_(model.size()) {
  acquire(model.frontier(1)); // the graph inputs (and nothing else) start as the current state
}

bool SimState::available(ValueId v) const {
  return refs_[v] > 0 || model_->graph->value(v).kind != ir::ValueKind::Activation;
}

// A buffer counts while any value that shares it is held (a view and its input: once).
void SimState::acquire(const std::vector<ValueId>& values) {
  for (ValueId v : values)
    if (refs_[v]++ == 0) {
      const ValueId b = model_->storageOf[v];
      if (bufferRefs_[b]++ == 0) liveBytes_ += model_->valueBytes[b];
    }
}

void SimState::release(const std::vector<ValueId>& values) {
  for (ValueId v : values) {
    TBP_CHECK(refs_[v] > 0);
    if (--refs_[v] == 0) {
      const ValueId b = model_->storageOf[v];
      TBP_CHECK(bufferRefs_[b] > 0);
      if (--bufferRefs_[b] == 0) liveBytes_ -= model_->valueBytes[b];
    }
  }
}

ValueId SimState::groupOf(ValueId v) const {
  return v < model_->gradGroup.size() && model_->gradGroup[v] != ir::kNone ? model_->gradGroup[v] : v;
}

void SimState::addAdjoint(ValueId v) {
  adjoint_[v] = true;
  if (groupRefs_[groupOf(v)]++ == 0) adjointBytes_ += model_->valueBytes[groupOf(v)];
}

void SimState::dropAdjoint(ValueId v) {
  adjoint_[v] = false;
  if (--groupRefs_[groupOf(v)] == 0) adjointBytes_ -= model_->valueBytes[groupOf(v)];
}

// A tape recorded while the stage's replay state is held shares that state's statistics (the
// state is taken on the first forward, before any tape, and kept to the end).
uint64_t SimState::tapeExtra(size_t k) const {
  const Stage& s = model_->stage(k);
  return s.tapeExtraBytes - (stateHeld_[k] ? std::min(s.tapeExtraBytes, s.tapeSharedStateBytes) : 0);
}
void SimState::acquireExtra(size_t k) { extraBytes_ += tapeExtra(k); }
void SimState::releaseExtra(size_t k) { extraBytes_ -= tapeExtra(k); }

uint64_t SimState::heldBytes() const {
  return model_->residentBytes + gradientBytes_ + liveBytes_ + adjointBytes_ + extraBytes_ + stateBytes_;
}

Status SimState::apply(const Instruction& instr, uint64_t& peakDuring, bool elide) {
  const size_t L = model_->size();
  const size_t k = instr.stage;
  if (instr.kind != InstrKind::Loss && (k < 1 || k > L))
    return badInput("stage " + std::to_string(k) + " does not exist (the schedule has " + std::to_string(L) + " stages)");
  auto releaseCurrent = [this] {
    if (current_) release(model_->frontier(current_));
    current_ = 0;
  };

  if (instr.isForward()) {
    if (backwarded_[k]) return badInput("stage " + std::to_string(k) + " was already backwarded");
    if (instr.kind == InstrKind::ForwardAll && tape_[k]) return badInput("the tape of stage " + std::to_string(k) + " is already held");
    if (instr.kind == InstrKind::ForwardCheckpoint && checkpoint_[k])
      return badInput("stage " + std::to_string(k) + " is already checkpointed");
    const Stage& s = model_->stage(k);
    if (instr.cache && cache_[k]) return badInput("the cache of stage " + std::to_string(k) + " is already held");
    if (instr.cache && s.cacheable.empty())
      return badInput("stage " + std::to_string(k) + " has no cacheable outputs (Conv, MatMul, Gemm) to cache");
    // The input is held when it is the current state or a checkpoint; otherwise every tensor
    // must be held by something (a tape, say).
    if (current_ != k && !checkpoint_[k])
      for (ValueId v : model_->frontier(k))
        if (!available(v))
          return badInput("input '" + model_->graph->value(v).name + "' of stage " + std::to_string(k) +
                          " is not held: no checkpoint, tape or current state has it");
    for (ValueId v : s.born)
      if (refs_[v] > 0 && !(cache_[k] && std::binary_search(s.cacheable.begin(), s.cacheable.end(), v)))
        return badInput("output '" + model_->graph->value(v).name + "' of stage " + std::to_string(k) +
                        " is still held; recomputing it would keep two copies");
    // A buffer the stage makes anew while a view of its last copy is still held: two copies,
    // which the buffer count would miss.
    for (ValueId v : s.produced)
      if (model_->storageOf[v] == v && refs_[v] == 0 && bufferRefs_[v] > 0)
        return badInput("output '" + model_->graph->value(v).name + "' of stage " + std::to_string(k) +
                        " is still held through a view of it; recomputing it would keep two copies");
    const bool fromCurrent = current_ == k;
    if (!fromCurrent) {
      // Hold the input frontier while the stage runs, whatever held it before.
      acquire(model_->frontier(k));
      releaseCurrent();
    }
    // A stage that will be replayed keeps its generator state and its BatchNorms' batch
    // statistics from its first forward on.
    if (s.replayStateBytes > 0 && k < replayed_.size() && replayed_[k] && !stateHeld_[k]) {
      stateHeld_[k] = true;
      stateBytes_ += s.replayStateBytes;
    }
    const bool all = instr.kind == InstrKind::ForwardAll;
    uint64_t transient = instr.cache ? (all ? s.forwardAllCacheTransientBytes : s.forwardCacheTransientBytes)
                                     : (all ? s.forwardAllTransientBytes : s.forwardTransientBytes);
    // The elided ops' outputs are never made: what the stage adds to the state below is
    // released again by the B k that follows, before its own peak.
    if (elide && all && !instr.cache && !cache_[k]) transient = s.forwardAllElidedTransientBytes;
    peakDuring = heldBytes() + transient;
    if (instr.kind == InstrKind::ForwardCheckpoint) {
      acquire(model_->frontier(k));
      checkpoint_[k] = true;
      ++checkpoints_;
    }
    if (instr.kind == InstrKind::ForwardAll) {
      acquire(s.tape);
      acquireExtra(k);
      tape_[k] = true;
    }
    if (instr.cache) {
      acquire(s.cacheable);
      cache_[k] = true;
    }
    // The state moves from F_k to F_{k+1}: add what the stage made, drop what it consumed.
    acquire(s.born);
    release(s.dying);
    current_ = k + 1;
    return Status::ok();
  }

  if (instr.kind == InstrKind::Loss) {
    if (lossDone_) return badInput("the loss was already seeded");
    if (!tape_[L]) return badInput("Loss needs the tape of the last stage " + std::to_string(L) + " (run F_all " + std::to_string(L) + " first)");
    if (current_ != L + 1) return badInput("Loss needs the output of stage " + std::to_string(L) + " as the current state");
    releaseCurrent();
    for (ValueId v : model_->outputFrontier)
      if (model_->requiresGrad[v] && !adjoint_[v]) addAdjoint(v);
    lossDone_ = true;
    peakDuring = heldBytes();
    return Status::ok();
  }

  // Backward.
  if (!lossDone_) return badInput("B " + std::to_string(k) + " comes before Loss");
  if (k != nextBackward_)
    return badInput("stages are backwarded from the last to the first; stage " + std::to_string(nextBackward_) + " is next");
  if (!tape_[k]) return badInput("B " + std::to_string(k) + " needs the tape of stage " + std::to_string(k) + " (run F_all " + std::to_string(k) + " first)");
  const Stage& s = model_->stage(k);
  releaseCurrent();
  // The backward reads the operands its tape saved, not the kept outputs: the cache goes first.
  if (cache_[k]) {
    release(s.cacheable);
    cache_[k] = false;
  }
  gradientBytes_ += s.gradientBytes; // made during the backward, kept to the end
  peakDuring = heldBytes() + s.backwardTransientBytes;
  for (ValueId v : s.produced)
    if (adjoint_[v]) dropAdjoint(v);
  for (ValueId v : s.newAdjoints)
    if (!adjoint_[v]) addAdjoint(v);
  release(s.tape);
  releaseExtra(k);
  tape_[k] = false;
  if (checkpoint_[k]) {
    release(model_->frontier(k));
    checkpoint_[k] = false;
    --checkpoints_;
  }
  backwarded_[k] = true;
  --nextBackward_;
  return Status::ok();
}

bool elidesForward(const StageModel& model, const Stream& stream, size_t i, bool cacheHeld) {
  if (i + 1 >= stream.size() || cacheHeld) return false;
  const Instruction& f = stream[i];
  const Instruction& b = stream[i + 1];
  return f.kind == InstrKind::ForwardAll && !f.cache && b.kind == InstrKind::Backward && b.stage == f.stage && f.stage >= 1 &&
         f.stage <= model.size() && !model.stage(f.stage).elidable.empty();
}

std::vector<bool> replayedStages(const StageModel& model, const Stream& stream) {
  std::vector<uint32_t> forwards(model.size() + 2, 0);
  for (const Instruction& instr : stream)
    if (instr.isForward() && instr.stage < forwards.size()) ++forwards[instr.stage];
  std::vector<bool> replayed(model.size() + 2, false);
  for (size_t k = 0; k < forwards.size(); ++k) replayed[k] = forwards[k] > 1;
  return replayed;
}

Expected<SimResult> simulate(const StageModel& model, const Stream& stream, bool elideForwards) {
  SimResult r;
  SimState state(model);
  state.setReplayed(replayedStages(model, stream));
  r.timeline.reserve(stream.size());
  uint64_t peak = state.heldBytes();
  for (size_t i = 0; i < stream.size(); ++i) {
    const Instruction& instr = stream[i];
    uint64_t during = 0;
    // A forward of a stage whose cache is held skips the cached contractions; one right before
    // the stage's backward skips the contractions whose outputs only leave the stage.
    const bool inRange = instr.stage >= 1 && instr.stage <= model.size();
    const bool replay = instr.isForward() && inRange && state.hasCache(instr.stage);
    const bool elide = elideForwards && inRange && elidesForward(model, stream, i, state.hasCache(instr.stage));
    Status s = state.apply(instr, during, elide);
    if (!s) return s.withContext("instruction " + std::to_string(i + 1) + " (" + formatInstruction(instr) + ")");
    if (instr.isForward()) {
      const Stage& st = model.stage(instr.stage);
      r.forwardFlops = checkedAdd(r.forwardFlops, replay ? st.replayFlops : elide ? st.forwardFlops - st.elidableFlops : st.forwardFlops)
                           .value_or(UINT64_MAX);
      r.forwardCost = checkedAdd(r.forwardCost, replay ? st.replayCost : elide ? st.cost - st.elidableCost : st.cost).value_or(UINT64_MAX);
    }
    r.checkpointsMax = std::max(r.checkpointsMax, state.checkpoints());
    r.timeline.push_back(during);
    if (during > peak) {
      peak = during;
      r.peakInstruction = i;
    }
  }
  if (!state.finished()) {
    if (!state.lossDone()) return badInput("the stream ends before Loss: the backward sweep never starts");
    return badInput("the stream ends before stage " + std::to_string(state.nextBackward()) + " is backwarded");
  }
  // The optimizer update runs after the last instruction, over the resident state alone.
  uint64_t update = state.heldBytes() + model.finalTransientBytes;
  if (update > peak) {
    peak = update;
    r.peakInstruction = stream.size() - 1;
  }
  r.peakBytes = peak;
  r.recomputeRatio = model.onePassFlops ? static_cast<double>(r.forwardFlops) / static_cast<double>(model.onePassFlops)
                                        : static_cast<double>(r.forwardCost) / static_cast<double>(std::max<uint64_t>(model.onePassCost, 1));
  return r;
}

} // namespace tbp::plan
