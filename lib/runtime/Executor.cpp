// The training step under a schedule, with LibTorch. Stage boundaries are detached: F_all k
// runs stage k from leaves that stand for F_k, so autograd's graph (the tape) ends at the stage;
// B k backpropagates the adjoints of F_{k+1} through it and reads the adjoints of F_k off the
// leaves. Memory is measured by a counting wrapper around LibTorch's CPU allocator.

#include "tbp/runtime/Runtime.h"

#include "Kernels.h"

#include "tbp/ir/OpRules.h"
#include "tbp/plan/Planners.h"
#include "tbp/support/Bytes.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/variable.h>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <unordered_map>
#include <cmath>
#include <cstring>
#include <map>

namespace tbp::runtime {

namespace {

using ir::ValueId;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------------ counting allocator

/// Wraps LibTorch's CPU allocator and counts live and peak bytes of every tensor buffer.
class CountingAllocator final : public c10::Allocator {
public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}

  // The context is the data pointer itself, so raw_allocate (oneDNN's scratch buffers) works.
  c10::DataPtr allocate(size_t n) const override {
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

  /// The process-wide instance, installed on first use.
  static CountingAllocator& instance() {
    static CountingAllocator* counter = [] {
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
Expected<at::Tensor> materialize(const ir::Graph& g, const plan::StageModel& m, ValueId id, at::Generator& gen,
                                 const std::map<std::string, NpyArray>& given) {
  const ir::Value& v = g.value(id);
  std::vector<int64_t> shape(v.type.shape.begin(), v.type.shape.end());
  at::TensorOptions opts = at::TensorOptions().dtype(torchDType(v.type.dtype));
  auto it = given.find(v.name);
  if (it != given.end()) {
    const NpyArray& a = it->second;
    if (a.descr != npyDescr(v.type.dtype) || a.shape != shape)
      return badInput("--input " + v.name + ": the file holds " + a.descr + " " + ir::formatShape(a.shape) + ", the model needs " +
                      npyDescr(v.type.dtype) + " " + ir::formatShape(v.type.shape));
    at::Tensor t = at::empty(shape, opts);
    std::memcpy(t.data_ptr(), a.data.data(), a.data.size());
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
  // Integer inputs: labels for cross entropy lie in [0, classes); others are small indices.
  int64_t high = 2;
  for (ir::NodeId user : v.users) {
    const ir::Node& n = g.node(user);
    if (n.op == ir::Op::CrossEntropyLoss && n.inputs.size() > 1 && n.inputs[1] == id)
      high = std::max<int64_t>(g.value(n.inputs[0]).type.shape.back(), 1);
  }
  (void)m;
  return at::Tensor(at::randint(0, high, shape, gen, opts));
}

// ------------------------------------------------------------------ the step

struct Tape {
  std::vector<std::pair<ValueId, at::Tensor>> leaves;  ///< stand-ins for F_k
  std::vector<std::pair<ValueId, at::Tensor>> outputs; ///< stage outputs that carry adjoints
};

class Step {
public:
  Step(const ir::Graph& g, const plan::StageModel& m, std::vector<at::Tensor>& values, std::vector<ValueId> params, uint64_t seed)
      : g_(g), m_(m), vals_(values), params_(std::move(params)), tapes_(m.size() + 2), ckpts_(m.size() + 2),
        rngState_(m.size() + 2), generator_(at::detail::createCPUGenerator(seed ^ 0x5eedULL)) {}

  /// Runs the stream; returns the loss. Fills the measured timeline and the phase times.
  double run(const plan::Stream& stream, std::vector<uint64_t>* timeline, double* fwd, double* recompute, double* bwd) {
    CountingAllocator& counter = CountingAllocator::instance();
    std::vector<bool> forwarded(m_.size() + 2, false);
    double loss = 0;
    for (const plan::Instruction& instr : stream) {
      counter.resetPeak();
      auto t0 = Clock::now();
      switch (instr.kind) {
      case plan::InstrKind::ForwardCheckpoint:
      case plan::InstrKind::ForwardNone:
      case plan::InstrKind::ForwardAll: {
        forward(instr);
        double s = std::chrono::duration<double>(Clock::now() - t0).count();
        (forwarded[instr.stage] ? *recompute : *fwd) += s;
        forwarded[instr.stage] = true;
        break;
      }
      case plan::InstrKind::Loss: {
        ValueId l = m_.outputFrontier.front();
        loss = vals_[l].item<double>();
        adj_[l] = at::ones_like(vals_[l]);
        break;
      }
      case plan::InstrKind::Backward:
        backward(instr.stage);
        *bwd += std::chrono::duration<double>(Clock::now() - t0).count();
        break;
      }
      if (timeline) timeline->push_back(counter.peak());
    }
    return loss;
  }

private:
  void forward(const plan::Instruction& instr) {
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
      for (ValueId v : m_.frontier(k)) {
        if (g_.value(v).kind != ir::ValueKind::Activation) continue;
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
    if (stochastic(s)) {
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
        KernelContext context{&generator_, firstForward, &vals_};
        std::vector<at::Tensor> outs = kernelFor(node.op)(context, g_, node, inputs);
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
      }
    if (withGrad) {
      // A leaf is kept only to read its gradient after B k. Unless the stage's ops saved it,
      // its buffer is not needed: swap it for an empty one so it is freed now, as the simulator
      // assumes (the autograd graph recorded the shape it needs).
      for (auto& [v, leaf] : tape.leaves)
        if (!std::binary_search(s.tape.begin(), s.tape.end(), v) && !vals_[v].defined())
          leaf.set_data(at::empty({0}, leaf.options()));
    }
    current_ = k + 1;
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

  bool stochastic(const plan::Stage& s) const {
    for (uint32_t p = s.first; p <= s.last; ++p)
      if (g_.node(m_.order[p]).op == ir::Op::Dropout) return true;
    return false;
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
        if (!heldByCheckpoint(v)) releaseTapeOutput(v);
      }
    current_ = 0;
  }

  void backward(size_t k) {
    dropCurrent();
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
    for (ValueId v : s.produced) adj_.erase(v);
    for (size_t i = 0; i < got.size(); ++i) {
      if (!got[i].defined()) continue;
      auto [v, isParam] = targets[i];
      if (isParam) {
        at::Tensor& grad = vals_[v].mutable_grad();
        grad = grad.defined() ? grad + got[i] : got[i];
        continue;
      }
      auto it = adj_.find(v);
      if (it == adj_.end()) adj_[v] = got[i];
      else it->second = it->second + got[i];
    }
    tapes_[k] = Tape{};
    ckpts_[k].clear();
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
  at::Generator generator_;
  size_t current_ = 1;
};

uint64_t peakRss() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
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

Expected<RunReport> runTrainingStep(const ir::Graph& g, const plan::StageModel& m, const plan::Stream& stream, const RunOptions& options) {
  if (options.device != "cpu") {
    // Say which part is missing: LibTorch's CUDA support, a GPU, or tbp's CUDA executor.
    if (!at::hasCUDA())
      return usageError("--device cuda: the LibTorch this tbp is built with has no CUDA support (Debian's libtorch is CPU-only); use --device cpu");
    return usageError("--device cuda: LibTorch has CUDA, but tbp's runtime executes and measures on the CPU only so far; use --device cpu");
  }
  std::vector<std::string> missing = missingKernels(g);
  if (!missing.empty()) {
    std::string list;
    for (const std::string& s : missing) list += (list.empty() ? "" : ", ") + s;
    return badInput("the runtime has no kernel yet for: " + list);
  }
  for (const plan::Instruction& i : stream) (void)i;
  try {
    CountingAllocator& counter = CountingAllocator::instance();
    if (options.threads > 0) at::set_num_threads(options.threads);
    for (const auto& [name, array] : options.inputs) {
      auto id = g.findValue(name);
      if (!id || g.value(*id).kind != ir::ValueKind::Input)
        return usageError("--input " + name + ": the model has no graph input of that name");
    }
    at::Generator gen = at::detail::createCPUGenerator(options.seed);
    std::vector<at::Tensor> base(g.numValues());
    std::vector<ValueId> params;
    for (ValueId v = 0; v < g.numValues(); ++v) {
      if (g.value(v).kind == ir::ValueKind::Activation) continue;
      Expected<at::Tensor> t = materialize(g, m, v, gen, options.inputs);
      if (!t) return t.status();
      base[v] = *t;
      if (g.value(v).kind == ir::ValueKind::Parameter) {
        base[v].requires_grad_(true);
        params.push_back(v);
      }
    }
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
        grad = grad.contiguous();
        NpyArray a{npyDescr(g.value(p).type.dtype), g.value(p).type.shape, std::string(grad.nbytes(), '\0')};
        std::memcpy(a.data.data(), grad.data_ptr(), grad.nbytes());
        out.push_back({g.value(p).name, std::move(a)});
      }
      return out;
    };
    auto runOnce = [&](const plan::Stream& s, std::vector<uint64_t>* timeline, double* fwd, double* rec, double* bwd) {
      for (ValueId p : params) base[p].mutable_grad() = at::Tensor();
      std::vector<at::Tensor> vals = base;
      Step step(g, m, vals, params, options.seed);
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
    std::vector<double> times;
    std::vector<std::array<double, 3>> splits;
    uint64_t peak = 0;
    const int total = options.warmup + std::max(options.steps, 1);
    for (int s = 0; s < total; ++s) {
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
            at::Tensor got = at::from_blob(report.gradients[i].array.data.data(), base[params[i]].sizes(), base[params[i]].options().requires_grad(false));
            at::Tensor ref = at::from_blob(reference[i].array.data.data(), base[params[i]].sizes(), base[params[i]].options().requires_grad(false));
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
          if (check.lossDifference > options.atol + options.rtol * std::fabs(referenceLoss)) check.passed = false;
          report.gradCheck = check;
        }
        if (!options.keepGradients) report.gradients.clear();
      }
      counter.resetPeak();
      optimizerStep();
      if (!timeline.empty()) timeline.back() = std::max(timeline.back(), counter.peak());
      double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      if (s < options.warmup) continue;
      report.loss = loss;
      times.push_back(seconds);
      splits.push_back({fwd, rec, bwd});
      for (size_t i = 0; i < timeline.size(); ++i)
        if (timeline[i] > peak) {
          peak = timeline[i];
          report.measuredPeakInstruction = i;
        }
    }
    std::vector<size_t> idx(times.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return times[a] < times[b]; });
    size_t med = idx[idx.size() / 2];
    report.stepTimeS = times[med];
    report.forwardS = splits[med][0];
    report.recomputeS = splits[med][1];
    report.backwardS = splits[med][2];
    report.measuredPeakBytes = peak;
    report.peakRssBytes = peakRss();
    return report;
  } catch (const std::exception& e) {
    std::string what = e.what();
    return internalError("LibTorch failed: " + what.substr(0, what.find('\n')));
  }
}

} // namespace tbp::runtime
