// CPU pooling loops (PoolLoops.h). LibTorch 1.13's NCHW kernel spends ~37 ns an output of
// a 3×3 stride-2 window at one thread (resnet50's stem at batch 96: 58 ms forward, 40 ms
// backward); these loops run a whole output row per window element, so the comparisons
// vectorize across the row.

#include "PoolLoops.h"

#include <algorithm>
#include <limits>

namespace tbp::runtime::pool {

int64_t pooledSize(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation, bool ceilMode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceilMode ? stride - 1 : 0);
  // Division rounding toward negative infinity, as ATen's div_rtn.
  int64_t out = span / stride - ((span % stride != 0 && span < 0) ? 1 : 0) + 1;
  if (ceilMode && (out - 1) * stride >= in + pad) --out;
  return out;
}

bool acceptsWindow(const Window2d& w, int64_t height, int64_t width, bool ceilMode) {
  if (w.kernelH < 1 || w.kernelW < 1 || w.strideH < 1 || w.strideW < 1 || w.dilationH < 1 || w.dilationW < 1) return false;
  if (w.padH < 0 || w.padW < 0 || 2 * w.padH > (w.kernelH - 1) * w.dilationH + 1 || 2 * w.padW > (w.kernelW - 1) * w.dilationW + 1)
    return false;
  if (height < 1 || width < 1) return false;
  return pooledSize(height, w.kernelH, w.padH, w.strideH, w.dilationH, ceilMode) >= 1 &&
         pooledSize(width, w.kernelW, w.padW, w.strideW, w.dilationW, ceilMode) >= 1;
}

namespace {

/// First value ≥ 0 of start + k·step (k ≥ 0): where ATen starts a window clipped by padding.
int64_t firstInside(int64_t start, int64_t step) {
  if (start >= 0) return start;
  return start + ((-start + step - 1) / step) * step;
}

/// Outputs o in [lo, hi) of a row whose tap o·stride + offset lies in [0, width).
void tapRange(int64_t offset, int64_t stride, int64_t width, int64_t outW, int64_t& lo, int64_t& hi) {
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  hi = width - 1 - offset < 0 ? 0 : std::min(outW, (width - 1 - offset) / stride + 1);
  if (hi < lo) hi = lo;
}

} // namespace

void maxPoolPlane(const float* x, int64_t height, int64_t width, const Window2d& w, int64_t outH, int64_t outW, float* out,
                  int64_t* indices, float* rowMax, int32_t* rowArg) {
  const float negInf = -std::numeric_limits<float>::infinity();
  for (int64_t oh = 0; oh < outH; ++oh) {
    const int64_t hStart = oh * w.strideH - w.padH;
    const int64_t hEnd = std::min(hStart + (w.kernelH - 1) * w.dilationH + 1, height);
    const int64_t h0 = firstInside(hStart, w.dilationH);
    for (int64_t ow = 0; ow < outW; ++ow) {
      rowMax[ow] = negInf;
      rowArg[ow] = static_cast<int32_t>(h0 * width + firstInside(ow * w.strideW - w.padW, w.dilationW));
    }
    for (int64_t ih = h0; ih < hEnd; ih += w.dilationH) {
      const float* row = x + ih * width;
      for (int64_t kw = 0; kw < w.kernelW; ++kw) {
        const int64_t offset = kw * w.dilationW - w.padW;
        int64_t lo, hi;
        tapRange(offset, w.strideW, width, outW, lo, hi);
        const int32_t base = static_cast<int32_t>(ih * width + offset);
        const int32_t stride = static_cast<int32_t>(w.strideW);
        // Larger or NaN replaces, in the order ATen visits the window (rows, then columns).
        for (int64_t ow = lo; ow < hi; ++ow) {
          const float v = row[ow * w.strideW + offset];
          const bool take = v > rowMax[ow] || v != v;
          rowMax[ow] = take ? v : rowMax[ow];
          rowArg[ow] = take ? base + static_cast<int32_t>(ow) * stride : rowArg[ow];
        }
      }
    }
    float* outRow = out + oh * outW;
    int64_t* indexRow = indices + oh * outW;
    for (int64_t ow = 0; ow < outW; ++ow) {
      outRow[ow] = rowMax[ow];
      indexRow[ow] = rowArg[ow];
    }
  }
}

void maxPoolBackwardPlane(const float* gradOut, const int64_t* indices, int64_t count, float* gradIn) {
  for (int64_t i = 0; i < count; ++i) gradIn[indices[i]] += gradOut[i];
}

namespace {

/// Extent of an average-pool window along one axis: start, clipped to the input, and the
/// element counts inside the input and inside the input and its padding (ATen's rule).
struct AvgSpan {
  int64_t begin, end, inside, padded;
};

AvgSpan avgSpan(int64_t o, int64_t stride, int64_t pad, int64_t kernel, int64_t size) {
  const int64_t start = o * stride - pad;
  const int64_t stop = std::min(start + kernel, size + pad);
  AvgSpan a{std::max<int64_t>(start, 0), std::min(stop, size), 0, stop - start};
  a.inside = std::max<int64_t>(a.end - a.begin, 0);
  return a;
}

/// What each output of row `oh` is divided by: `divisor`, or its window's size with or
/// without the padding, as ATen divides (in float).
void avgDivisors(int64_t oh, int64_t height, int64_t width, const Window2d& w, int64_t outW, bool countPadding,
                 int64_t divisor, float* divide) {
  const AvgSpan h = avgSpan(oh, w.strideH, w.padH, w.kernelH, height);
  for (int64_t ow = 0; ow < outW; ++ow) {
    const AvgSpan c = avgSpan(ow, w.strideW, w.padW, w.kernelW, width);
    divide[ow] = static_cast<float>(divisor > 0 ? divisor : countPadding ? h.padded * c.padded : h.inside * c.inside);
  }
}

} // namespace

void avgPoolPlane(const float* x, int64_t height, int64_t width, const Window2d& w, int64_t outH, int64_t outW,
                  bool countPadding, int64_t divisor, float* out, float* scratch) {
  float* rowSum = scratch;
  float* divide = scratch + outW;
  for (int64_t oh = 0; oh < outH; ++oh) {
    const AvgSpan h = avgSpan(oh, w.strideH, w.padH, w.kernelH, height);
    for (int64_t ow = 0; ow < outW; ++ow) rowSum[ow] = 0.0f;
    // Per output the window's rows, then its columns, from zero: ATen's order of the sum.
    for (int64_t ih = h.begin; ih < h.end; ++ih) {
      const float* row = x + ih * width;
      for (int64_t kw = 0; kw < w.kernelW; ++kw) {
        const int64_t offset = kw - w.padW;
        int64_t lo, hi;
        tapRange(offset, w.strideW, width, outW, lo, hi);
        for (int64_t ow = lo; ow < hi; ++ow) rowSum[ow] += row[ow * w.strideW + offset];
      }
    }
    avgDivisors(oh, height, width, w, outW, countPadding, divisor, divide);
    float* outRow = out + oh * outW;
    for (int64_t ow = 0; ow < outW; ++ow) outRow[ow] = h.inside > 0 ? rowSum[ow] / divide[ow] : 0.0f;
  }
}

void avgPoolBackwardPlane(const float* gradOut, int64_t height, int64_t width, const Window2d& w, int64_t outH,
                          int64_t outW, bool countPadding, int64_t divisor, float* gradIn, float* scratch) {
  float* delta = scratch;
  for (int64_t oh = 0; oh < outH; ++oh) {
    const AvgSpan h = avgSpan(oh, w.strideH, w.padH, w.kernelH, height);
    avgDivisors(oh, height, width, w, outW, countPadding, divisor, delta);
    for (int64_t ow = 0; ow < outW; ++ow) delta[ow] = gradOut[oh * outW + ow] / delta[ow];
    // ATen adds the outputs' shares in output order. Within a row, the outputs reaching one
    // input element through columns kw > kw' are the earlier ones: columns from the last.
    for (int64_t ih = h.begin; ih < h.end; ++ih) {
      float* row = gradIn + ih * width;
      for (int64_t kw = w.kernelW - 1; kw >= 0; --kw) {
        const int64_t offset = kw - w.padW;
        int64_t lo, hi;
        tapRange(offset, w.strideW, width, outW, lo, hi);
        for (int64_t ow = lo; ow < hi; ++ow) row[ow * w.strideW + offset] += delta[ow];
      }
    }
  }
}

} // namespace tbp::runtime::pool
