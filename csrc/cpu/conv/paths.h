// The convolution algorithms, one file each; cpu/conv/plan.h says which takes what, and
// cpu/conv/conv.cpp (the entry points) runs the one chosen. Each takes any ConvShape that its
// rule in plan.h accepts (and no other), C-contiguous NCHW arrays (NHWC where it says so),
// and overwrites its output.
#pragma once

#include <cstdint>

#include "common/conv_shape.h"

namespace pyfast::cpu_conv {

// direct.cpp: stride 1, the reduction over zero-padded planes of the input.
template <typename T>
void direct_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu);
// Wide-grid positions the direct forward computes per output (its waste on small images).
template <typename T>
double direct_waste(const ConvShape& s);

// direct_wgrad.cpp: the stride-1 weight gradient over the same planes; channels_last: gy and
// x are NHWC (the planes and gy's packing read them as they are).
template <typename T>
void direct_weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw, bool channels_last);

// implicit_gemm.cpp: channels-last copies, any stride; the input gradient over stride phases.
// channels_last: the activations (x and y, or gy and gx) are NHWC, not NCHW.
// The channels-last copy of one image may take at most kImplicitMaxBytes: larger images stay
// on the paths whose buffers are bounded whatever the image size.
constexpr std::int64_t kImplicitMaxBytes = 4 << 20;
template <typename T>
void implicit_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                      bool relu, bool channels_last);
template <typename T>
void implicit_input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx,
                         bool channels_last);

// winograd.cpp: F(4x4, 3x3) for 3x3 kernels with stride 1, dilation 1 and one group
// (winograd_fits), any padding and output extent. The input gradient is the forward
// convolution of gy with the kernels flipped and their channels swapped, padding 2 - p; the
// weight gradient sums the transformed tiles of gy and x.
bool winograd_fits(const ConvShape& s);
template <typename T>
void winograd_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                      bool relu);
template <typename T>
void winograd_input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx);
template <typename T>
void winograd_weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw);

// im2col.cpp: column matrices and the packed GEMM, any shape; the input gradient via col2im
// (any stride; the entry points send stride 1 to a forward convolution instead).
template <typename T>
void im2col_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu);
template <typename T>
void im2col_weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw);
template <typename T>
void col2im_input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx);

}  // namespace pyfast::cpu_conv
