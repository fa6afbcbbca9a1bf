// The training step under a schedule, with LibTorch. Stage boundaries are detached: F_all k
// runs stage k from leaves that stand for F_k, so autograd's graph (the tape) ends at the stage;
// B k backpropagates the adjoints of F_{k+1} through it and reads the adjoints of F_k off the
// leaves. Memory is measured by a counting wrapper around LibTorch's CPU allocator, or on CUDA
// by the caching allocator's statistics (builds against a LibTorch with CUDA only).

#include "tbp/runtime/Runtime.h"

#include "Kernels.h"

#include "tbp/analysis/Memory.h"
#include "tbp/ir/OpRules.h"
#include "tbp/ir/Verify.h"
#include "tbp/plan/Planners.h"
#include "tbp/support/Bytes.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/CPUAllocator.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/version.h>

#ifdef TBP_TORCH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <sys/resource.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

namespace tbp::runtime {

namespace {

using ir::ValueId;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------------ counting allocator

// LibTorch 2.3 made Allocator::allocate non-const and added copy_data.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define TBP_ALLOCATE_CONST
#define TBP_ALLOCATOR_COPY_DATA 1
#else
#define TBP_ALLOCATE_CONST const
#endif

/// Wraps LibTorch's CPU allocator and counts live and peak bytes of every tensor buffer.
class CountingAllocator final : public c10::Allocator {
public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}

#ifdef TBP_ALLOCATOR_COPY_DATA
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#endif

  // The context is the data pointer itself, so raw_allocate (oneDNN's scratch buffers) works.
  c10::DataPtr allocate(size_t n) TBP_ALLOCATE_CONST override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    c10::Device device = inner.device();
    if (!data) return inner;
    {
      std::lock_guard<std::mutex> lock(mutex());
      blocks()[data] = Block{std::move(inner), n};
    }
    uint64_t now = live_.fetch_add(n) + n;
    uint64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {}
    return c10::DataPtr(data, data, &release, device);
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  uint64_t live() const { return live_.load(); }
  uint64_t peak() const { return peak_.load(); }
  void resetPeak() { peak_.store(live_.load()); }

  /// The process-wide instance, installed on first use. It also keeps glibc from serving
  /// large buffers with mmap (and returning them with munmap, and the top of its heap to the
  /// system below 1 GiB): a training step asks for the same sizes step after step and replay
  /// after replay, and the page faults of touching fresh pages cost resnet50 at batch 192
  /// (50 MiB activations) a third of its step on a 2-core CPU (9.4 s -> 5.7 s store-all).
  /// Freed memory stays with the process for reuse, so peak RSS is the high-water mark.
  static CountingAllocator& instance() {
    static CountingAllocator* counter = [] {
#ifdef __GLIBC__
      mallopt(M_MMAP_MAX, 0);
      mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
      auto* c = new CountingAllocator(c10::GetCPUAllocator());
      c10::SetCPUAllocator(c, /*priority=*/100);
      return c;
    }();
    return *counter;
  }

private:
  struct Block {
    c10::DataPtr inner;
    size_t bytes;
  };
  static std::mutex& mutex() { static std::mutex m; return m; }
  static std::unordered_map<void*, Block>& blocks() { static std::unordered_map<void*, Block> b; return b; }
  static void release(void* p) {
    Block b;
    {
      std::lock_guard<std::mutex> lock(mutex());
      auto it = blocks().find(p);
      if (it == blocks().end()) return;
      b = std::move(it->second);
      blocks().erase(it);
    }
    instance().live_.fetch_sub(b.bytes);
  }

  c10::Allocator* base_;
  mutable std::atomic<uint64_t> live_{0};
  mutable std::atomic<uint64_t> peak_{0};
};

// ------------------------------------------------------------------ running a node

/// A kernel output whose shape is not the one the graph declares: the graph is wrong (a
/// hand-written graph's shapes are declared, not inferred), so the run stops as on bad input.
struct ShapeContradiction : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Runs the kernel of node `context.node`. A kernel's error gets the node's name in front; an
/// output of another shape than the graph declares (which the memory model and every later op
/// rely on) throws ShapeContradiction.
std::vector<at::Tensor> runKernel(const KernelContext& context, const ir::Graph& g, const ir::Node& node,
                                  const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> outs;
  try {
    outs = kernelFor(node.op)(context, g, node, inputs);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw std::runtime_error(ir::describeNode(g, context.node) + ": " + what.substr(0, what.find('\n')));
  }
  for (size_t o = 0; o < node.outputs.size() && o < outs.size(); ++o) {
    const ir::Value& v = g.value(node.outputs[o]);
    if (outs[o].defined() && outs[o].sizes() != at::IntArrayRef(v.type.shape))
      throw ShapeContradiction(ir::describeNode(g, context.node) + ": output '" + v.name + "' is declared " + v.type.str() +
                               ", but the op makes " + ir::formatShape(outs[o].sizes().vec()) + " of its inputs");
  }
  return outs;
}

// ------------------------------------------------------------------ the memory meter

#ifdef TBP_TORCH_CUDA
#define TBP_HAS_REQUESTED_BYTES (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1))

/// Whether the allocator keeps `requested_bytes`: LibTorch 2.1+'s native caching allocator
/// does; older LibTorch and the `backend:cudaMallocAsync` allocator (which fills only
/// allocated, reserved and active bytes) do not. Decided by whether it ever counted any.
template <typename Stats>
bool countsRequested(const Stats& stats) {
#if TBP_HAS_REQUESTED_BYTES
  return stats.requested_bytes[0].allocated > 0 || stats.allocated_bytes[0].allocated == 0;
#else
  (void)stats;
  return false;
#endif
}

/// Tensor bytes as the step asked for them, as the CPU's counting allocator counts them:
/// `requested_bytes` (index 0 of a StatArray: the aggregate over pools). `allocated_bytes`, the
/// fallback, rounds every request up to 512 bytes and counts a cached block's unsplit tail (up
/// to 1 MiB) as allocated, which depends on what the cache held before, not on the schedule.
template <typename Stats>
auto tensorBytes(const Stats& stats) {
#if TBP_HAS_REQUESTED_BYTES
  if (countsRequested(stats)) return stats.requested_bytes[0];
#endif
  return stats.allocated_bytes[0];
}
#endif

/// Live and peak tensor bytes on the step's device: the counting CPU allocator, or the CUDA
/// caching allocator's statistics (tensorBytes: what tensors asked for, not what the cache
/// reserved).
class Meter {
public:
  explicit Meter(at::Device device) : device_(device) {
    if (device_.is_cpu()) CountingAllocator::instance();
#ifdef TBP_TORCH_CUDA
    // Events, waits and the statistics below act on the current device: make it this one.
    if (device_.is_cuda()) guard_.emplace(device_.index());
#endif
  }
  /// Peak tensor bytes since the last reset, less the libraries' persistent workspaces. On
  /// CUDA it also folds the allocator's own view of that peak into allocatedPeak().
  uint64_t peak() const {
#ifdef TBP_TORCH_CUDA
    if (device_.is_cuda()) {
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index());
      const uint64_t allocated = above(nonNegative(stats.allocated_bytes[0].peak), allocatedOffset_);
      allocatedMax_ = std::max(allocatedMax_, allocated);
      return above(nonNegative(tensorBytes(stats).peak), offset_);
    }
#endif
    return CountingAllocator::instance().peak();
  }
  /// Live bytes as the allocator sees them (workspaces included).
  uint64_t rawLive() const {
#ifdef TBP_TORCH_CUDA
    if (device_.is_cuda()) return nonNegative(tensorBytes(c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index())).current);
#endif
    return CountingAllocator::instance().live();
  }
  /// Bytes that cuBLAS/cuDNN keep allocated through the caching allocator for the whole run
  /// (per-handle workspaces): not tensors of the step, so not part of what a schedule controls.
  /// `resident` is what the step's own resident tensors hold; returns the workspaces' bytes.
  uint64_t setWorkspaceOffset(uint64_t resident) {
    offset_ = above(rawLive(), resident);
#ifdef TBP_TORCH_CUDA
    if (device_.is_cuda())
      allocatedOffset_ = above(nonNegative(c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index()).allocated_bytes[0].current), resident);
#endif
    return offset_;
  }
  /// CUDA: the largest peak() has seen of the caching allocator's `allocated_bytes` (tensor
  /// bytes rounded up to its 512-byte granules, plus the tails of cached blocks it hands out
  /// whole), less the workspaces and the resident tensors' rounding, since
  /// clearAllocatedPeak(). 0 on the CPU.
  uint64_t allocatedPeak() const { return allocatedMax_; }
  void clearAllocatedPeak() { allocatedMax_ = 0; }
  /// What peak() counts, for the report.
  std::string source() const {
#ifdef TBP_TORCH_CUDA
    if (device_.is_cuda())
      return countsRequested(c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index())) ? "cuda caching allocator (requested bytes)"
                                                                                             : "cuda caching allocator (allocated bytes)";
#endif
    return "counting CPU allocator";
  }
  void resetPeak() {
#ifdef TBP_TORCH_CUDA
    if (device_.is_cuda()) {
      c10::cuda::CUDACachingAllocator::resetPeakStats(device_.index());
      return;
    }
#endif
    CountingAllocator::instance().resetPeak();
  }
  /// Bytes the caching allocator reserved from the driver at its peak (CUDA only; 0 on CPU).
  uint64_t reservedPeak() const {
#ifdef TBP_TORCH_CUDA
    if (device_.is_cuda()) {
      auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_.index());
      return static_cast<uint64_t>(stats.reserved_bytes[0].peak);
    }
#endif
    return 0;
  }
  /// Waits for the device, so wall-clock phase times include the queued kernels.
  void synchronize() const {
#ifdef TBP_TORCH_CUDA
    if (device_.is_cuda()) c10::cuda::device_synchronize();
#endif
  }

private:
  static uint64_t nonNegative(int64_t v) { return v > 0 ? static_cast<uint64_t>(v) : 0; }
  static uint64_t above(uint64_t v, uint64_t base) { return v > base ? v - base : 0; }
  at::Device device_;
#ifdef TBP_TORCH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard_;
#endif
  uint64_t offset_ = 0;
  uint64_t allocatedOffset_ = 0;
  mutable uint64_t allocatedMax_ = 0;
};

/// Splits a step's time into first forwards, recomputation and backward. CPU kernels run
/// synchronously, so a host clock around each instruction measures it. On CUDA the host
/// enqueues ahead of the device, and a wait after every instruction (as tbp first did) would
/// serialize the two; instead an event is recorded after each instruction and the intervals
/// are read once, after the step's last. (On the H200's medium workloads, host-bound at
/// 13-33 ms a step, this left the step times where they were, 2026-12-04.)
class PhaseTimer {
public:
  enum Phase { Forward, Recompute, Backward, Untimed };

  explicit PhaseTimer(at::Device device) : cuda_(device.is_cuda()) {
#ifdef TBP_TORCH_CUDA
    if (cuda_) mark(Untimed);
#endif
  }
  /// Before an instruction (the host clock's start).
  void begin() { t0_ = Clock::now(); }
  /// After it: its time counts to `phase`.
  void end(Phase phase) {
#ifdef TBP_TORCH_CUDA
    if (cuda_) return mark(phase);
#endif
    add(phase, std::chrono::duration<double>(Clock::now() - t0_).count());
  }
  /// Adds the phases' seconds (waits for the device first on CUDA).
  void finish(double* fwd, double* recompute, double* bwd) {
#ifdef TBP_TORCH_CUDA
    if (cuda_ && !events_.empty()) {
      c10::cuda::device_synchronize();
      for (size_t i = 1; i < events_.size(); ++i) add(phases_[i], events_[i - 1].elapsed_time(events_[i]) / 1e3);
      events_.clear();
      phases_.clear();
    }
#endif
    *fwd += seconds_[Forward];
    *recompute += seconds_[Recompute];
    *bwd += seconds_[Backward];
  }

private:
  void add(Phase phase, double s) { seconds_[phase] += s; }
#ifdef TBP_TORCH_CUDA
  void mark(Phase phase) {
    events_.emplace_back(cudaEventDefault); // timing enabled
    events_.back().record();
    phases_.push_back(phase);
  }
  std::deque<at::cuda::CUDAEvent> events_;
  std::vector<Phase> phases_;
#endif
  bool cuda_;
  Clock::time_point t0_ = Clock::now();
  double seconds_[4] = {0, 0, 0, 0};
};

/// A generator for stochastic kernels on `device`, seeded.
at::Generator makeGenerator(at::Device device, uint64_t seed) {
#ifdef TBP_TORCH_CUDA
  if (device.is_cuda()) {
    at::Generator gen = at::cuda::detail::createCUDAGenerator(device.index());
    gen.set_current_seed(seed);
    return gen;
  }
#endif
  (void)device;
  return at::detail::createCPUGenerator(seed);
}

// ------------------------------------------------------------------ tensors for values

/// The numpy dtype string of an IR dtype.
std::string npyDescr(ir::DType d) {
  switch (d) {
  case ir::DType::F32: return "<f4";
  case ir::DType::F64: return "<f8";
  case ir::DType::F16: return "<f2";
  case ir::DType::I8: return "|i1";
  case ir::DType::I16: return "<i2";
  case ir::DType::I32: return "<i4";
  case ir::DType::I64: return "<i8";
  case ir::DType::U8: return "|u1";
  case ir::DType::U16: return "<u2";
  case ir::DType::U32: return "<u4";
  case ir::DType::U64: return "<u8";
  case ir::DType::Bool: return "|b1";
  case ir::DType::BF16: return "<V2";
  }
  return "";
}

/// Parameters, constants and inputs: from a given array or the model's data, else seeded.
Expected<at::Tensor> materializeOnHost(const ir::Graph& g, ValueId id, at::Generator& gen,
                                       const std::map<std::string, NpyArray>& given) {
  const ir::Value& v = g.value(id);
  std::vector<int64_t> shape(v.type.shape.begin(), v.type.shape.end());
  at::TensorOptions opts = at::TensorOptions().dtype(torchDType(v.type.dtype));
  // Integer inputs that index something: labels for cross entropy lie in [0, classes); indices
  // into a table (token ids into an embedding) cover the whole table.
  int64_t high = 0;
  bool labels = false;
  for (ir::NodeId user : v.users) {
    const ir::Node& n = g.node(user);
    if (n.op == ir::Op::CrossEntropyLoss && n.inputs.size() > 1 && n.inputs[1] == id) {
      high = std::max<int64_t>(g.value(n.inputs[0]).type.shape.back(), 1);
      labels = true;
    }
    if (n.op == ir::Op::Gather && n.inputs.size() > 1 && n.inputs[1] == id) {
      const ir::Shape& table = g.value(n.inputs[0]).type.shape;
      const int64_t rank = static_cast<int64_t>(table.size());
      int64_t axis = n.attrInt("axis", 0);
      if (axis < 0) axis += rank;
      if (axis >= 0 && axis < rank) high = std::max<int64_t>(table[static_cast<size_t>(axis)], 1);
    }
  }
  auto it = given.find(v.name);
  if (it != given.end()) {
    const NpyArray& a = it->second;
    if (a.descr != npyDescr(v.type.dtype) || a.shape != shape)
      return badInput("--input " + v.name + ": the file holds " + a.descr + " " + ir::formatShape(a.shape) + ", the model needs " +
                      npyDescr(v.type.dtype) + " " + ir::formatShape(v.type.shape));
    at::Tensor t = at::empty(shape, opts);
    std::memcpy(t.data_ptr(), a.data.data(), a.data.size());
    if (high > 0 && !ir::isFloat(v.type.dtype) && t.numel() > 0) {
      // Out-of-range labels or indices would fail inside a kernel mid-step; say so here.
      // Cross entropy ignores the label -100, as PyTorch's does; Gather takes negative indices.
      at::Tensor wide = t.to(at::kLong);
      at::Tensor bad = labels ? (wide < 0).logical_and(wide != -100).logical_or(wide >= high) : (wide < -high).logical_or(wide >= high);
      if (bad.any().item<bool>()) {
        const int64_t index = bad.reshape({-1}).nonzero()[0][0].item<int64_t>();
        return badInput("--input " + v.name + ": element " + std::to_string(index) + " is " + std::to_string(wide.reshape({-1})[index].item<int64_t>()) +
                        (labels ? ", but cross entropy's labels lie in [0, " + std::to_string(high) + ") (or are -100, ignored)"
                                : ", but the indices it supplies lie in [" + std::to_string(-high) + ", " + std::to_string(high) + ")"));
      }
    }
    return t;
  }
  if (v.data && v.data->size() == v.bytes) {
    at::Tensor t = at::empty(shape, opts);
    std::memcpy(t.data_ptr(), v.data->data(), v.bytes);
    return t;
  }
  if (ir::isFloat(v.type.dtype)) {
    at::Tensor t = at::randn(shape, gen, opts.dtype(at::kFloat));
    if (v.kind == ir::ValueKind::Parameter) t = t * (1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(shape.empty() ? 1 : shape.back(), 1))));
    return at::Tensor(t.to(torchDType(v.type.dtype)));
  }
  // Other integer inputs are small indices.
  return at::Tensor(at::randint(0, high > 0 ? high : 2, shape, gen, opts));
}

/// The value on `device`. It is made on the host from the CPU generator either way, so a seed
/// gives the same inputs and parameters on every device.
Expected<at::Tensor> materialize(const ir::Graph& g, ValueId id, at::Generator& gen, const std::map<std::string, NpyArray>& given,
                                 at::Device device) {
  Expected<at::Tensor> host = materializeOnHost(g, id, gen, given);
  if (!host || device.is_cpu()) return host;
  return at::Tensor(host->to(device));
}

// ------------------------------------------------------------------ the step

struct Tape {
  std::vector<std::pair<ValueId, at::Tensor>> leaves;  ///< stand-ins for F_k
  std::vector<std::pair<ValueId, at::Tensor>> outputs; ///< stage outputs that carry adjoints
};

class Step {
public:
  Step(const ir::Graph& g, const plan::StageModel& m, std::vector<at::Tensor>& values, std::vector<ValueId> params, uint64_t seed,
       Meter& meter, at::Device device)
      : g_(g), m_(m), vals_(values), params_(std::move(params)), tapes_(m.size() + 2), ckpts_(m.size() + 2),
        rngState_(m.size() + 2), generator_(makeGenerator(device, seed ^ 0x5eedULL)), meter_(meter), device_(device) {}

  /// Runs the stream; returns the loss. Fills the measured timeline and the phase times.
  double run(const plan::Stream& stream, std::vector<uint64_t>* timeline, double* fwd, double* recompute, double* bwd) {
    std::vector<bool> forwarded(m_.size() + 2, false);
    replayed_ = plan::replayedStages(m_, stream);
    double loss = 0;
    at::Tensor lossOnHost; // CUDA: copied without waiting, read after the step's last instruction
    PhaseTimer timer(device_);
    for (size_t index = 0; index < stream.size(); ++index) {
      const plan::Instruction& instr = stream[index];
      // Leaving the current state (a backward, or a forward that starts from a checkpoint)
      // frees it before the instruction runs, as the simulator counts it; measuring from
      // after the drop keeps each instruction's peak its own. (The caching allocator's
      // statistics are kept on the host as kernels are enqueued: no device wait is needed.)
      if (instr.kind == plan::InstrKind::Backward || (instr.isForward() && current_ != instr.stage)) dropCurrent();
      if (instr.kind == plan::InstrKind::Backward) dropCache(instr.stage);
      meter_.resetPeak();
      timer.begin();
      switch (instr.kind) {
      case plan::InstrKind::ForwardCheckpoint:
      case plan::InstrKind::ForwardNone:
      case plan::InstrKind::ForwardAll: {
        forward(instr, instr.stage <= m_.size() && plan::elidesForward(m_, stream, index, cacheHeld_[instr.stage]));
        timer.end(forwarded[instr.stage] ? PhaseTimer::Recompute : PhaseTimer::Forward);
        forwarded[instr.stage] = true;
        break;
      }
      case plan::InstrKind::Loss: {
        ValueId l = m_.outputFrontier.front();
        if (device_.is_cuda()) {
          // Into pinned host memory (neither the device's nor the counting allocator's bytes),
          // from a detached alias so that no autograd graph hangs on to it.
          at::NoGradGuard noGrad;
          lossOnHost = at::empty(vals_[l].sizes(), vals_[l].options().device(at::kCPU).pinned_memory(true)); // one element
          lossOnHost.copy_(vals_[l].detach(), /*non_blocking=*/true);
        } else {
          loss = vals_[l].item<double>();
        }
        adj_[l] = at::ones_like(vals_[l]);
        timer.end(PhaseTimer::Untimed);
        break;
      }
      case plan::InstrKind::Backward:
        backward(instr.stage);
        timer.end(PhaseTimer::Backward);
        break;
      }
      if (timeline) timeline->push_back(meter_.peak());
    }
    timer.finish(fwd, recompute, bwd); // on CUDA it waits for the device
    if (lossOnHost.defined()) {
      meter_.synchronize();
      loss = lossOnHost.item<double>();
    }
    return loss;
  }

private:
  /// `elide`: `F_all k` right before `B k` (plan::elidesForward): the stage's elidable
  /// contractions are recorded for the backward without being run; their outputs, read by
  /// nothing before B k, are stand-ins of the right shape with a one-element buffer.
  void forward(const plan::Instruction& instr, bool elide) {
    const size_t k = instr.stage;
    const plan::Stage& s = m_.stage(k);
    if (current_ != k) {
      // Start from the checkpoint: drop the current state, put F_k back in place.
      dropCurrent();
      for (size_t i = 0; i < ckpts_[k].size(); ++i) vals_[m_.frontier(k)[i]] = ckpts_[k][i];
    }
    if (instr.kind == plan::InstrKind::ForwardCheckpoint) {
      ckpts_[k].clear();
      for (ValueId v : m_.frontier(k)) ckpts_[k].push_back(vals_[v].defined() ? vals_[v].detach() : vals_[v]);
    }
    const bool withGrad = instr.kind == plan::InstrKind::ForwardAll;
    Tape& tape = tapes_[k];
    if (withGrad) {
      // Leaves only for what the stage reads. A value carried through unused keeps its tensor
      // (and its adjoint passes B k untouched): a leaf of it would pin its buffer in this tape
      // after the value dies elsewhere.
      std::vector<ValueId> read;
      for (uint32_t p = s.first; p <= s.last; ++p)
        for (ValueId in : g_.node(m_.order[p]).inputs)
          if (in != ir::kNone) read.push_back(in);
      std::sort(read.begin(), read.end());
      for (ValueId v : m_.frontier(k)) {
        if (g_.value(v).kind != ir::ValueKind::Activation || !std::binary_search(read.begin(), read.end(), v)) continue;
        at::Tensor leaf = vals_[v].detach();
        if (m_.requiresGrad[v]) leaf.requires_grad_(true);
        tape.leaves.emplace_back(v, leaf);
        vals_[v] = leaf;
      }
    }
    // Stochastic ops draw from a per-step generator whose state is captured on a stage's first
    // forward and restored on every replay, so recomputation reproduces it bit for bit.
    // (Only stages with a stochastic op keep a state: it is a tensor, and it counts.)
    const bool firstForward = !forwardedOnce_[k];
    forwardedOnce_[k] = true;
    // With stage k's cache held, its contractions take their kept outputs (selective
    // recomputation); a forward marked `cache` keeps them until B k.
    const bool replayKeptOutputs = cacheHeld_[k];
    if (instr.cache) cacheHeld_[k] = true;
    auto cacheable = [&s](ValueId v) { return std::binary_search(s.cacheable.begin(), s.cacheable.end(), v); };
    if (s.stochastic && replayed_[k]) {
      if (firstForward) rngState_[k] = generator_.get_state();
      else generator_.set_state(rngState_[k]);
    }
    {
      c10::optional<at::NoGradGuard> noGrad;
      if (!withGrad) noGrad.emplace();
      std::vector<at::Tensor> inputs;
      for (uint32_t p = s.first; p <= s.last; ++p) {
        const ir::Node& node = g_.node(m_.order[p]);
        inputs.clear();
        for (ValueId in : node.inputs) inputs.push_back(in == ir::kNone ? at::Tensor() : vals_[in]);
        // A replayed stage keeps its BatchNorms' batch statistics from its first forward.
        KernelContext context{&generator_, firstForward, &vals_, device_, replayed_[k] ? &batchStats_ : nullptr, m_.order[p]};
        // An op off every gradient path (a dead branch, a mask computed from activations)
        // records no autograd graph: its saved tensors would live as long as its outputs, which
        // the simulator does not count.
        c10::optional<at::NoGradGuard> offPath;
        if (withGrad && !m_.keepsTape[m_.order[p]]) offPath.emplace();
        const bool cacheableNode = node.outputs.size() == 1 && cacheable(node.outputs[0]);
        std::vector<at::Tensor> outs;
        if (elide && std::binary_search(s.elidable.begin(), s.elidable.end(), p)) {
          const ir::Value& out = g_.value(node.outputs[0]);
          const at::Tensor standIn = at::zeros({}, inputs[0].options()).expand(out.type.shape);
          outs = replayKept(context, g_, node, inputs, standIn);
        } else if (replayKeptOutputs && cacheableNode) {
          outs = replayKept(context, g_, node, inputs, kept_[node.outputs[0]]);
        } else {
          outs = runKernel(context, g_, node, inputs);
        }
        if (instr.cache && cacheableNode) kept_[node.outputs[0]] = outs[0].detach();
        for (size_t o = 0; o < node.outputs.size() && o < outs.size(); ++o) vals_[node.outputs[o]] = outs[o];
        // Free values whose last use was this op and that leave nothing behind.
        for (ValueId in : node.inputs)
          if (in != ir::kNone && g_.value(in).kind == ir::ValueKind::Activation && m_.lastUsePos[in] == static_cast<int64_t>(p) &&
              !std::binary_search(s.born.begin(), s.born.end(), in))
            vals_[in] = at::Tensor();
        for (ValueId out : node.outputs)
          if (m_.lastUsePos[out] < 0 && !std::binary_search(m_.outputFrontier.begin(), m_.outputFrontier.end(), out))
            vals_[out] = at::Tensor();
      }
    }
    if (withGrad)
      for (ValueId v : m_.frontier(k + 1))
        if (g_.value(v).kind == ir::ValueKind::Activation && vals_[v].defined() && vals_[v].requires_grad() &&
            (std::binary_search(s.born.begin(), s.born.end(), v) || k == m_.size()))
          tape.outputs.emplace_back(v, vals_[v]);
    for (ValueId v : s.dying)
      if (g_.value(v).kind == ir::ValueKind::Activation) {
        vals_[v] = at::Tensor();
        releaseTapeOutput(v);
        releaseLeaves(v);
      }
    current_ = k + 1;
  }

  /// A leaf is kept only to read its gradient after B k. Once its value is dead, unless stage
  /// k's ops saved it, its buffer is not needed: swap it for an empty one so it is freed now,
  /// as the simulator assumes (the autograd graph recorded the shape it needs). Every stage
  /// that read the value has its own leaf, and each would pin the buffer until its B.
  void releaseLeaves(ValueId v) {
    for (size_t k = 1; k <= m_.size(); ++k) {
      const std::vector<ValueId>& saved = m_.stage(k).tape;
      if (std::binary_search(saved.begin(), saved.end(), v)) continue;
      for (auto& [id, leaf] : tapes_[k].leaves)
        if (id == v && leaf.defined() && leaf.numel() > 0) leaf.set_data(at::empty({0}, leaf.options()));
    }
  }

  /// A stage output kept only as the root of its stage's backward: once nothing reads its value
  /// (it died, and its producer's tape did not save it) its buffer is freed; the autograd graph
  /// keeps the shape it needs.
  void releaseTapeOutput(ValueId v) {
    int64_t pos = m_.producerPos[v];
    if (pos < 0) return;
    for (size_t k = 1; k <= m_.size(); ++k) {
      const plan::Stage& st = m_.stage(k);
      if (static_cast<int64_t>(st.first) > pos || static_cast<int64_t>(st.last) < pos) continue;
      if (std::binary_search(st.tape.begin(), st.tape.end(), v)) return;
      for (auto& [id, t] : tapes_[k].outputs)
        if (id == v && t.defined() && t.numel() > 0) t.set_data(at::empty({0}, t.options()));
      return;
    }
  }

  bool heldByCheckpoint(ValueId v) const {
    for (size_t k = 1; k <= m_.size(); ++k)
      if (!ckpts_[k].empty() && std::binary_search(m_.frontier(k).begin(), m_.frontier(k).end(), v)) return true;
    return false;
  }

  void dropCurrent() {
    if (current_ == 0) return;
    for (ValueId v : m_.frontier(current_))
      if (g_.value(v).kind == ir::ValueKind::Activation) {
        vals_[v] = at::Tensor();
        if (!heldByCheckpoint(v)) {
          releaseTapeOutput(v);
          releaseLeaves(v);
        }
      }
    current_ = 0;
  }

  /// sum + part, in place when nothing else sees `sum`'s buffer (autograd may hand the same
  /// tensor out as the gradient of several values), so the sum costs no third buffer.
  static at::Tensor accumulate(at::Tensor& sum, const at::Tensor& part) {
    if (sum.use_count() == 1 && sum.storage().use_count() == 1 && !sum.is_alias_of(part) && sum.sizes() == part.sizes() &&
        sum.scalar_type() == part.scalar_type())
      return sum.add_(part);
    return sum + part;
  }

  /// B k reads what its tape saved, not the kept outputs: the cache goes before it runs, as
  /// the simulator releases it (and before the instruction's meter starts: GPT-2's MLP MatMul
  /// at 50 % measured its 1 MiB kept output in B k). A replay that took a kept output made it
  /// the tape's root too: unless the tape saved it, its buffer goes with the cache.
  void dropCache(size_t k) {
    for (ValueId v : m_.stage(k).cacheable) {
      kept_[v] = at::Tensor();
      releaseTapeOutput(v);
    }
    cacheHeld_[k] = false;
  }

  /// The run loop has already dropped the current state and stage k's cache (before the
  /// instruction's meter started).
  void backward(size_t k) {
    Tape& tape = tapes_[k];
    std::vector<at::Tensor> outs, grads;
    for (auto& [v, t] : tape.outputs) {
      auto it = adj_.find(v);
      if (it == adj_.end()) continue;
      outs.push_back(t);
      grads.push_back(it->second);
    }
    // Gradients of the stage's leaves (adjoints of F_k) and of the parameters it uses, taken
    // with autograd::grad so nothing accumulates into the leaves (whose buffers may be freed).
    const plan::Stage& s = m_.stage(k);
    std::vector<at::Tensor> inputs;
    std::vector<std::pair<ValueId, bool>> targets; // value, is parameter
    for (auto& [v, leaf] : tape.leaves)
      if (leaf.requires_grad()) {
        inputs.push_back(leaf);
        targets.emplace_back(v, false);
      }
    std::vector<bool> seen(vals_.size(), false);
    for (uint32_t p = s.first; p <= s.last; ++p)
      for (ValueId in : g_.node(m_.order[p]).inputs)
        if (in != ir::kNone && g_.value(in).kind == ir::ValueKind::Parameter && !seen[in]) {
          seen[in] = true;
          inputs.push_back(vals_[in]);
          targets.emplace_back(in, true);
        }
    std::vector<at::Tensor> got;
    if (!outs.empty() && !inputs.empty())
      got = torch::autograd::grad(outs, inputs, grads, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
    // Drop this frame's references to the output gradients: one of them can be the very
    // tensor a frontier value's held adjoint is (Add hands the same gradient to both inputs),
    // and a second reference would make accumulate copy instead of adding in place.
    outs.clear();
    grads.clear();
    for (ValueId v : s.produced) adj_.erase(v);
    for (size_t i = 0; i < got.size(); ++i) {
      if (!got[i].defined()) continue;
      auto [v, isParam] = targets[i];
      // Some backwards hand out views (Concat's gradients are slices of its output's): a kept
      // view would pin the whole buffer for as long as the adjoint lives. Keep a compact copy.
      if (!isParam && got[i].storage().nbytes() > got[i].nbytes()) got[i] = got[i].clone(at::MemoryFormat::Contiguous);
      if (isParam) {
        at::Tensor& grad = vals_[v].mutable_grad();
        grad = grad.defined() ? accumulate(grad, got[i]) : got[i];
        continue;
      }
      auto it = adj_.find(v);
      if (it == adj_.end()) adj_[v] = got[i];
      else it->second = accumulate(it->second, got[i]);
    }
    tapes_[k] = Tape{};
    if (!ckpts_[k].empty()) {
      ckpts_[k].clear();
      // The simulator releases F_k here: a value that only this checkpoint held is dead, and
      // the tapes that keep it as a root or a leaf without having saved it free its buffer.
      for (ValueId v : m_.frontier(k))
        if (g_.value(v).kind == ir::ValueKind::Activation && !heldByCheckpoint(v)) {
          releaseTapeOutput(v);
          releaseLeaves(v);
        }
    }
  }

  const ir::Graph& g_;
  const plan::StageModel& m_;
  std::vector<at::Tensor>& vals_;
  std::vector<ValueId> params_;
  std::vector<Tape> tapes_;
  std::vector<std::vector<at::Tensor>> ckpts_;
  std::map<ValueId, at::Tensor> adj_;
  std::vector<at::Tensor> rngState_;
  std::vector<bool> forwardedOnce_ = std::vector<bool>(m_.size() + 2, false);
  std::vector<bool> replayed_; ///< per stage: the stream forwards it more than once
  std::vector<bool> cacheHeld_ = std::vector<bool>(m_.size() + 2, false); ///< per stage: its cache is held
  std::vector<at::Tensor> kept_ = std::vector<at::Tensor>(vals_.size());   ///< per value: kept output
  /// Per node: batch statistics of a training BatchNorm in a replayed stage, from its first
  /// forward to the end of the step (plan::Stage::replayStateBytes).
  std::vector<std::array<at::Tensor, 2>> batchStats_ = std::vector<std::array<at::Tensor, 2>>(g_.numNodes());
  at::Generator generator_;
  Meter& meter_;
  at::Device device_;
  size_t current_ = 1;
};

/// The median of `v` (the upper one of an even count); v must not be empty.
double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

uint64_t peakRss() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
}

/// `cpu`, `cuda` or `cuda:N`, checked against this LibTorch and machine; the message says which
/// part is missing.
Expected<at::Device> parseDevice(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name.rfind("cuda", 0) != 0) return usageError("--device '" + name + "': expected cpu, cuda or cuda:N");
  int index = 0;
  if (name.size() > 4) {
    if (name[4] != ':' || name.size() == 5 || name.find_first_not_of("0123456789", 5) != std::string::npos)
      return usageError("--device '" + name + "': expected cpu, cuda or cuda:N");
    if (name.size() > 8) return usageError("--device '" + name + "': no such GPU index");
    index = std::atoi(name.c_str() + 5);
  }
#ifndef TBP_TORCH_CUDA
  (void)index;
  return usageError("--device " + name +
                    ": the LibTorch this tbp is built with has no CUDA support (Debian's libtorch is CPU-only); "
                    "rebuild against a CUDA LibTorch (docs/runtime.md), or use --device cpu");
#else
  // The caching allocator's fixed-size segments fragment as a schedule frees and re-makes
  // tensors of many sizes. Expandable segments reserved less on an H200 (2026-12-04, same runs):
  // the resnet workload at 50 % 686 -> 598 MB, the U-Net's tightest schedule 176 -> 124 MB, the
  // transformers 1-2 % less; and they hand out blocks without the unsplit tails that
  // `allocated_bytes` counts. tbp defaults to them unless the allocator is configured; LibTorch
  // reads the setting once, at the first CUDA allocation, which comes after this check.
#if TBP_HAS_REQUESTED_BYTES // LibTorch 2.1+: older allocators refuse the option
  if (!std::getenv("PYTORCH_CUDA_ALLOC_CONF") && !std::getenv("PYTORCH_ALLOC_CONF"))
    ::setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True", 0);
#endif
  if (!at::hasCUDA())
    return usageError("--device " + name + ": LibTorch has CUDA support, but no GPU (or no driver) is visible; use --device cpu");
  const int count = static_cast<int>(c10::cuda::device_count());
  if (index >= count)
    return usageError("--device " + name + ": this machine has " + std::to_string(count) + " GPU(s)");
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
#endif
}

} // namespace

bool available() { return true; }

std::vector<std::string> missingKernels(const ir::Graph& graph) {
  std::map<std::string, size_t> missing;
  for (const ir::Node& n : graph.nodes())
    if (!kernelFor(n.op)) ++missing[ir::opName(n.op)];
  std::vector<std::string> out;
  for (const auto& [op, count] : missing) out.push_back(op + " x" + std::to_string(count));
  return out;
}

namespace {

/// What a step or a profile needs before it runs: the device (threads set), and every
/// parameter, constant and input as a tensor on it (parameters require gradients).
struct Resident {
  at::Device device = at::kCPU;
  std::vector<at::Tensor> base;  ///< by value id; activations undefined
  std::vector<ValueId> params;
};

Expected<Resident> prepareResident(const ir::Graph& g, const RunOptions& options) {
  Expected<at::Device> parsed = parseDevice(options.device);
  if (!parsed) return parsed.status();
  Resident r;
  r.device = *parsed;
  Meter installed(r.device); // the counting allocator, before any tensor is made
  std::vector<std::string> missing = missingKernels(g);
  if (!missing.empty()) {
    std::string list;
    for (const std::string& s : missing) list += (list.empty() ? "" : ", ") + s;
    return badInput("the runtime has no kernel yet for: " + list);
  }
  if (options.threads > 0) at::set_num_threads(options.threads);
  for (const auto& [name, array] : options.inputs) {
    auto id = g.findValue(name);
    if (!id || g.value(*id).kind != ir::ValueKind::Input)
      return usageError("--input " + name + ": the model has no graph input of that name");
  }
  at::Generator gen = at::detail::createCPUGenerator(options.seed);
  r.base.resize(g.numValues());
  for (ValueId v = 0; v < g.numValues(); ++v) {
    if (g.value(v).kind == ir::ValueKind::Activation) continue;
    Expected<at::Tensor> t = materialize(g, v, gen, options.inputs, r.device);
    if (!t) return t.status();
    r.base[v] = *t;
    if (g.value(v).kind == ir::ValueKind::Parameter) {
      r.base[v].requires_grad_(true);
      r.params.push_back(v);
    }
  }
  return r;
}

/// Position in `order` of each value's last use (-1: none): a forward without autograd frees
/// an activation there.
std::vector<int64_t> lastUsePositions(const ir::Graph& g, const std::vector<ir::NodeId>& order) {
  std::vector<int64_t> lastUse(g.numValues(), -1);
  for (size_t p = 0; p < order.size(); ++p)
    for (ValueId in : g.node(order[p]).inputs)
      if (in != ir::kNone) lastUse[in] = static_cast<int64_t>(p);
  return lastUse;
}

/// One step of the profiling steps' forward: stores `node`'s outputs (the node at position
/// `p`) and frees the activations it read last.
void advanceForward(const ir::Graph& g, const ir::Node& node, size_t p, const std::vector<int64_t>& lastUse,
                    const std::vector<at::Tensor>& outs, std::vector<at::Tensor>& vals) {
  for (size_t o = 0; o < node.outputs.size() && o < outs.size(); ++o) vals[node.outputs[o]] = outs[o];
  for (ValueId in : node.inputs)
    if (in != ir::kNone && g.value(in).kind == ir::ValueKind::Activation && lastUse[in] == static_cast<int64_t>(p))
      vals[in] = at::Tensor();
}

} // namespace

Expected<plan::NodeCosts> profileForwardCosts(const ir::Graph& g, const std::vector<ir::NodeId>& order, const RunOptions& options,
                                              int repeats) {
  repeats = std::max(repeats, 1);
  try {
    Expected<Resident> resident = prepareResident(g, options);
    if (!resident) return resident.status();
    Meter meter(resident->device);
    // Values die after their last use in this order, as in a forward without autograd.
    const std::vector<int64_t> lastUse = lastUsePositions(g, order);
    std::vector<std::vector<double>> samples(g.numNodes());
    at::Generator generator = makeGenerator(resident->device, options.seed ^ 0x5eedULL);
    at::NoGradGuard noGrad;
    std::vector<at::Tensor> inputs;
    // The warm-up pass computes the BatchNorms' batch statistics; the measured passes reuse
    // them, as replays do: the planner prices replays (a first forward runs once whatever the
    // schedule).
    std::vector<std::array<at::Tensor, 2>> batchStats(g.numNodes());
    for (int pass = 0; pass <= repeats; ++pass) {
      std::vector<at::Tensor> vals = resident->base;
      // Not the first forward: op state (running statistics) stays as it is, as in a replay.
      KernelContext context{&generator, /*firstForward=*/false, &vals, resident->device, &batchStats};
      for (size_t p = 0; p < order.size(); ++p) {
        const ir::Node& node = g.node(order[p]);
        context.node = order[p];
        inputs.clear();
        for (ValueId in : node.inputs) inputs.push_back(in == ir::kNone ? at::Tensor() : vals[in]);
        meter.synchronize();
        auto t0 = Clock::now();
        std::vector<at::Tensor> outs = runKernel(context, g, node, inputs);
        meter.synchronize();
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (pass > 0) samples[order[p]].push_back(s);
        advanceForward(g, node, p, lastUse, outs, vals);
      }
    }
    plan::NodeCosts costs(g.numNodes(), 1);
    for (ir::NodeId n = 0; n < g.numNodes(); ++n) {
      if (samples[n].empty()) continue;
      costs[n] = std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(median(std::move(samples[n])) * 1e9)));
    }
    return costs;
  } catch (const ShapeContradiction& e) {
    return badInput(e.what());
  } catch (const std::exception& e) {
    std::string what = e.what();
    return internalError("LibTorch failed while profiling: " + what.substr(0, what.find('\n')));
  }
}

namespace {

/// Bytes of the distinct buffers among `ts` that no tensor of `known` shares (a gradient
/// handed through, a view of an input): what the kernel newly allocated for them.
uint64_t newBufferBytes(const std::vector<at::Tensor>& ts, const std::vector<at::Tensor>& known) {
  std::vector<const void*> seen;
  for (const at::Tensor& t : known)
    if (t.defined()) seen.push_back(t.storage().unsafeGetStorageImpl());
  uint64_t bytes = 0;
  for (const at::Tensor& t : ts) {
    if (!t.defined()) continue;
    const void* impl = t.storage().unsafeGetStorageImpl();
    if (std::find(seen.begin(), seen.end(), impl) != seen.end()) continue;
    seen.push_back(impl);
    bytes += t.storage().nbytes();
  }
  return bytes;
}

uint64_t above(uint64_t peak, uint64_t base) { return peak > base ? peak - base : 0; }

} // namespace

Expected<std::vector<std::optional<ir::MeasuredScratch>>> profileScratch(const ir::Graph& g, const std::vector<ir::NodeId>& order,
                                                                        const RunOptions& options) {
  try {
    Expected<Resident> resident = prepareResident(g, options);
    if (!resident) return resident.status();
    Meter meter(resident->device);
    const analysis::MemoryAnalysis mem = analysis::analyzeMemory(g, order);
    const std::vector<int64_t> lastUse = lastUsePositions(g, order);
    std::vector<std::optional<ir::MeasuredScratch>> out(g.numNodes());
    at::Generator generator = makeGenerator(resident->device, options.seed ^ 0x5eedULL);
    std::vector<at::Tensor> inputs;
    // Two passes: the first makes the libraries' lasting allocations (cuBLAS and cuDNN
    // handles' workspaces, on the autograd engine's thread too); the second is measured.
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<at::Tensor> vals = resident->base;
      KernelContext context{&generator, /*firstForward=*/false, &vals, resident->device, nullptr};
      for (size_t p = 0; p < order.size(); ++p) {
        const ir::Node& node = g.node(order[p]);
        context.node = order[p];
        inputs.clear();
        for (ValueId in : node.inputs) inputs.push_back(in == ir::kNone ? at::Tensor() : vals[in]);
        ir::MeasuredScratch scratch;
        std::vector<at::Tensor> outs;
        {
          // Forward, as a replay runs it: the peak beyond the outputs' new buffers.
          at::NoGradGuard noGrad;
          meter.synchronize();
          const uint64_t before = meter.rawLive();
          meter.resetPeak();
          outs = runKernel(context, g, node, inputs);
          meter.synchronize();
          scratch.forward = above(meter.peak(), before + newBufferBytes(outs, inputs));
        }
        if (mem.keepsTape[order[p]]) {
          // Backward of the node alone, with the inputs that take gradients in the step as
          // leaves: the peak beyond the gradients it newly makes (one handed through costs
          // nothing), with its outputs, their gradients and what it saved already held.
          std::vector<at::Tensor> leaves, args = inputs;
          for (size_t i = 0; i < node.inputs.size(); ++i) {
            ValueId in = node.inputs[i];
            if (in == ir::kNone || !args[i].defined()) continue;
            const ir::ValueKind kind = g.value(in).kind;
            if (kind == ir::ValueKind::Activation && mem.values[in].requiresGrad) args[i] = args[i].detach().requires_grad_(true);
            if ((kind == ir::ValueKind::Activation || kind == ir::ValueKind::Parameter) && args[i].requires_grad()) leaves.push_back(args[i]);
          }
          std::vector<at::Tensor> ys, gys;
          at::AutoGradMode grad(true);
          std::vector<at::Tensor> taped = runKernel(context, g, node, args);
          for (const at::Tensor& y : taped)
            if (y.defined() && y.requires_grad() && y.is_floating_point()) {
              ys.push_back(y);
              gys.push_back(at::ones_like(y));
            }
          if (!leaves.empty() && !ys.empty()) {
            std::vector<at::Tensor> held = gys;
            held.insert(held.end(), ys.begin(), ys.end());
            held.insert(held.end(), args.begin(), args.end());
            meter.synchronize();
            const uint64_t before = meter.rawLive();
            meter.resetPeak();
            std::vector<at::Tensor> got = torch::autograd::grad(ys, leaves, gys, /*retain_graph=*/false, /*create_graph=*/false,
                                                                /*allow_unused=*/true);
            meter.synchronize();
            scratch.backward = above(meter.peak(), before + newBufferBytes(got, held));
          }
        }
        if (pass == 1) out[order[p]] = scratch;
        advanceForward(g, node, p, lastUse, outs, vals);
      }
    }
    return out;
  } catch (const ShapeContradiction& e) {
    return badInput(e.what());
  } catch (const std::exception& e) {
    std::string what = e.what();
    return internalError("LibTorch failed while measuring kernel scratch: " + what.substr(0, what.find('\n')));
  }
}

int intraOpThreads(int requested) { return requested > 0 ? requested : at::get_num_threads(); }

Expected<RunReport> runTrainingStep(const ir::Graph& g, const plan::StageModel& m, const plan::Stream& stream, const RunOptions& options) {
  try {
    Expected<Resident> prepared = prepareResident(g, options);
    if (!prepared) return prepared.status();
    const at::Device device = prepared->device;
    Meter meter(device);
    std::vector<at::Tensor>& base = prepared->base;
    const std::vector<ValueId>& params = prepared->params;
    // Optimizer state is resident for the whole step, as the simulator counts it.
    std::vector<std::pair<at::Tensor, at::Tensor>> moments;
    if (options.optimizer == "adam")
      for (ValueId p : params) moments.emplace_back(at::zeros_like(base[p]), at::zeros_like(base[p]));
    int adamStep = 0;
    auto optimizerStep = [&] {
      at::NoGradGuard noGrad;
      if (options.optimizer == "none") return;
      ++adamStep;
      for (size_t i = 0; i < params.size(); ++i) {
        at::Tensor p = base[params[i]].detach();
        at::Tensor grad = base[params[i]].grad();
        if (!grad.defined()) continue;
        if (options.optimizer == "sgd") {
          p.add_(grad, -options.lr);
          continue;
        }
        const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
        auto& [m1, m2] = moments[i];
        m1.mul_(b1).add_(grad, 1 - b1);
        m2.mul_(b2).addcmul_(grad, grad, 1 - b2);
        const double c1 = 1 - std::pow(b1, adamStep), c2 = 1 - std::pow(b2, adamStep);
        at::Tensor denom = (m2 / c2).sqrt_().add_(eps);
        p.addcdiv_(m1, denom, -options.lr / c1);
      }
    };
    auto hostGradients = [&] {
      std::vector<HostGradient> out;
      for (ValueId p : params) {
        at::Tensor grad = base[p].grad().defined() ? base[p].grad() : at::zeros_like(base[p]);
        grad = grad.to(at::kCPU).contiguous();
        NpyArray a{npyDescr(g.value(p).type.dtype), g.value(p).type.shape, std::string(grad.nbytes(), '\0')};
        std::memcpy(a.data.data(), grad.data_ptr(), grad.nbytes());
        out.push_back({g.value(p).name, std::move(a)});
      }
      return out;
    };
    auto runOnce = [&](const plan::Stream& s, std::vector<uint64_t>* timeline, double* fwd, double* rec, double* bwd) {
      for (ValueId p : params) base[p].mutable_grad() = at::Tensor();
      std::vector<at::Tensor> vals = base;
      Step step(g, m, vals, params, options.seed, meter, device);
      return step.run(s, timeline, fwd, rec, bwd);
    };

    // The reference first (host copies only, so it costs the measured steps nothing).
    std::vector<HostGradient> reference;
    double referenceLoss = 0;
    if (options.verify) {
      double a = 0, b = 0, c = 0;
      referenceLoss = runOnce(plan::storeAllStream(m.size()), nullptr, &a, &b, &c);
      reference = hostGradients();
    }

    RunReport report;
    if (device.is_cuda()) {
      // cuBLAS and cuDNN allocate their workspaces through the caching allocator on first use
      // and keep them. Prime them with one unmeasured step (the reference step does that), then
      // measure them as what is allocated beyond the resident tensors, and leave them out.
      if (!options.verify) {
        double a = 0, b = 0, c = 0;
        runOnce(stream, nullptr, &a, &b, &c);
      }
      for (ValueId p : params) base[p].mutable_grad() = at::Tensor();
      meter.synchronize();
      uint64_t resident = 0;
      for (const at::Tensor& t : base)
        if (t.defined()) resident += t.nbytes();
      for (const auto& [m1, m2] : moments) resident += m1.nbytes() + m2.nbytes();
      report.libraryWorkspaceBytes = meter.setWorkspaceOffset(resident);
    }
    std::vector<double> times, baselineTimes, ratios;
    std::vector<std::array<double, 3>> splits;
    const plan::Stream storeAll = plan::storeAllStream(m.size());
    auto timeStoreAll = [&] {
      double a = 0, b = 0, c = 0;
      auto t0 = Clock::now();
      runOnce(storeAll, nullptr, &a, &b, &c);
      meter.synchronize();
      return std::chrono::duration<double>(Clock::now() - t0).count();
    };
    uint64_t peak = 0;
    // Short steps are timed over several runs: at least `steps`, and until `minTimeS` of
    // measured time (a median of one 50 ms step says little).
    int total = options.warmup + std::max(options.steps, 1);
    double measured = 0;
    for (int s = 0; s < total; ++s) {
      if (s == options.warmup) meter.clearAllocatedPeak();
      // The paired store-all step runs first on odd steps and last on even ones, so a drift
      // in the machine's speed does not favour either.
      double baselineSeconds = options.baseline && s % 2 == 1 ? timeStoreAll() : 0;
      std::vector<uint64_t> timeline;
      double fwd = 0, rec = 0, bwd = 0;
      auto t0 = Clock::now();
      double loss = runOnce(stream, &timeline, &fwd, &rec, &bwd);
      if (s == 0) {
        // The first step starts from the initial parameters: it is the one verified and saved.
        if (options.keepGradients || options.verify) report.gradients = hostGradients();
        if (options.verify) {
          GradCheck check;
          check.passed = true;
          check.lossDifference = std::fabs(referenceLoss - loss);
          for (size_t i = 0; i < params.size(); ++i) {
            const at::TensorOptions host = at::TensorOptions().dtype(base[params[i]].scalar_type());
            at::Tensor got = at::from_blob(report.gradients[i].array.data.data(), base[params[i]].sizes(), host);
            at::Tensor ref = at::from_blob(reference[i].array.data.data(), base[params[i]].sizes(), host);
            if (!at::isfinite(got).all().item<bool>() || !at::isfinite(ref).all().item<bool>()) {
              if (check.nonFiniteParameters++ == 0) check.firstNonFinite = g.value(params[i]).name;
              check.passed = false;
              continue;
            }
            double absErr = (got - ref).abs().max().item<double>();
            double scale = ref.abs().max().item<double>();
            double relErr = scale > 0 ? absErr / scale : absErr;
            if (absErr > check.maxAbsError) {
              check.maxAbsError = absErr;
              check.worstParameter = g.value(params[i]).name;
            }
            check.maxRelError = std::max(check.maxRelError, relErr);
            if (absErr > options.atol + options.rtol * scale) check.passed = false;
          }
          check.nonFiniteLoss = !std::isfinite(loss) || !std::isfinite(referenceLoss);
          if (check.nonFiniteLoss || check.lossDifference > options.atol + options.rtol * std::fabs(referenceLoss)) check.passed = false;
          report.gradCheck = check;
        }
        if (!options.keepGradients) report.gradients.clear();
      }
      meter.resetPeak();
      auto optimizerStart = Clock::now();
      optimizerStep();
      meter.synchronize();
      const double optimizerSeconds = std::chrono::duration<double>(Clock::now() - optimizerStart).count();
      if (!timeline.empty()) timeline.back() = std::max(timeline.back(), meter.peak());
      double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      if (options.baseline && s % 2 == 0) baselineSeconds = timeStoreAll();
      baselineSeconds += optimizerSeconds;
      if (s < options.warmup) continue;
      if (options.baseline) {
        baselineTimes.push_back(baselineSeconds);
        ratios.push_back(seconds / baselineSeconds);
      }
      measured += seconds;
      if (s + 1 == total && measured < options.minTimeS && total < options.warmup + 1000) ++total;
      report.loss = loss;
      times.push_back(seconds);
      splits.push_back({fwd, rec, bwd});
      for (size_t i = 0; i < timeline.size(); ++i)
        if (timeline[i] > peak) {
          peak = timeline[i];
          report.measuredPeakInstruction = i;
          report.timeline = timeline;
        }
    }
    std::vector<size_t> idx(times.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return times[a] < times[b]; });
    size_t med = idx[idx.size() / 2];
    report.stepTimeS = times[med];
    report.measuredSteps = static_cast<int>(times.size());
    report.stepTimeMinS = times[idx.front()];
    report.forwardS = splits[med][0];
    report.recomputeS = splits[med][1];
    report.backwardS = splits[med][2];
    if (options.baseline) {
      report.storeAllStepTimeS = median(baselineTimes);
      report.stepTimeRatio = median(ratios);
    }
    report.measuredPeakBytes = peak;
    report.peakRssBytes = peakRss();
    report.reservedPeakBytes = meter.reservedPeak();
    report.allocatedPeakBytes = meter.allocatedPeak();
    if (device.is_cuda()) {
      const char* conf = std::getenv("PYTORCH_CUDA_ALLOC_CONF");
      if (!conf) conf = std::getenv("PYTORCH_ALLOC_CONF");
      report.allocatorConfig = conf ? conf : "";
    }
    report.memorySource = meter.source();
    return report;
  } catch (const ShapeContradiction& e) {
    return badInput(e.what());
  } catch (const std::exception& e) {
    std::string what = e.what();
    return internalError("LibTorch failed: " + what.substr(0, what.find('\n')));
  }
}

} // namespace tbp::runtime
