// Elementwise kernels: activations and their gradients, dropout, add. Flat arrays of n
// elements; outputs may alias inputs exactly (each element is read before it is written).
#pragma once

#include <cstdint>

namespace pyfast {

template <typename T> void relu(const T* x, T* y, std::int64_t n);
template <typename T> void relu_backward(const T* gy, const T* y, T* gx, std::int64_t n);
template <typename T> void leaky_relu(const T* x, T* y, std::int64_t n, T slope);
template <typename T>
void leaky_relu_backward(const T* gy, const T* x, T* gx, std::int64_t n, T slope);
template <typename T> void sigmoid(const T* x, T* y, std::int64_t n);
template <typename T> void sigmoid_backward(const T* gy, const T* y, T* gx, std::int64_t n);
template <typename T> void tanh_fwd(const T* x, T* y, std::int64_t n);
template <typename T> void tanh_backward(const T* gy, const T* y, T* gx, std::int64_t n);
// y = x * keep(seed, i) * scale, keep(seed, i) = top 24 bits of splitmix64(seed + (i+1)*golden)
// >= threshold (the reference backend's definition, bit for bit).
template <typename T>
void dropout(const T* x, T* y, std::int64_t n, std::uint64_t seed, std::uint32_t threshold,
             T scale);
template <typename T> void add(const T* a, const T* b, T* y, std::int64_t n);

}  // namespace pyfast
