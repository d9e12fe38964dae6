// Winograd F(4x4, 3x3) convolution on the CPU (NCHW): the forward pass and the input
// gradient of 3x3 convolutions with stride 1, dilation 1 and one group.
#pragma once

#include "cpu/conv.h"

namespace pyfast {

// Whether the Winograd kernels compute the convolution s: a 3x3 kernel, stride 1, dilation
// 1, groups 1 (any padding, any output extent).
bool winograd_fits(const ConvShape& s);

// y = relu?(conv2d(x, w) + bias), as conv2d_forward; bias (k values) may be null.
template <typename T>
void winograd_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                      bool relu);

// gx (x's shape in s) = the input gradient of the convolution s for gy (y's shape), plus
// bias (s.c values, or null): the forward convolution of gy with the kernel flipped and its
// channels swapped, padding 2 - p.
template <typename T>
void winograd_input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx);

}  // namespace pyfast
