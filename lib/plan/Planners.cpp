#include "tbp/plan/Planners.h"

#include "tbp/support/Bytes.h"
#include "tbp/support/Hash.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <memory>
#include <set>
#include <unordered_map>

namespace tbp::plan {

namespace {

struct PlannerName {
  PlannerKind kind;
  const char* name;
};
constexpr PlannerName kPlannerNames[] = {{PlannerKind::StoreAll, "store-all"},
                                         {PlannerKind::Sqrt, "sqrt"},
                                         {PlannerKind::IntervalTree, "interval-tree"},
                                         {PlannerKind::Revolve, "revolve"},
                                         {PlannerKind::Optimal, "optimal"}};

/// Splits stages 1..L into `parts` contiguous, non-empty ranges of roughly equal forward cost.
std::vector<std::pair<uint32_t, uint32_t>> splitByCost(const StageModel& m, size_t parts) {
  const uint32_t L = static_cast<uint32_t>(m.size());
  parts = std::max<size_t>(1, std::min<size_t>(parts, L));
  auto weight = [&](uint32_t k) { return static_cast<long double>(m.stage(k).cost) + 1.0L; };
  long double total = 0;
  for (uint32_t k = 1; k <= L; ++k) total += weight(k);
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  uint32_t start = 1;
  long double acc = 0;
  for (size_t p = 0; p < parts; ++p) {
    uint32_t end = start;
    acc += weight(start);
    if (p + 1 == parts) {
      end = L;
    } else {
      const long double target = total * static_cast<long double>(p + 1) / static_cast<long double>(parts);
      const uint32_t lastAllowed = L - static_cast<uint32_t>(parts - 1 - p); // leave a stage per later part
      while (end < lastAllowed && acc + weight(end + 1) / 2 < target) acc += weight(++end);
    }
    ranges.push_back({start, end});
    start = end + 1;
  }
  return ranges;
}

void emitStoreAll(Stream& out, uint32_t a, uint32_t b, size_t L) {
  for (uint32_t k = a; k <= b; ++k) out.push_back(fall(k));
  if (b == L) out.push_back(loss());
  for (uint32_t k = b + 1; k-- > a;) out.push_back(bwd(k));
}

/// Advances from F_a (a checkpoint already, or the current state) through stage b without
/// autograd, leaving F_{b+1} as the current state.
void emitAdvance(Stream& out, uint32_t a, uint32_t b, bool inputIsCheckpoint) {
  out.push_back(inputIsCheckpoint ? fn(a) : fck(a));
  for (uint32_t k = a + 1; k <= b; ++k) out.push_back(fn(k));
}

Candidate makeCandidate(const StageModel& m, Stream stream, Params params) {
  Expected<SimResult> sim = simulate(m, stream);
  TBP_CHECK(sim.hasValue()); // planners only emit valid streams; a failure here is a bug
  return Candidate{std::move(stream), std::move(*sim), std::move(params)};
}

// ------------------------------------------------------------------------------ interval tree

struct TreeEmitter {
  const std::vector<std::pair<uint32_t, uint32_t>>& blocks;
  size_t maxDepth;
  size_t L;
  Stream& out;

  void run(size_t lo, size_t hi, size_t depth, bool inputIsCheckpoint) {
    uint32_t a = blocks[lo].first, b = blocks[hi].second;
    if (lo == hi || depth >= maxDepth) {
      emitStoreAll(out, a, b, L);
      return;
    }
    size_t mid = (lo + hi) / 2;
    emitAdvance(out, a, blocks[mid].second, inputIsCheckpoint);
    run(mid + 1, hi, depth + 1, false);
    run(lo, mid, depth + 1, true);
  }
};

// ------------------------------------------------------------------------------ revolve

struct RevolveTable {
  std::vector<std::vector<uint64_t>> t;     // t[l][s]
  std::vector<std::vector<uint32_t>> split; // best advance m for (l, s)

  RevolveTable(size_t maxL, size_t maxS) : t(maxL + 1, std::vector<uint64_t>(maxS + 1, 0)), split(maxL + 1, std::vector<uint32_t>(maxS + 1, 0)) {
    for (size_t l = 2; l <= maxL; ++l) {
      t[l][1] = l * (l - 1) / 2;
      for (size_t s = 2; s <= maxS; ++s) {
        uint64_t best = UINT64_MAX;
        uint32_t bestM = 1;
        for (size_t m = 1; m < l; ++m) {
          uint64_t c = m + t[l - m][s - 1] + t[m][s];
          if (c < best) {
            best = c;
            bestM = static_cast<uint32_t>(m);
          }
        }
        t[l][s] = best;
        split[l][s] = bestM;
      }
    }
  }
};

struct RevolveEmitter {
  const RevolveTable& table;
  size_t L;
  Stream& out;

  void run(uint32_t a, uint32_t b, size_t s, bool inputIsCheckpoint) {
    if (a == b) {
      emitStoreAll(out, a, a, L);
      return;
    }
    size_t l = b - a + 1;
    if (s <= 1) {
      for (uint32_t i = b; i > a; --i) {
        emitAdvance(out, a, i - 1, inputIsCheckpoint);
        inputIsCheckpoint = true;
        emitStoreAll(out, i, i, L);
      }
      emitStoreAll(out, a, a, L);
      return;
    }
    uint32_t m = table.split[l][s];
    emitAdvance(out, a, a + m - 1, inputIsCheckpoint);
    run(a + m, b, s - 1, false);
    run(a, a + m - 1, s, true);
  }
};

// ------------------------------------------------------------------------------ optimal

/// The optimal planner's hot loop, O(L³·M) over a program: for every memory size `mem` from
/// `need` to `last`, whether splitting at stage `split` (cost base + right[mem - rightShift] +
/// left[mem - leftShift]; need >= both shifts) beats the row's best so far. Branch-free so that it vectorizes, and compiled for AVX2 as
/// well as the baseline where GCC can pick the variant at load time (halves planning there).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
void relaxSplit(float* __restrict best, int32_t* __restrict pick, const float* __restrict right, size_t rightShift,
                const float* __restrict left, size_t leftShift, float base, int32_t split, size_t need, size_t last) {
  for (size_t mem = need; mem <= last; ++mem) {
    const float c = base + right[mem - rightShift] + left[mem - leftShift];
    const float old = best[mem];
    const int32_t better = -static_cast<int32_t>(c < old); // all ones or zero
    pick[mem] = (split & better) | (pick[mem] & ~better);
    best[mem] = c < old ? c : old;
  }
}

/// The memory of an OptimalDp's tables, kept for the programs that run one after another on
/// the same grid: a table is up to hundreds of MiB, and fresh pages, each faulted in on first
/// touch, took about a fifth of planning.
struct DpTables {
  std::unique_ptr<float[]> cost;
  std::unique_ptr<int16_t[]> choice;
  size_t capacity = 0;
  void reserve(size_t entries) {
    if (entries <= capacity) return;
    cost.reset(new float[entries]);
    choice.reset(new int16_t[entries]);
    capacity = entries;
  }
};

/// Rotor-style dynamic program over the stage chain (docs/theory.md). Memory is counted in
/// slots, every quantity rounded up, so a schedule's slot count bounds its simulated peak.
class OptimalDp {
public:
  /// `cacheStage[k]`: stage k's cache is held wherever this program runs it, so its forwards
  /// are replays of the cheap ops only (empty: no stage caches, the plain Rotor program).
  /// `tables` holds the program's tables for as long as it lives (its old contents are
  /// overwritten).
  OptimalDp(const StageModel& m, uint64_t slotBytes, size_t slots, DpTables& tables, std::vector<bool> cacheStage = {})
      : m_(m), q_(std::max<uint64_t>(slotBytes, 1)), M_(slots), L_(m.size()), cacheStage_(std::move(cacheStage)) {
    tables.reserve(3 * pairs() * (M_ + 1));
    table_ = tables.cost.get();
    choice_ = tables.choice.get();
    cacheStage_.resize(L_ + 2, false);
    prepare();
    solve();
  }

  /// The schedule for slot budget `mem`, or an empty stream when none fits. Only without
  /// caching stages: with them, this program prices replays (FirstPassDp starts the step).
  Stream stream(size_t mem) const {
    Stream out;
    if (cost(Mode::Ckpt, 1, L_, mem) == kInf) return out;
    emit(out, Mode::Ckpt, 1, static_cast<uint32_t>(L_), mem);
    return out;
  }
  size_t slots() const { return M_; }

private:
  friend class FirstPassDp;
  enum class Mode : uint8_t { Ckpt = 0, CurAll = 1, CurN = 2 };
  static constexpr double kInf = std::numeric_limits<double>::infinity();
  /// Table entries: single precision halves the memory of the O(L²·M) tables; a near-tie
  /// resolved differently costs nothing, since every stream is simulated before it is chosen.
  using Cost = float;
  static constexpr int16_t kNone = -2, kFall = -1; // choice codes; >= 1 is a split stage

  uint64_t slotsOf(uint64_t bytes) const { return (bytes + q_ - 1) / q_; }

  void prepare() {
    auto bytesOf = [&](const std::vector<ir::ValueId>& vs) {
      uint64_t b = 0;
      for (ir::ValueId v : vs) b += m_.valueBytes[v];
      return b;
    };
    auto setMinus = [](std::vector<ir::ValueId> a, const std::vector<ir::ValueId>& b) {
      std::vector<ir::ValueId> out;
      std::vector<ir::ValueId> sb(b);
      std::sort(sb.begin(), sb.end());
      for (ir::ValueId v : a)
        if (!std::binary_search(sb.begin(), sb.end(), v)) out.push_back(v);
      return out;
    };
    X_.assign(L_ + 2, 0);
    Tin_.assign(L_ + 2, 0);
    Tout_.assign(L_ + 2, 0);
    Ofree_.assign(L_ + 2, 0);
    AD_.assign(L_ + 2, 0);
    ff_.assign(L_ + 2, 0);
    fa_.assign(L_ + 2, 0);
    fe_.assign(L_ + 2, 0);
    bb_.assign(L_ + 2, 0);
    cost_.assign(L_ + 2, 0);
    costElided_.assign(L_ + 2, 0);
    cacheCum_.assign(L_ + 2, 0);
    gradCum_.assign(L_ + 2, 0);
    for (size_t k = 1; k <= L_; ++k) gradCum_[k] = gradCum_[k - 1] + m_.stage(k).gradientBytes;
    for (size_t k = 1; k <= L_; ++k) cacheCum_[k] = cacheCum_[k - 1] + (cacheStage_[k] ? m_.stage(k).cacheableBytes : 0);
    for (size_t k = 1; k <= L_ + 1; ++k) {
      const auto& F = m_.frontier(k);
      X_[k] = slotsOf(bytesOf(F));
      uint64_t ad = 0; // adjoints of F_k, one buffer per gradient group
      std::vector<ir::ValueId> groups;
      for (ir::ValueId v : F)
        if (m_.requiresGrad[v]) {
          ir::ValueId group = m_.gradGroup[v] != ir::kNone ? m_.gradGroup[v] : v;
          if (std::find(groups.begin(), groups.end(), group) != groups.end()) continue;
          groups.push_back(group);
          ad += m_.valueBytes[group];
        }
      AD_[k] = slotsOf(ad);
    }
    for (size_t k = 1; k <= L_; ++k) {
      const Stage& s = m_.stage(k);
      const auto& F = m_.frontier(k);
      std::vector<ir::ValueId> tapeOut = setMinus(s.tape, F);
      Tin_[k] = slotsOf(bytesOf(s.tape) - bytesOf(tapeOut));
      // Cached outputs the tape saves are held by the cache already (cacheCum_).
      if (cacheStage_[k]) tapeOut = setMinus(tapeOut, s.cacheable);
      Tout_[k] = slotsOf(bytesOf(tapeOut) + s.tapeExtraBytes);
      Ofree_[k] = slotsOf(bytesOf(setMinus(m_.frontier(k + 1), s.tape)));
      ff_[k] = slotsOf(s.forwardTransientBytes);
      fa_[k] = slotsOf(s.forwardAllTransientBytes);
      bb_[k] = slotsOf(s.backwardTransientBytes);
      // Every stage runs its first forward once at full cost whatever the schedule, so a
      // caching stage's forwards are all priced as replays: the difference is a constant.
      cost_[k] = static_cast<double>(cacheStage_[k] ? s.replayCost : s.cost);
      // `F_all k` right before `B k` (the base case below) elides the stage's contractions
      // whose outputs only leave it (plan::elidesForward), unless the stage's cache is held.
      const bool elides = !cacheStage_[k] && !s.elidable.empty() && k < L_;
      costElided_[k] = elides ? static_cast<double>(s.cost - s.elidableCost) : cost_[k];
      fe_[k] = elides ? slotsOf(s.forwardAllElidedTransientBytes) : fa_[k];
    }
  }

  /// Rows of (mode, i, j) for 1 <= i <= j <= L only, packed by j (a subproblem never has
  /// i > j): half the memory, and half the filling, of a square table.
  size_t pairs() const { return L_ * (L_ + 1) / 2; }
  size_t index(Mode mode, size_t i, size_t j, size_t mem) const {
    return (static_cast<size_t>(mode) * pairs() + j * (j - 1) / 2 + (i - 1)) * (M_ + 1) + mem;
  }
  double cost(Mode mode, size_t i, size_t j, size_t mem) const { return table_[index(mode, i, j, mem)]; }

  /// Input bytes inside the budget for a subproblem starting at stage i in `mode`.
  uint64_t inputInside(Mode mode, size_t i) const {
    switch (mode) {
    case Mode::Ckpt: return 0;
    case Mode::CurAll: return Ofree_[i - 1];
    case Mode::CurN: return X_[i];
    }
    return 0;
  }
  /// Slots of the parameter gradients that B i..B j make. A subproblem i..j runs after the
  /// backward of every stage past j, so `mem` of a subproblem excludes the gradients those
  /// made; the ones of i..j appear during its own backward sweep.
  uint64_t gradSlots(size_t i, size_t j) const { return i > j ? 0 : slotsOf(gradCum_[j] - gradCum_[i - 1]); }
  /// Adjoint bytes held while stages i..j run forward: none before the loss is seeded.
  uint64_t adjointBefore(size_t j) const { return j == L_ ? 0 : AD_[j + 1]; }
  /// Slots of the outputs that stages i..j cache. A subproblem's `mem` includes them: held
  /// from its start (exactly so for replays; an over-count during the first forward) until
  /// each stage's backward.
  uint64_t cacheSlots(size_t i, size_t j) const { return i > j ? 0 : slotsOf(cacheCum_[j] - cacheCum_[i - 1]); }

  void solve() {
    // The tables are not cleared: every row is set below before it is read (they reach
    // hundreds of MiB at a few hundred stages, and clearing them cost a quarter of planning).
    rowPick_.assign(M_ + 1, kNone);
    const Mode modes[] = {Mode::Ckpt, Mode::CurAll, Mode::CurN};
    for (size_t len = 1; len <= L_; ++len) {
      for (size_t i = 1; i + len - 1 <= L_; ++i) {
        size_t j = i + len - 1;
        for (Mode mode : modes) {
          const uint64_t phi = inputInside(mode, i);
          const uint64_t keep = mode == Mode::Ckpt ? 0 : std::min(phi, Tin_[i]);
          const uint64_t a = adjointBefore(j);
          const uint64_t persistent = mode == Mode::Ckpt ? 0 : phi;
          const uint64_t cached = cacheSlots(i, j), cachedI = cacheSlots(i, i);
          // The row of (mode, i, j) over all memory sizes is contiguous: fill it option by
          // option (F_all first, then the splits k in order; ties keep the earlier option).
          // The choices go to a 32-bit row first: with the costs' 32 bits, the split loop
          // below vectorizes (it is the program's hot loop, O(L³·M)).
          Cost* __restrict best = &table_[index(mode, i, j, 0)];
          int32_t* __restrict pick = rowPick_.data();
          std::fill(best, best + M_ + 1, static_cast<Cost>(kInf));
          std::fill(rowPick_.begin(), rowPick_.end(), int32_t{kNone});
          // F_all i, then the rest (or B i directly when i == j).
          if (i == j) {
            const uint64_t adjAtB = i == L_ ? AD_[L_ + 1] : AD_[i + 1];
            const uint64_t need = std::max(a + phi + fe_[i] + cached, adjAtB + keep + Tout_[i] + bb_[i] + gradSlots(i, i) + cachedI);
            for (size_t mem = need; mem <= M_; ++mem) {
              best[mem] = static_cast<Cost>(costElided_[i]);
              pick[mem] = kFall;
            }
          } else {
            const uint64_t taken = keep + Tout_[i] + cachedI;
            const uint64_t need = std::max({a + phi + fa_[i] + cached, taken, AD_[i + 1] + taken + bb_[i] + gradSlots(i, j)});
            const Cost* inner = &table_[index(Mode::CurAll, i + 1, j, 0)];
            for (size_t mem = need; mem <= M_; ++mem) {
              const double c = cost_[i] + inner[mem - taken];
              if (c < best[mem]) {
                best[mem] = static_cast<Cost>(c);
                pick[mem] = kFall;
              }
            }
          }
          // Checkpoint F_i, advance to stage k without autograd, solve k..j, then i..k-1.
          if (i < j) {
            uint64_t advancePeak = a + phi + ff_[i] + cached;
            double advanceCost = cost_[i];
            for (size_t k = i + 1; k <= j; ++k) {
              if (k > i + 1) {
                advancePeak = std::max(advancePeak, a + persistent + X_[k - 1] + ff_[k - 1] + cached);
                advanceCost += cost_[k - 1];
              }
              if (advancePeak > M_) break;
              const uint64_t heldLeft = cacheSlots(i, k - 1); // the left part's cache, held meanwhile
              const uint64_t made = gradSlots(k, j);
              const uint64_t need = std::max(advancePeak, persistent + std::max(heldLeft, made));
              // Index `mem` reads the right part at mem - persistent - heldLeft and the left
              // part at mem - persistent - made.
              relaxSplit(best, pick, &table_[index(Mode::CurN, k, j, 0)], persistent + heldLeft, &table_[index(Mode::Ckpt, i, k - 1, 0)],
                         persistent + made, static_cast<Cost>(advanceCost), static_cast<int32_t>(k), need, M_);
            }
          }
          int16_t* row = &choice_[index(mode, i, j, 0)];
          for (size_t mem = 0; mem <= M_; ++mem) row[mem] = static_cast<int16_t>(pick[mem]);
        }
      }
    }
  }

  void emit(Stream& out, Mode mode, uint32_t i, uint32_t j, size_t mem) const {
    int16_t pick = choice_[index(mode, i, j, mem)];
    TBP_CHECK(pick != kNone);
    const uint64_t phi = inputInside(mode, i);
    const uint64_t keep = mode == Mode::Ckpt ? 0 : std::min(phi, Tin_[i]);
    if (pick == kFall) {
      out.push_back(fall(i));
      if (i == j) {
        if (i == L_) out.push_back(loss());
      } else {
        emit(out, Mode::CurAll, i + 1, j, mem - keep - Tout_[i] - cacheSlots(i, i));
      }
      out.push_back(bwd(i));
      return;
    }
    const uint32_t k = static_cast<uint32_t>(pick);
    const size_t rest = mem - (mode == Mode::Ckpt ? 0 : phi);
    emitAdvance(out, i, k - 1, mode == Mode::Ckpt);
    emit(out, Mode::CurN, k, j, rest - cacheSlots(i, k - 1));
    emit(out, Mode::Ckpt, i, k - 1, rest - gradSlots(k, j));
  }

  const StageModel& m_;
  uint64_t q_;
  size_t M_, L_;
  std::vector<uint64_t> X_, Tin_, Tout_, Ofree_, AD_, ff_, fa_, fe_, bb_;
  std::vector<double> cost_;
  std::vector<double> costElided_; ///< cost_ of `F_all k` right before `B k` (elided contractions)
  std::vector<uint64_t> gradCum_; ///< bytes of parameter gradients made by B 1..B k
  std::vector<bool> cacheStage_;  ///< per stage: its first forward caches
  std::vector<uint64_t> cacheCum_; ///< bytes cached by stages 1..k
  Cost* table_ = nullptr;      ///< 3·pairs()·(M+1) costs, in the caller's DpTables
  int16_t* choice_ = nullptr;  ///< as many choices
  std::vector<int32_t> rowPick_; ///< choices of the row being filled (solve)
};

/// Which stages may cache their contractions' outputs (selective recomputation): those whose
/// forward cost saved per byte kept reach a threshold. A few thresholds, from "every stage
/// that can" to "only the most profitable fifth", each with its own replay program; the
/// first-pass program decides where caching pays, and the budget decides among the streams.
std::vector<std::pair<std::string, std::vector<bool>>> cachePolicies(const StageModel& m) {
  const size_t L = m.size();
  std::vector<double> ratio(L + 2, -1.0);
  std::vector<double> ratios;
  for (size_t k = 1; k <= L; ++k) {
    const Stage& s = m.stage(k);
    if (s.cacheable.empty() || s.cacheableBytes == 0 || s.cost <= s.replayCost) continue;
    ratio[k] = static_cast<double>(s.cost - s.replayCost) / static_cast<double>(s.cacheableBytes);
    ratios.push_back(ratio[k]);
  }
  std::vector<std::pair<std::string, std::vector<bool>>> out;
  if (ratios.empty()) return out;
  std::sort(ratios.begin(), ratios.end());
  std::vector<double> thresholds;
  for (double quantile : {0.0, 0.5, 0.8}) {
    const double t = ratios[static_cast<size_t>(quantile * static_cast<double>(ratios.size() - 1))];
    if (thresholds.empty() || t != thresholds.back()) thresholds.push_back(t);
  }
  for (double t : thresholds) {
    std::vector<bool> cacheStage(L + 2, false);
    for (size_t k = 1; k <= L; ++k) cacheStage[k] = ratio[k] >= t && ratio[k] >= 0;
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", t);
    out.emplace_back(text, std::move(cacheStage));
  }
  return out;
}

/// The first pass of the step over stages i..L, where each stage's first forward happens, on
/// top of two replay programs: `none` (no stage caches) and `cached` (its caching stages hold
/// their kept outputs). A split advances through i..k-1 for the first time and decides there
/// whether those stages cache (the segment's later replays are priced by `cached`) or not
/// (priced by `none`): selective recomputation wherever it pays for its memory.
class FirstPassDp {
  using Mode = OptimalDp::Mode;

public:
  FirstPassDp(const OptimalDp& none, const OptimalDp& cached) : n_(none), c_(cached), L_(none.L_), M_(none.M_) {
    table_.assign(3 * (L_ + 2) * (M_ + 1), OptimalDp::kInf);
    choice_.assign(table_.size(), OptimalDp::kNone);
    for (size_t i = L_; i >= 1; --i)
      for (Mode mode : {Mode::Ckpt, Mode::CurAll, Mode::CurN}) solve(mode, i);
  }

  Stream stream(size_t mem) const {
    Stream out;
    if (table_[index(Mode::Ckpt, 1, mem)] == OptimalDp::kInf) return out;
    emit(out, Mode::Ckpt, 1, mem);
    return out;
  }

private:
  static constexpr int16_t kCaching = 4096; ///< added to a split stage when its segment caches

  size_t index(Mode mode, size_t i, size_t mem) const { return (static_cast<size_t>(mode) * (L_ + 2) + i) * (M_ + 1) + mem; }

  void solve(Mode mode, size_t i) {
    const OptimalDp& n = n_;
    const uint64_t phi = n.inputInside(mode, i);
    const uint64_t keep = mode == Mode::Ckpt ? 0 : std::min(phi, n.Tin_[i]);
    const uint64_t persistent = mode == Mode::Ckpt ? 0 : phi;
    OptimalDp::Cost* best = &table_[index(mode, i, 0)];
    int16_t* pick = &choice_[index(mode, i, 0)];
    // F_all i keeps its tape from this first forward; nothing of stage i is ever replayed.
    if (i == L_) {
      const uint64_t need = std::max(phi + n.fa_[i], n.AD_[L_ + 1] + keep + n.Tout_[i] + n.bb_[i] + n.gradSlots(i, i));
      for (size_t mem = need; mem <= M_; ++mem) {
        best[mem] = static_cast<OptimalDp::Cost>(n.cost_[i]);
        pick[mem] = OptimalDp::kFall;
      }
      return;
    }
    const uint64_t taken = keep + n.Tout_[i];
    const uint64_t need = std::max({phi + n.fa_[i], taken, n.AD_[i + 1] + taken + n.bb_[i] + n.gradSlots(i, L_)});
    const OptimalDp::Cost* inner = &table_[index(Mode::CurAll, i + 1, 0)];
    for (size_t mem = need; mem <= M_; ++mem) {
      const double c = n.cost_[i] + inner[mem - taken];
      if (c < best[mem]) {
        best[mem] = static_cast<OptimalDp::Cost>(c);
        pick[mem] = OptimalDp::kFall;
      }
    }
    // Advance through i..k-1 (first forwards, full cost), solve k..L, replay i..k-1.
    uint64_t advancePeak = phi + n.ff_[i];
    double advanceCost = n.cost_[i];
    for (size_t k = i + 1; k <= L_; ++k) {
      if (k > i + 1) {
        advancePeak = std::max(advancePeak, persistent + n.X_[k - 1] + n.ff_[k - 1]);
        advanceCost += n.cost_[k - 1];
      }
      const uint64_t made = n.gradSlots(k, L_);
      const OptimalDp::Cost* right = &table_[index(Mode::CurN, k, 0)];
      for (const OptimalDp* replay : {&n_, &c_}) {
        // The segment's caches build up during the advance: counted from its start.
        const uint64_t held = replay == &c_ ? c_.cacheSlots(i, k - 1) : 0;
        if (replay == &c_ && held == 0) continue; // nothing to cache: the same as `none`
        const uint64_t peak = advancePeak + held;
        if (peak > M_) continue;
        const OptimalDp::Cost* left = &replay->table_[replay->index(Mode::Ckpt, i, k - 1, 0)];
        const int16_t code = static_cast<int16_t>(k + (replay == &c_ ? kCaching : 0));
        for (size_t mem = std::max(peak, persistent + std::max(held, made)); mem <= M_; ++mem) {
          const size_t rest = mem - persistent;
          const double c = advanceCost + right[rest - held] + left[rest - made];
          if (c < best[mem]) {
            best[mem] = static_cast<OptimalDp::Cost>(c);
            pick[mem] = code;
          }
        }
      }
    }
  }

  void emit(Stream& out, Mode mode, size_t i, size_t mem) const {
    const OptimalDp& n = n_;
    const int16_t pick = choice_[index(mode, i, mem)];
    TBP_CHECK(pick != OptimalDp::kNone);
    const uint64_t phi = n.inputInside(mode, i);
    const uint64_t keep = mode == Mode::Ckpt ? 0 : std::min(phi, n.Tin_[i]);
    const uint32_t si = static_cast<uint32_t>(i);
    if (pick == OptimalDp::kFall) {
      out.push_back(fall(si));
      if (i == L_) out.push_back(loss());
      else emit(out, Mode::CurAll, i + 1, mem - keep - n.Tout_[i]);
      out.push_back(bwd(si));
      return;
    }
    const bool caching = pick >= kCaching;
    const uint32_t k = static_cast<uint32_t>(caching ? pick - kCaching : pick);
    const size_t rest = mem - (mode == Mode::Ckpt ? 0 : phi);
    const size_t first = out.size();
    emitAdvance(out, si, k - 1, mode == Mode::Ckpt);
    const OptimalDp& replay = caching ? c_ : n_;
    if (caching)
      for (size_t p = first; p < out.size(); ++p) out[p].cache = c_.cacheStage_[out[p].stage];
    emit(out, Mode::CurN, k, rest - (caching ? c_.cacheSlots(i, k - 1) : 0));
    replay.emit(out, Mode::Ckpt, si, k - 1, rest - n.gradSlots(k, L_));
  }

  const OptimalDp& n_;
  const OptimalDp& c_;
  size_t L_, M_;
  std::vector<OptimalDp::Cost> table_;
  std::vector<int16_t> choice_;
};

/// Adds a candidate unless the same stream is there already (hash first, then a full compare).
void addUnique(std::vector<Candidate>& out, std::unordered_multimap<uint64_t, size_t>& seen, const StageModel& m, Stream stream,
               Params params) {
  if (stream.empty()) return;
  Hasher h;
  for (const Instruction& i : stream) h.add(static_cast<int64_t>(static_cast<uint32_t>(i.kind) << 24 | (i.cache ? 1u << 23 : 0u) | i.stage));
  auto [first, last] = seen.equal_range(h.digest());
  for (auto it = first; it != last; ++it)
    if (out[it->second].stream == stream) return;
  seen.emplace(h.digest(), out.size());
  out.push_back(makeCandidate(m, std::move(stream), std::move(params)));
}

} // namespace

const char* plannerName(PlannerKind kind) {
  for (const PlannerName& p : kPlannerNames)
    if (p.kind == kind) return p.name;
  return "?";
}

std::optional<PlannerKind> parsePlanner(std::string_view name) {
  for (const PlannerName& p : kPlannerNames)
    if (name == p.name) return p.kind;
  return std::nullopt;
}

uint64_t revolveForwardSteps(uint64_t l, uint64_t s) {
  if (l <= 1) return 0;
  auto binom = [](uint64_t n, uint64_t k) -> uint64_t {
    if (k > n) return 0;
    long double r = 1;
    for (uint64_t i = 1; i <= k; ++i) r = r * static_cast<long double>(n - k + i) / static_cast<long double>(i);
    return static_cast<uint64_t>(std::llround(r));
  };
  uint64_t r = 0;
  while (binom(s + r, s) < l) ++r;
  return r * l - (r == 0 ? 0 : binom(s + r, r - 1));
}

Stream storeAllStream(size_t stages) {
  Stream out;
  emitStoreAll(out, 1, static_cast<uint32_t>(stages), stages);
  return out;
}

Stream sqrtStream(const StageModel& m, size_t segments) {
  auto ranges = splitByCost(m, segments);
  Stream out;
  for (size_t s = 0; s + 1 < ranges.size(); ++s) emitAdvance(out, ranges[s].first, ranges[s].second, false);
  emitStoreAll(out, ranges.back().first, ranges.back().second, m.size());
  for (size_t s = ranges.size() - 1; s-- > 0;) emitStoreAll(out, ranges[s].first, ranges[s].second, m.size());
  return out;
}

Stream intervalTreeStream(const StageModel& m, size_t blocks, size_t maxDepth) {
  auto ranges = splitByCost(m, blocks);
  Stream out;
  TreeEmitter{ranges, maxDepth, m.size(), out}.run(0, ranges.size() - 1, 0, false);
  return out;
}

Stream revolveStream(size_t stages, size_t snapshots) {
  snapshots = std::max<size_t>(1, std::min(snapshots, stages));
  RevolveTable table(stages, snapshots);
  Stream out;
  RevolveEmitter{table, stages, out}.run(1, static_cast<uint32_t>(stages), snapshots, false);
  return out;
}

std::vector<Candidate> candidates(const StageModel& m, PlannerKind kind, const PlanOptions& options) {
  std::vector<Candidate> out;
  std::unordered_multimap<uint64_t, size_t> seen;
  const size_t L = m.size();
  switch (kind) {
  case PlannerKind::StoreAll:
    addUnique(out, seen, m, storeAllStream(L), {});
    break;
  case PlannerKind::Sqrt: {
    size_t segments = std::max<size_t>(1, static_cast<size_t>(std::lround(std::sqrt(static_cast<double>(L)))));
    addUnique(out, seen, m, sqrtStream(m, segments), {{"segments", std::to_string(segments)}});
    break;
  }
  case PlannerKind::IntervalTree:
    for (size_t blocks = 1; blocks <= L; ++blocks) {
      size_t depthLimit = 0;
      while ((size_t{1} << depthLimit) < blocks) ++depthLimit;
      for (size_t depth = 0; depth <= depthLimit; ++depth)
        addUnique(out, seen, m, intervalTreeStream(m, blocks, depth),
                  {{"blocks", std::to_string(blocks)}, {"block_size", std::to_string((L + blocks - 1) / blocks)}, {"depth", std::to_string(depth)}});
    }
    break;
  case PlannerKind::Revolve:
    for (size_t s = 1; s <= L; ++s) addUnique(out, seen, m, revolveStream(L, s), {{"snapshots", std::to_string(s)}});
    break;
  case PlannerKind::Optimal: {
    Expected<SimResult> storeAll = simulate(m, storeAllStream(L));
    TBP_CHECK(storeAll.hasValue());
    // The dynamic programs for slots of q bytes, M of them, every slot count a candidate.
    DpTables noneTables, cachedTables; // reused by every program below
    auto plan = [&](uint64_t q, size_t M) {
      OptimalDp none(m, q, M, noneTables);
      for (size_t mem = 0; mem <= M; ++mem)
        addUnique(out, seen, m, none.stream(mem), {{"slot_bytes", std::to_string(q)}, {"slots", std::to_string(mem)}});
      if (!options.selective) return;
      for (const auto& [threshold, cacheStage] : cachePolicies(m)) {
        OptimalDp cachedReplays(m, q, M, cachedTables, cacheStage);
        FirstPassDp dp(none, cachedReplays);
        for (size_t mem = 0; mem <= M; ++mem)
          addUnique(out, seen, m, dp.stream(mem),
                    {{"slot_bytes", std::to_string(q)}, {"slots", std::to_string(mem)}, {"cache_min_cost_per_byte", threshold}});
      }
    };
    // The slots span the memory above the resident bytes up to the store-all peak, or up to
    // the budget when there is one below it: then the slot is the store-all grid's divided by
    // k = ⌊store-all range / budget range⌋, so every quantity rounded to it is at most what
    // it was rounded to that grid, and the schedules that grid finds under the budget are
    // found here too.
    const size_t slots = std::max<size_t>(1, options.memorySlots);
    auto grid = [&](uint64_t budget) {
      const uint64_t fullRange = storeAll->peakBytes - m.residentBytes;
      uint64_t range = fullRange, k = 1;
      if (budget > m.residentBytes && budget < storeAll->peakBytes) {
        range = budget - m.residentBytes;
        k = std::max<uint64_t>(1, fullRange / range);
      }
      const uint64_t q = options.slotBytes ? options.slotBytes : std::max<uint64_t>(1, (fullRange + slots * k - 1) / (slots * k));
      // Slots past the range for the terms rounded up (a schedule's slot count exceeds its
      // bytes / q by its rounding), L + 4 of them; the parameter gradients, which every
      // schedule ends up holding, come on top of the granularity cap. Until 2026-12-05 the
      // slack was 4L + 4, two thirds of the table at 128 stages: L + 4 chose the same stream
      // in 66 of 66 plans (3 exported models, 5 built-in workloads, 70/50/40/30 %/min, 64 and
      // 128 stages) in 41 % less time, and no slack at all chose a worse one in 55.
      const uint64_t gradSlots = (m.gradientBytes + q - 1) / q;
      return std::pair<uint64_t, size_t>(q, static_cast<size_t>(std::min<uint64_t>((range + q - 1) / q + L + 4, 4 * slots + 64 + gradSlots)));
    };
    const auto [q, M] = grid(options.budgetBytes);
    plan(q, M);
    // Nothing fits the budget: the store-all grid, so that the smallest feasible budget the
    // caller reports is the one this planner really has.
    if (options.budgetBytes && std::none_of(out.begin(), out.end(), [&](const Candidate& c) { return c.sim.peakBytes <= options.budgetBytes; }) &&
        grid(0) != std::make_pair(q, M))
      plan(grid(0).first, grid(0).second);
    if (!options.portfolio) break;
    for (PlannerKind other : {PlannerKind::StoreAll, PlannerKind::Sqrt, PlannerKind::IntervalTree, PlannerKind::Revolve})
      for (Candidate& c : candidates(m, other, options)) {
        c.params.insert(c.params.begin(), {"from", plannerName(other)});
        addUnique(out, seen, m, std::move(c.stream), std::move(c.params));
      }
    break;
  }
  }
  return out;
}

std::vector<Candidate> tightestCandidates(const StageModel& m, PlannerKind kind, const PlanOptions& options) {
  std::vector<Candidate> out = candidates(m, kind, options);
  if (kind != PlannerKind::Optimal) return out; // the other planners do not depend on the budget
  for (int round = 0; round < 3; ++round) {
    const uint64_t smallest = minFeasibleBytes(out);
    PlanOptions at = options;
    at.budgetBytes = smallest;
    std::vector<Candidate> more = candidates(m, kind, at);
    const uint64_t found = minFeasibleBytes(more);
    out.insert(out.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
    if (found >= smallest) break;
  }
  return out;
}

Expected<Plan> chooseCandidate(std::vector<Candidate> cands, PlannerKind kind, std::optional<uint64_t> budget) {
  TBP_CHECK(!cands.empty());
  Plan plan{kind, {}, UINT64_MAX};
  const Candidate* best = nullptr;
  for (const Candidate& c : cands) {
    plan.minFeasibleBytes = std::min(plan.minFeasibleBytes, c.sim.peakBytes);
    if (budget && c.sim.peakBytes > *budget) continue;
    if (!best || c.sim.forwardCost < best->sim.forwardCost ||
        (c.sim.forwardCost == best->sim.forwardCost && c.sim.peakBytes < best->sim.peakBytes))
      best = &c;
  }
  if (!best)
    return Status(ErrorCode::Infeasible, "no " + std::string(plannerName(kind)) + " schedule fits the budget of " +
                                             formatBytes(*budget) + " (" + std::to_string(*budget) +
                                             " bytes); the smallest feasible budget is " + formatBytes(plan.minFeasibleBytes) +
                                             " (" + std::to_string(plan.minFeasibleBytes) + " bytes)");
  plan.chosen = *best;
  return plan;
}

uint64_t minFeasibleBytes(const std::vector<Candidate>& cands) {
  uint64_t best = UINT64_MAX;
  for (const Candidate& c : cands) best = std::min(best, c.sim.peakBytes);
  return best;
}

Expected<Plan> planForBudget(const StageModel& m, PlannerKind kind, std::optional<uint64_t> budget, const PlanOptions& options) {
  PlanOptions forBudget = options;
  if (budget && forBudget.budgetBytes == 0) forBudget.budgetBytes = *budget;
  return chooseCandidate(candidates(m, kind, forBudget), kind, budget);
}

} // namespace tbp::plan
