// 2-D convolution on the GPU (NCHW), float32 and float64. Host-side declarations, plain C++
// so the bindings (compiled by g++) can call them; the kernels live in conv.cu. The shape
// struct and its argument checks are common/conv_shape.h, shared with the CPU backend.
#pragma once

#include <cuda_runtime_api.h>

#include "common/conv_shape.h"

namespace pyfast::cuda {

// Every pointer is device memory of the shapes s describes (C-contiguous), aligned to
// sizeof(T); every extent of s fits in an int (the binding checks). Enqueued on `stream`,
// not synchronised. Throws std::runtime_error on a CUDA error.

// y = relu?(conv2d(x, w) + bias); bias (s.k values) may be null.
template <typename T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu,
                    cudaStream_t stream);

// gx, gw, gb overwritten (each may be null; x may be null when gw is).
template <typename T>
void conv2d_backward(const ConvShape& s, const T* gy, const T* x, const T* w, T* gx, T* gw,
                     T* gb, cudaStream_t stream);

// out (the input's shape in s) = the input gradient of s for gy = in, plus bias (s.c values).
template <typename T>
void conv_transpose2d(const ConvShape& s, const T* in, const T* w, const T* bias, T* out,
                      cudaStream_t stream);

}  // namespace pyfast::cuda
