// tbp's CPU pooling loops (lib/runtime/PoolLoops.h) against LibTorch's own kernels: the same
// values, indices and input gradients, bit for bit, over windows with padding, dilation, ceil
// mode and strides 1 and 2, on inputs with ties, NaNs and -inf.

#include "PoolLoops.h"

#include <ATen/ATen.h>
#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <vector>

using namespace tbp::runtime;

namespace {

struct Case {
  int64_t height, width;
  pool::Window2d window;
  bool ceilMode;
};

/// Random values on a coarse grid (many ties), a block of -inf at the start and NaNs in the
/// second half.
at::Tensor awkwardInput(int64_t planes, int64_t height, int64_t width, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::round(at::randn({1, planes, height, width}) * 2) / 2;
  float* p = x.data_ptr<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < std::min(n / 4, 2 * width); ++i) p[i] = -std::numeric_limits<float>::infinity();
  for (int64_t i = n / 2; i < n; i += 97) p[i] = std::numeric_limits<float>::quiet_NaN();
  return x;
}

bool sameBits(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), static_cast<size_t>(a.nbytes())) == 0;
}

} // namespace

TEST_CASE("the CPU max-pool loops give ATen's values, indices and gradients bit for bit") {
  const std::vector<Case> cases = {
      {32, 32, {3, 3, 2, 2, 1, 1, 1, 1}, false}, // resnet's stem
      {16, 16, {2, 2, 2, 2, 0, 0, 1, 1}, false}, // the U-Net's downsampling
      {13, 11, {3, 3, 1, 1, 1, 1, 1, 1}, false},
      {13, 11, {3, 3, 2, 2, 0, 0, 1, 1}, true},  // ceil mode on odd sizes
      {14, 15, {3, 2, 2, 3, 1, 1, 1, 1}, true},
      {17, 19, {2, 3, 1, 2, 1, 1, 2, 3}, false}, // dilated
      {1, 40, {1, 3, 1, 2, 0, 1, 1, 1}, false},  // a 1-D pool over a unit height
      {5, 6, {5, 6, 1, 1, 0, 0, 1, 1}, false},   // one window over the whole plane
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    const pool::Window2d& w = c.window;
    CAPTURE(c.height);
    CAPTURE(c.width);
    CAPTURE(w.kernelH);
    CAPTURE(w.strideW);
    const int64_t planes = 3;
    const at::Tensor x = awkwardInput(planes, c.height, c.width, seed++);
    auto [y, idx] = at::max_pool2d_with_indices(x, {w.kernelH, w.kernelW}, {w.strideH, w.strideW}, {w.padH, w.padW},
                                                {w.dilationH, w.dilationW}, c.ceilMode);
    const int64_t outH = pool::pooledSize(c.height, w.kernelH, w.padH, w.strideH, w.dilationH, c.ceilMode);
    const int64_t outW = pool::pooledSize(c.width, w.kernelW, w.padW, w.strideW, w.dilationW, c.ceilMode);
    REQUIRE(outH == y.size(2));
    REQUIRE(outW == y.size(3));

    at::Tensor ours = at::empty_like(y), ourIdx = at::empty_like(idx);
    std::vector<float> rowMax(static_cast<size_t>(outW));
    std::vector<int32_t> rowArg(static_cast<size_t>(outW));
    const int64_t plane = c.height * c.width, outPlane = outH * outW;
    for (int64_t p = 0; p < planes; ++p)
      pool::maxPoolPlane(x.data_ptr<float>() + p * plane, c.height, c.width, w, outH, outW,
                         ours.data_ptr<float>() + p * outPlane, ourIdx.data_ptr<int64_t>() + p * outPlane, rowMax.data(),
                         rowArg.data());
    CHECK(sameBits(ours, y));
    CHECK(sameBits(ourIdx, idx));
    CHECK(at::isnan(y).any().item<bool>()); // the NaN rule was exercised

    const at::Tensor g = at::randn(y.sizes());
    const at::Tensor gx = at::max_pool2d_with_indices_backward(g, x, {w.kernelH, w.kernelW}, {w.strideH, w.strideW},
                                                               {w.padH, w.padW}, {w.dilationH, w.dilationW}, c.ceilMode, idx);
    at::Tensor ourGx = at::zeros_like(x);
    for (int64_t p = 0; p < planes; ++p)
      pool::maxPoolBackwardPlane(g.data_ptr<float>() + p * outPlane, ourIdx.data_ptr<int64_t>() + p * outPlane, outPlane,
                                 ourGx.data_ptr<float>() + p * plane);
    CHECK(sameBits(ourGx, gx));
  }
}

TEST_CASE("the CPU average-pool loops give ATen's values and gradients bit for bit") {
  struct AvgCase {
    Case geometry;
    bool countPadding;
    int64_t divisor; // 0: none
  };
  const std::vector<AvgCase> cases = {
      {{16, 16, {2, 2, 2, 2, 0, 0, 1, 1}, false}, false, 0}, // DenseNet's transitions
      {{32, 32, {3, 3, 2, 2, 1, 1, 1, 1}, false}, false, 0},
      {{32, 32, {3, 3, 2, 2, 1, 1, 1, 1}, false}, true, 0},
      {{13, 11, {3, 3, 1, 1, 1, 1, 1, 1}, false}, false, 0},
      {{13, 11, {3, 3, 2, 2, 1, 1, 1, 1}, true}, true, 0}, // ceil mode: a last window over the end padding
      {{13, 11, {3, 3, 2, 2, 1, 1, 1, 1}, true}, false, 0},
      {{14, 15, {3, 2, 2, 3, 1, 1, 1, 1}, true}, false, 1}, // window sums, as the asymmetric-pad path asks
      {{1, 40, {1, 3, 1, 2, 0, 1, 1, 1}, false}, false, 0},
      {{5, 6, {5, 6, 1, 1, 0, 0, 1, 1}, false}, false, 0},
  };
  uint64_t seed = 100;
  for (const AvgCase& ac : cases) {
    const Case& c = ac.geometry;
    const pool::Window2d& w = c.window;
    CAPTURE(c.height);
    CAPTURE(c.width);
    CAPTURE(w.kernelH);
    CAPTURE(ac.countPadding);
    CAPTURE(c.ceilMode);
    const int64_t planes = 3;
    at::manual_seed(seed++);
    const at::Tensor x = at::randn({1, planes, c.height, c.width});
    const c10::optional<int64_t> divisor = ac.divisor > 0 ? c10::optional<int64_t>(ac.divisor) : c10::nullopt;
    const at::Tensor y = at::avg_pool2d(x, {w.kernelH, w.kernelW}, {w.strideH, w.strideW}, {w.padH, w.padW}, c.ceilMode,
                                        ac.countPadding, divisor);
    const int64_t outH = pool::pooledSize(c.height, w.kernelH, w.padH, w.strideH, 1, c.ceilMode);
    const int64_t outW = pool::pooledSize(c.width, w.kernelW, w.padW, w.strideW, 1, c.ceilMode);
    REQUIRE(outH == y.size(2));
    REQUIRE(outW == y.size(3));
    at::Tensor ours = at::empty_like(y);
    std::vector<float> scratch(static_cast<size_t>(2 * outW));
    const int64_t plane = c.height * c.width, outPlane = outH * outW;
    for (int64_t p = 0; p < planes; ++p)
      pool::avgPoolPlane(x.data_ptr<float>() + p * plane, c.height, c.width, w, outH, outW, ac.countPadding, ac.divisor,
                         ours.data_ptr<float>() + p * outPlane, scratch.data());
    CHECK(sameBits(ours, y));

    const at::Tensor g = at::randn(y.sizes());
    const at::Tensor gx = at::avg_pool2d_backward(g, x, {w.kernelH, w.kernelW}, {w.strideH, w.strideW}, {w.padH, w.padW},
                                                  c.ceilMode, ac.countPadding, divisor);
    at::Tensor ourGx = at::zeros_like(x);
    for (int64_t p = 0; p < planes; ++p)
      pool::avgPoolBackwardPlane(g.data_ptr<float>() + p * outPlane, c.height, c.width, w, outH, outW, ac.countPadding,
                                 ac.divisor, ourGx.data_ptr<float>() + p * plane, scratch.data());
    CHECK(sameBits(ourGx, gx));
  }
}
