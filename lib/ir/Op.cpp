#include "tbp/ir/Op.h"

#include <algorithm>
#include <array>
#include <string>

namespace tbp::ir {

namespace {

constexpr FlopRule Zero = FlopRule::Zero, OutElem = FlopRule::OutElem, InElem = FlopRule::InElem,
                   MatMul = FlopRule::MatMul, Gemm = FlopRule::Gemm, Conv = FlopRule::Conv,
                   ConvTranspose = FlopRule::ConvTranspose, Einsum = FlopRule::Einsum,
                   Pool = FlopRule::Pool;
constexpr ExtraSaved None = ExtraSaved::None, Mask = ExtraSaved::Mask,
                     MaxIndices = ExtraSaved::MaxIndices, BatchStats = ExtraSaved::BatchStats,
                     RowStats = ExtraSaved::RowStats, InstanceStats = ExtraSaved::InstanceStats,
                     GroupStats = ExtraSaved::GroupStats;

constexpr OpInfo kOpInfos[] = {
#define TBP_OP(id, flops, perElem, savedIn, savedOut, extra, noGradIn, crossIn, bwdScratch, minIn, maxIn) \
  OpInfo{#id, flops, perElem, savedIn, savedOut, extra, noGradIn, crossIn, bwdScratch, minIn, maxIn},
#include "tbp/ir/Ops.def"
#undef TBP_OP
};
static_assert(std::size(kOpInfos) == kNumOps, "one OpInfo per op in Ops.def");

} // namespace

const OpInfo& opInfo(Op op) { return kOpInfos[static_cast<size_t>(op)]; }

std::optional<Op> opFromName(std::string_view name) {
  static const auto sorted = [] {
    std::array<std::pair<std::string_view, Op>, kNumOps> table{};
    for (size_t i = 0; i < kNumOps; ++i) table[i] = {kOpInfos[i].name, static_cast<Op>(i)};
    std::sort(table.begin(), table.end());
    return table;
  }();
  auto it = std::lower_bound(sorted.begin(), sorted.end(), std::make_pair(name, Op{}),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  if (it == sorted.end() || it->first != name) return std::nullopt;
  return it->second;
}

} // namespace tbp::ir
