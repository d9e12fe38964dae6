// 2-D convolution on the CPU (NCHW), float32 and float64, built on the packed GEMM.
#pragma once

#include <cstdint>

namespace pyfast {

// One convolution y = conv2d(x, w): x (n, c, h, w), w (k, c / groups, kh, kw), y (n, k, oh,
// ow), with y[.., oh, ow] reading x at rows oh * sh - ph + i * dh (and likewise columns);
// rows outside x read as zeros. The kernels take oh and ow as given (no formula ties them to
// h and w) and accept negative padding (a crop), so the transposed convolution and the
// input gradient can be phrased as convolutions of other shapes.
struct ConvShape {
    std::int64_t n, c, h, w;
    std::int64_t k, kh, kw;
    std::int64_t oh, ow;
    std::int64_t sh, sw, ph, pw, dh, dw;
    std::int64_t groups;
};

// y = relu?(conv2d(x, w) + bias); bias (k values) may be null.
template <typename T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu);

// The gradients of conv2d given gy (the shape of y): gx (x's shape), gw (w's) and gb (k
// values) are overwritten; any may be null when not wanted, and x may be null when gw is.
template <typename T>
void conv2d_backward(const ConvShape& s, const T* gy, const T* x, const T* w, T* gx, T* gw,
                     T* gb);

// The transposed convolution: out (x's shape in s) = the input gradient of the convolution s
// for gy = in (y's shape in s), plus bias (s.c values, or null) per channel.
template <typename T>
void conv_transpose2d(const ConvShape& s, const T* in, const T* w, const T* bias, T* out);

}  // namespace pyfast
