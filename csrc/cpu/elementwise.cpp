// Elementwise kernels (activations, their gradients, dropout, add), float32 and float64.
//
// All are memory-bound streams: one OpenMP-parallel loop each, static schedule, with
// `omp simd` so the compiler vectorises the body at the baseline ISA (bandwidth, not the
// vector width, limits these). Selects use quiet comparisons (__builtin_isgreater...) and
// choose between constants or loaded values, never guard an operation: under the default
// -ftrapping-math GCC will not if-convert anything that may trap, and a branch on the sign
// of real data mispredicts half the time. Small arrays stay on the calling thread: waking the team
// costs more than the work below ~32K elements. Gradients of relu/sigmoid/tanh read the
// forward output; leaky_relu's reads the input (torch's conventions). Dropout recomputes its
// mask from a counter-based hash, so the backward pass needs no stored mask.
//
// float sigmoid and tanh are compute-bound with libm's scalar expf/tanhf (several times
// slower than torch), so they use an exp written for vectorisation: exp(-|x|) by
// Cody-Waite range reduction to |r| <= ln2/2, a degree-6 polynomial and 2^n built in the
// exponent bits (about 1 ulp; results below 2^-126 flush to 0), compiled for AVX-512,
// AVX2 and the baseline and picked at run time like the GEMM. Working on -|x| keeps every
// intermediate finite. tanh of |x| < 0.625 uses an odd polynomial instead of
// (1 - e) / (1 + e), which would lose the relative precision of small results.

#include "cpu/elementwise.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/runtime.h"
#include "cpu/select.h"

namespace pyfast {
namespace {

constexpr std::int64_t kParallelMin = 1 << 15;

inline int team(std::int64_t n) { return n >= kParallelMin ? num_threads() : 1; }

PYFAST_INLINE std::uint64_t splitmix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Lane-parallel sigmoid/tanh on GCC vector types of `Bytes` bytes (written with vector
// extensions rather than left to the auto-vectoriser, which refuses the selects under the
// default -ftrapping-math). VF holds floats, VI the matching int32 lanes.
template <int Bytes>
struct Lanes {
    typedef float VF __attribute__((vector_size(Bytes)));
    typedef std::int32_t VI __attribute__((vector_size(Bytes)));
    static constexpr int n = Bytes / 4;
};

// exp(v) for lanes v <= 0; 0 below -87.6 (where 2^n would leave the normal range).
template <class L>
PYFAST_INLINE typename L::VF exp_nonpositive(typename L::VF v) {
    using VF = typename L::VF;
    using VI = typename L::VI;
    const VF zero = {};
    const VI tiny = v < -87.6f;
    v = tiny ? zero : v;
    const VI n = __builtin_convertvector(v * 1.44269504088896341f - 0.5f, VI);  // round (v <= 0)
    const VF nf = __builtin_convertvector(n, VF);
    const VF r = (v - nf * 0.693359375f) - nf * -2.12194440e-4f;
    VF p = zero + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const VF scale = (VF)((n + 127) << 23);
    return tiny ? zero : p * scale;
}

template <class L>
PYFAST_INLINE typename L::VF sigmoid_lanes(typename L::VF v) {
    using VF = typename L::VF;
    using VI = typename L::VI;
    const VF a = (VF)((VI)v & 0x7fffffff);
    const VF e = exp_nonpositive<L>(-a);  // in (0, 1]
    const VF r = 1.0f / (1.0f + e);
    const VF out = v >= 0.0f ? r : e * r;
    return v != v ? v : out;
}

template <class L>
PYFAST_INLINE typename L::VF tanh_lanes(typename L::VF v) {
    using VF = typename L::VF;
    using VI = typename L::VI;
    const VF a = (VF)((VI)v & 0x7fffffff);
    const VF e = exp_nonpositive<L>(-2.0f * a);
    const VF big = (1.0f - e) / (1.0f + e);
    const VF z = v * v;
    VF p = z * -5.70498872745e-3f + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const VF small = p * z * a + a;
    const VF t = a < 0.625f ? small : big;
    const VI sign = (VI)v & INT32_MIN;
    const VF out = (VF)((VI)t | sign);
    return v != v ? v : out;
}

// f over n floats, whole vectors straight from memory and the tail through a padded copy
template <class L, typename L::VF (*F)(typename L::VF)>
PYFAST_INLINE void map_lanes(const float* x, float* y, std::int64_t n) {
    using VF = typename L::VF;
    std::int64_t i = 0;
    for (; i + L::n <= n; i += L::n) {
        VF v;
        std::memcpy(&v, x + i, sizeof v);
        v = F(v);
        std::memcpy(y + i, &v, sizeof v);
    }
    if (i < n) {
        float buf[L::n] = {};
        std::memcpy(buf, x + i, (n - i) * sizeof(float));
        VF v;
        std::memcpy(&v, buf, sizeof v);
        v = F(v);
        std::memcpy(buf, &v, sizeof v);
        std::memcpy(y + i, buf, (n - i) * sizeof(float));
    }
}

using L16 = Lanes<16>;
using L32 = Lanes<32>;
using L64 = Lanes<64>;

// The lane functions as types, so that one template per ISA below serves both.
struct Sigmoid {
    template <class L>
    static PYFAST_INLINE typename L::VF run(typename L::VF v) { return sigmoid_lanes<L>(v); }
};
struct Tanh {
    template <class L>
    static PYFAST_INLINE typename L::VF run(typename L::VF v) { return tanh_lanes<L>(v); }
};

// Fn over a span, once per ISA (a target attribute applies to a whole function).
template <class Fn>
void map_generic(const float* x, float* y, std::int64_t n) {
    map_lanes<L16, Fn::template run<L16>>(x, y, n);
}
template <class Fn>
PYFAST_TARGET_AVX2 void map_avx2(const float* x, float* y, std::int64_t n) {
    map_lanes<L32, Fn::template run<L32>>(x, y, n);
}
template <class Fn>
PYFAST_TARGET_AVX512 void map_avx512(const float* x, float* y, std::int64_t n) {
    map_lanes<L64, Fn::template run<L64>>(x, y, n);
}

using SpanFn = void (*)(const float*, float*, std::int64_t);

// fn over [0, n) in one contiguous span per thread
void split_span(SpanFn fn, const float* x, float* y, std::int64_t n) {
    const int threads = team(n);
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const std::int64_t per = (n + nt - 1) / nt;
        const std::int64_t begin = std::min<std::int64_t>(n, per * t);
        const std::int64_t end = std::min<std::int64_t>(n, begin + per);
        if (end > begin) fn(x + begin, y + begin, end - begin);
    }
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
    PYFAST_ELEMENTWISE_LOOP(n) {
        const T g = gy[i], v = y[i];
        gx[i] = __builtin_islessequal(v, T(0)) ? T(0) : g;  // torch's threshold_backward
    }
}

template <typename T>
void leaky_relu(const T* x, T* y, std::int64_t n, T slope) {
    PYFAST_ELEMENTWISE_LOOP(n) {
        const T v = x[i];
        y[i] = v * blend(__builtin_isgreater(v, T(0)), T(1), slope);
    }
}

template <typename T>
void leaky_relu_backward(const T* gy, const T* x, T* gx, std::int64_t n, T slope) {
    PYFAST_ELEMENTWISE_LOOP(n) {
        const T v = x[i];
        gx[i] = gy[i] * blend(__builtin_isgreater(v, T(0)), T(1), slope);
    }
}

template <>
void sigmoid<float>(const float* x, float* y, std::int64_t n) {
    split_span(for_active_isa<SpanFn>(map_generic<Sigmoid>, map_avx2<Sigmoid>, map_avx512<Sigmoid>),
               x, y, n);
}

template <>
void tanh_fwd<float>(const float* x, float* y, std::int64_t n) {
    split_span(for_active_isa<SpanFn>(map_generic<Tanh>, map_avx2<Tanh>, map_avx512<Tanh>), x, y, n);
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

// Elements [begin, end) of a dropout: the mask is a pure function of (seed, index), so any
// split of the range between threads gives the same result. 64-bit multiplies vectorise
// with AVX-512DQ (vpmullq) and are emulated on AVX2, hence the per-ISA copies below.
template <typename T>
PYFAST_INLINE void dropout_span(const T* x, T* y, std::int64_t begin, std::int64_t end,
                                std::uint64_t seed, std::uint32_t threshold, T scale) {
    const std::uint64_t golden = 0x9E3779B97F4A7C15ULL;
#pragma omp simd
    for (std::int64_t i = begin; i < end; ++i) {
        const std::uint64_t h = splitmix64(seed + static_cast<std::uint64_t>(i + 1) * golden);
        const bool keep = (h >> 40) >= threshold;
        y[i] = x[i] * blend(keep, scale, T(0));  // x * mask * scale, as torch (inf * 0 is NaN)
    }
}

template <typename T>
using DropoutFn = void (*)(const T*, T*, std::int64_t, std::int64_t, std::uint64_t,
                           std::uint32_t, T);

template <typename T>
void dropout_generic(const T* x, T* y, std::int64_t b, std::int64_t e, std::uint64_t seed,
                     std::uint32_t threshold, T scale) {
    dropout_span(x, y, b, e, seed, threshold, scale);
}
template <typename T>
PYFAST_TARGET_AVX2
void dropout_avx2(const T* x, T* y, std::int64_t b, std::int64_t e, std::uint64_t seed,
                  std::uint32_t threshold, T scale) {
    dropout_span(x, y, b, e, seed, threshold, scale);
}
template <typename T>
PYFAST_TARGET_AVX512
void dropout_avx512(const T* x, T* y, std::int64_t b, std::int64_t e, std::uint64_t seed,
                    std::uint32_t threshold, T scale) {
    dropout_span(x, y, b, e, seed, threshold, scale);
}

template <typename T>
void dropout(const T* x, T* y, std::int64_t n, std::uint64_t seed, std::uint32_t threshold,
             T scale) {
    const DropoutFn<T> fn =
        for_active_isa<DropoutFn<T>>(dropout_generic<T>, dropout_avx2<T>, dropout_avx512<T>);
#pragma omp parallel num_threads(team(n))
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const std::int64_t per = (n + nt - 1) / nt;
        const std::int64_t begin = std::min<std::int64_t>(n, per * t);
        const std::int64_t end = std::min<std::int64_t>(n, begin + per);
        if (end > begin) fn(x, y, begin, end, seed, threshold, scale);
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
