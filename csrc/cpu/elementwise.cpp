// Elementwise kernels (activations, their gradients, dropout, add), float32 and float64.
//
// All are memory-bound streams: one OpenMP-parallel loop each, static schedule, with
// `omp simd` so the compiler vectorises the body at the baseline ISA (bandwidth, not the
// vector width, limits these). Small arrays stay on the calling thread: waking the team
// costs more than the work below ~32K elements. Gradients of relu/sigmoid/tanh read the
// forward output; leaky_relu's reads the input (torch's conventions). Dropout recomputes its
// mask from a counter-based hash, so the backward pass needs no stored mask.

#include "cpu/elementwise.h"

#include <omp.h>

#include <cmath>

#include "common/runtime.h"

namespace pyfast {
namespace {

constexpr std::int64_t kParallelMin = 1 << 15;

inline int team(std::int64_t n) { return n >= kParallelMin ? num_threads() : 1; }

inline std::uint64_t splitmix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

}  // namespace

#define PYFAST_ELEMENTWISE_LOOP(n) \
    _Pragma("omp parallel for simd schedule(static) num_threads(team(n))") \
    for (std::int64_t i = 0; i < (n); ++i)

template <typename T>
void relu(const T* x, T* y, std::int64_t n) {
    PYFAST_ELEMENTWISE_LOOP(n) y[i] = x[i] < T(0) ? T(0) : x[i];  // NaN stays NaN, as torch
}

template <typename T>
void relu_backward(const T* gy, const T* y, T* gx, std::int64_t n) {
    PYFAST_ELEMENTWISE_LOOP(n) gx[i] = y[i] <= T(0) ? T(0) : gy[i];  // torch's threshold_backward
}

template <typename T>
void leaky_relu(const T* x, T* y, std::int64_t n, T slope) {
    PYFAST_ELEMENTWISE_LOOP(n) y[i] = x[i] > T(0) ? x[i] : x[i] * slope;
}

template <typename T>
void leaky_relu_backward(const T* gy, const T* x, T* gx, std::int64_t n, T slope) {
    PYFAST_ELEMENTWISE_LOOP(n) gx[i] = x[i] > T(0) ? gy[i] : gy[i] * slope;
}

template <typename T>
void sigmoid(const T* x, T* y, std::int64_t n) {
    // exp(-x) overflows to inf for very negative x, and 1 / (1 + inf) is the right 0
#pragma omp parallel for schedule(static) num_threads(team(n))
    for (std::int64_t i = 0; i < n; ++i) y[i] = T(1) / (T(1) + std::exp(-x[i]));
}

template <typename T>
void sigmoid_backward(const T* gy, const T* y, T* gx, std::int64_t n) {
    PYFAST_ELEMENTWISE_LOOP(n) gx[i] = gy[i] * y[i] * (T(1) - y[i]);
}

template <typename T>
void tanh_fwd(const T* x, T* y, std::int64_t n) {
#pragma omp parallel for schedule(static) num_threads(team(n))
    for (std::int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}

template <typename T>
void tanh_backward(const T* gy, const T* y, T* gx, std::int64_t n) {
    PYFAST_ELEMENTWISE_LOOP(n) gx[i] = gy[i] * (T(1) - y[i] * y[i]);
}

template <typename T>
void dropout(const T* x, T* y, std::int64_t n, std::uint64_t seed, std::uint32_t threshold,
             T scale) {
    const std::uint64_t golden = 0x9E3779B97F4A7C15ULL;
#pragma omp parallel for schedule(static) num_threads(team(n))
    for (std::int64_t i = 0; i < n; ++i) {
        const std::uint64_t h = splitmix64(seed + static_cast<std::uint64_t>(i + 1) * golden);
        const bool keep = (h >> 40) >= threshold;
        y[i] = keep ? x[i] * scale : T(0);
    }
}

template <typename T>
void add(const T* a, const T* b, T* y, std::int64_t n) {
    PYFAST_ELEMENTWISE_LOOP(n) y[i] = a[i] + b[i];
}

#undef PYFAST_ELEMENTWISE_LOOP

#define PYFAST_INSTANTIATE(T)                                                          \
    template void relu<T>(const T*, T*, std::int64_t);                                 \
    template void relu_backward<T>(const T*, const T*, T*, std::int64_t);              \
    template void leaky_relu<T>(const T*, T*, std::int64_t, T);                        \
    template void leaky_relu_backward<T>(const T*, const T*, T*, std::int64_t, T);     \
    template void sigmoid<T>(const T*, T*, std::int64_t);                              \
    template void sigmoid_backward<T>(const T*, const T*, T*, std::int64_t);           \
    template void tanh_fwd<T>(const T*, T*, std::int64_t);                             \
    template void tanh_backward<T>(const T*, const T*, T*, std::int64_t);              \
    template void dropout<T>(const T*, T*, std::int64_t, std::uint64_t, std::uint32_t, T); \
    template void add<T>(const T*, const T*, T*, std::int64_t);
PYFAST_INSTANTIATE(float)
PYFAST_INSTANTIATE(double)
#undef PYFAST_INSTANTIATE

}  // namespace pyfast
