#pragma once
// Private to the runtime: CPU max and average pooling over one NCHW plane, forward (max: with
// its argmax indices) and backward, with ATen's results bit for bit. No LibTorch here: plain loops the compiler
// vectorizes (PoolLoops.cpp is built with the vectorizer's dynamic cost model).

#include <cstdint>

namespace tbp::runtime::pool {

/// A 2-D pooling window: extents, strides, padding at the start, dilations.
struct Window2d {
  int64_t kernelH = 1, kernelW = 1;
  int64_t strideH = 1, strideW = 1;
  int64_t padH = 0, padW = 0;
  int64_t dilationH = 1, dilationW = 1;
};

/// Output extent of a pooling window along one axis, by ATen's rule (pooling_output_shape):
/// floor or ceil of (in + 2·pad − dilation·(kernel − 1) − 1) / stride + 1, and in ceil mode a
/// last window that would start in the end padding dropped.
int64_t pooledSize(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation, bool ceilMode);

/// Whether ATen's 2-D pooling would accept `window` over an H×W plane (its pool2d_shape_check):
/// extents, strides and dilations at least 1, padding at most half the dilated window, planes
/// and outputs not empty. The loops below assume it; the runtime leaves any other window to
/// ATen, whose error names what is wrong.
bool acceptsWindow(const Window2d& window, int64_t height, int64_t width, bool ceilMode);

/// Max pooling of one H×W plane `x` into `out` (outH×outW) and the flat in-plane index of each
/// maximum into `indices`, as ATen's CPU kernel computes them: the window is visited row by
/// row, a value replaces the maximum when it is larger or NaN (so the last NaN wins), and a
/// window of only −inf points at its first element inside the input. `rowMax` and `rowArg`
/// are scratch of outW elements each. Requires H·W < 2^31.
void maxPoolPlane(const float* x, int64_t height, int64_t width, const Window2d& window, int64_t outH, int64_t outW,
                  float* out, int64_t* indices, float* rowMax, int32_t* rowArg);

/// Backward of maxPoolPlane: adds each of the `count` output gradients to the input gradient
/// `gradIn` (zeroed by the caller) at its index, in output order as ATen's kernel does.
void maxPoolBackwardPlane(const float* gradOut, const int64_t* indices, int64_t count, float* gradIn);

/// Average pooling of one H×W plane `x` into `out` (outH×outW; the window's dilations must be
/// 1), as ATen's CPU kernel computes it: each window's sum, row by row, divided by
/// `divisor` when it is positive, else by the window's size counting the padding when
/// `countPadding`, else by its elements inside the input. `scratch`: 2·outW floats.
void avgPoolPlane(const float* x, int64_t height, int64_t width, const Window2d& window, int64_t outH, int64_t outW,
                  bool countPadding, int64_t divisor, float* out, float* scratch);

/// Backward of avgPoolPlane: adds each output gradient, divided as its forward divided, to the
/// input gradient `gradIn` (zeroed by the caller) over its window, in ATen's order.
/// `scratch`: outW floats.
void avgPoolBackwardPlane(const float* gradOut, int64_t height, int64_t width, const Window2d& window, int64_t outH,
                          int64_t outW, bool countPadding, int64_t divisor, float* gradIn, float* scratch);

} // namespace tbp::runtime::pool
