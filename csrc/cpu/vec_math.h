// Portable SIMD vectors and the elementary functions the memory-bound kernels need
// (exp, log, log1p), written once with GCC vector extensions.
//
// Simd<T, Bytes> is a vector of Bytes / sizeof(T) lanes. Every member is always_inline, so
// the code takes the ISA of the function it is inlined into: called from a function marked
// PYFAST_TARGET("avx512f,...") it becomes zmm code, from an unmarked one SSE2 (the pattern
// of csrc/cpu/gemm.cpp). Loads and stores go through memcpy: no alignment is assumed.
//
// exp: Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, then a Taylor polynomial in r
// (degree 7 for float, 13 for double: truncation below 1e-8 and 1e-17 relative), scaled by
// 2^n built in the exponent bits; float with 8 or 16 lanes reduces further with a table
// (exp_table). Inputs below the smallest normal result give 0, NaN stays NaN.
// log: x = 2^k f with f in [sqrt(1/2), sqrt(2)), log f = 2 atanh((f - 1) / (f + 1)) as an
// odd series in u = (f - 1) / (f + 1), |u| <= 0.172; valid for positive normal x (the
// kernels take logs of sums >= 1 only), NaN stays NaN. Both are within about 2 ulp.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "common/runtime.h"

namespace pyfast {

template <typename T, int Bytes>
struct Simd {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "float or double");
    using type = T;
    using Int = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    typedef T V __attribute__((vector_size(Bytes)));
    typedef Int IV __attribute__((vector_size(Bytes)));
    static constexpr int lanes = Bytes / static_cast<int>(sizeof(T));

    static PYFAST_INLINE V splat(T x) { return V{} + x; }
    static PYFAST_INLINE V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof(V));
        return v;
    }
    static PYFAST_INLINE void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
    // The first `count` lanes from p (count < lanes), the rest `fill`.
    static PYFAST_INLINE V load_partial(const T* p, int count, T fill) {
        alignas(64) T buf[lanes];
        for (int i = 0; i < lanes; ++i) buf[i] = fill;
        std::memcpy(buf, p, sizeof(T) * count);
        return load(buf);
    }
    static PYFAST_INLINE void store_partial(T* p, V v, int count) {
        alignas(64) T buf[lanes];
        store(buf, v);
        std::memcpy(p, buf, sizeof(T) * count);
    }
    // v with lanes count.. set to zero.
    static PYFAST_INLINE V keep_first(V v, int count) {
        for (int i = count; i < lanes; ++i) v[i] = T(0);
        return v;
    }
    static PYFAST_INLINE V max(V a, V b) { return a > b ? a : b; }
    static PYFAST_INLINE V min(V a, V b) { return a < b ? a : b; }
    static PYFAST_INLINE V abs(V a) { return a < V{} ? -a : a; }
    // Non-temporal store of a whole vector to p, which must be aligned to Bytes: the line is
    // written to memory without first being read into the cache. Inline asm because the
    // intrinsics carry their own target attribute and do not inline into every ISA's path.
    static PYFAST_INLINE void stream(T* p, V v) {
        if constexpr (Bytes == 16 && sizeof(T) == 4)
            asm volatile("movntps %1, %0" : "=m"(*reinterpret_cast<V*>(p)) : "x"(v));
        else if constexpr (Bytes == 16)
            asm volatile("movntpd %1, %0" : "=m"(*reinterpret_cast<V*>(p)) : "x"(v));
        else if constexpr (sizeof(T) == 4)
            asm volatile("vmovntps %1, %0" : "=m"(*reinterpret_cast<V*>(p)) : "v"(v));
        else
            asm volatile("vmovntpd %1, %0" : "=m"(*reinterpret_cast<V*>(p)) : "v"(v));
    }
    // Orders this thread's non-temporal stores before whatever follows.
    static PYFAST_INLINE void stream_fence() { asm volatile("sfence" ::: "memory"); }

    // A lane loop, which the vectoriser turns into one vsqrtps/vsqrtpd of the caller's ISA
    // (an intrinsic here would not inline into every target).
    static PYFAST_INLINE V sqrt(V v) {
        V r;
        for (int i = 0; i < lanes; ++i) {
            if constexpr (sizeof(T) == 4)
                r[i] = __builtin_sqrtf(v[i]);
            else
                r[i] = __builtin_sqrt(v[i]);
        }
        return r;
    }
    static PYFAST_INLINE T hsum(V v) {
        T s = 0;
        for (int i = 0; i < lanes; ++i) s += v[i];
        return s;
    }
    static PYFAST_INLINE T hmax(V v) {
        T m = v[0];
        for (int i = 1; i < lanes; ++i) m = v[i] > m ? v[i] : m;
        return m;
    }

    static PYFAST_INLINE V exp(V x) {
        if constexpr (sizeof(T) == 4 && Bytes >= 32) {
            return exp_table(x);
        } else if constexpr (sizeof(T) == 4) {
            const V lo = splat(-87.3365f), hi = splat(88.0f);  // 2^-126 .. below overflow
            // max(lo, x) and min(hi, x) with x second keep NaN (vmaxps returns the second
            // operand when either is NaN)
            const V xc = min(hi, max(lo, x));
            const V magic = splat(12582912.0f);  // 1.5 * 2^23: rounds to an integer in the low bits
            const V t = xc * splat(1.44269504088896341f) + magic;
            const V n = t - magic;
            V r = xc - n * splat(0.693359375f);  // ln 2 = 0.693359375 - 2.12194440e-4, first part exact
            r = r - n * splat(-2.12194440e-4f);
            V p = splat(1.0f / 5040);
            p = p * r + splat(1.0f / 720);
            p = p * r + splat(1.0f / 120);
            p = p * r + splat(1.0f / 24);
            p = p * r + splat(1.0f / 6);
            p = p * r + splat(0.5f);
            p = p * r + splat(1.0f);
            p = p * r + splat(1.0f);
            const IV bits = (((IV)t - (IV)magic) + 127) << 23;
            const V y = p * (V)bits;
            return x < lo ? V{} : y;
        } else {
            const V lo = splat(-708.39), hi = splat(709.0);
            const V xc = min(hi, max(lo, x));
            const V magic = splat(6755399441055744.0);  // 1.5 * 2^52
            const V t = xc * splat(1.4426950408889634074) + magic;
            const V n = t - magic;
            V r = xc - n * splat(6.93147180369123816490e-01);
            r = r - n * splat(1.90821492927058770002e-10);
            constexpr double inv_fact[] = {1.0 / 6227020800, 1.0 / 479001600, 1.0 / 39916800,
                                           1.0 / 3628800,    1.0 / 362880,    1.0 / 40320,
                                           1.0 / 5040,       1.0 / 720,       1.0 / 120,
                                           1.0 / 24,         1.0 / 6,         0.5,
                                           1.0,              1.0};
            V p = splat(inv_fact[0]);
#pragma GCC unroll 16
            for (int i = 1; i < 14; ++i) p = p * r + splat(inv_fact[i]);
            const IV bits = (((IV)t - (IV)magic) + 1023) << 52;
            const V y = p * (V)bits;
            return x < lo ? V{} : y;
        }
    }

    // float exp with 8 or 16 lanes: x = (n + j / K) ln2 + r with K = lanes, 2^(j/K) from a
    // table held in one register (a variable shuffle: vpermps), |r| <= ln2 / 2K, so a degree
    // 4 (K = 8) or 3 (K = 16) polynomial is accurate to 1e-8. About 15 instructions where
    // the plain reduction needs 25.
    static PYFAST_INLINE V exp_table(V x) {
        static_assert(lanes == 8 || lanes == 16, "one table entry per lane");
        constexpr int K = lanes, log2_k = lanes == 8 ? 3 : 4;
        // 2^(j/16) rounded to float; the 8-entry table takes every other one
        constexpr float pow2_sixteenths[16] = {
            0x1.000000p+0f, 0x1.0b5586p+0f, 0x1.172b84p+0f, 0x1.2387a6p+0f,
            0x1.306fe0p+0f, 0x1.3dea64p+0f, 0x1.4bfdaep+0f, 0x1.5ab07ep+0f,
            0x1.6a09e6p+0f, 0x1.7a1148p+0f, 0x1.8ace54p+0f, 0x1.9c4918p+0f,
            0x1.ae89fap+0f, 0x1.c199bep+0f, 0x1.d5818ep+0f, 0x1.ea4afap+0f};
        V table;
        for (int j = 0; j < K; ++j) table[j] = pow2_sixteenths[j * (16 / K)];
        const V lo = splat(-87.3365f), hi = splat(88.0f);
        const V xc = min(hi, max(lo, x));
        const V magic = splat(12582912.0f);
        const V t = xc * splat(1.44269504088896341f * K) + magic;  // low bits: n K + j
        const V nk = t - magic;
        V r = xc - nk * splat(0.693359375f / K);
        r = r - nk * splat(-2.12194440e-4f / K);
        V p;
        if constexpr (K == 8) {
            p = splat(1.0f / 24);
            p = p * r + splat(1.0f / 6);
        } else {
            p = splat(1.0f / 6);
        }
        p = p * r + splat(0.5f);
        p = p * r + splat(1.0f);
        p = p * r + splat(1.0f);
        const IV ti = (IV)t - (IV)magic;
        const V frac = __builtin_shuffle(table, ti & (K - 1));
        const IV bits = ((ti >> log2_k) + 127) << 23;  // arithmetic shift: floor(n K + j) / K
        const V y = p * frac * (V)bits;
        return x < lo ? V{} : y;
    }

    static PYFAST_INLINE V log(V x) {
        const IV bits = (IV)x;
        constexpr int mant = sizeof(T) == 4 ? 23 : 52;
        constexpr Int bias = sizeof(T) == 4 ? 127 : 1023;
        constexpr Int mant_mask = (Int{1} << mant) - 1;
        constexpr Int exp_mask = sizeof(T) == 4 ? 0xff : 0x7ff;
        const IV one_bits = (IV)splat(T(1));
        IV k = ((bits >> mant) & exp_mask) - bias;
        V f = (V)((bits & mant_mask) | one_bits);  // mantissa in [1, 2)
        const auto big = f > splat(T(1.41421356237309504880));
        f = big ? f * T(0.5) : f;
        k = k - big;  // a true comparison is all ones, -1
        const V u = (f - T(1)) / (f + T(1));
        const V u2 = u * u;
        V p;
        if constexpr (sizeof(T) == 4) {
            p = splat(1.0f / 9);
            p = p * u2 + splat(1.0f / 7);
            p = p * u2 + splat(1.0f / 5);
            p = p * u2 + splat(1.0f / 3);
            p = p * u2 + splat(1.0f);
        } else {
            p = splat(1.0 / 23);
#pragma GCC unroll 16
            for (int i = 21; i >= 1; i -= 2) p = p * u2 + splat(1.0 / i);
        }
        const V kf = __builtin_convertvector(k, V);
        // ln 2 in two parts so that k ln2 is exact for every exponent
        const V ln2_hi = splat(sizeof(T) == 4 ? T(0.693359375) : T(6.93147180369123816490e-01));
        const V ln2_lo = splat(sizeof(T) == 4 ? T(-2.12194440e-4) : T(1.90821492927058770002e-10));
        const V y = kf * ln2_hi + (T(2) * u * p + kf * ln2_lo);
        return x != x ? x : y;
    }

    // log(1 + t) for t >= 0 without losing t when it is below the rounding of 1 + t:
    // log(u) * t / (u - 1) with u = 1 + t rounded cancels u's rounding error.
    static PYFAST_INLINE V log1p(V t) {
        const V u = T(1) + t;
        const V d = u - T(1);
        return d == V{} ? t : log(u) * (t / d);
    }
};

// Job::run<VectorBytes>(args...) compiled for the active ISA: 16-byte vectors on the
// generic x86-64 path, 32 with AVX2+FMA, 64 with AVX-512. Job::run must be PYFAST_INLINE so
// that it is compiled inside, and with the target of, these wrappers.
template <class Job, typename... A>
decltype(auto) simd_run_generic(const A&... a) { return Job::template run<16>(a...); }
template <class Job, typename... A>
PYFAST_TARGET_AVX2 decltype(auto) simd_run_avx2(const A&... a) {
    return Job::template run<32>(a...);
}
template <class Job, typename... A>
PYFAST_TARGET_AVX512
decltype(auto) simd_run_avx512(const A&... a) { return Job::template run<64>(a...); }

template <class Job, typename... A>
decltype(auto) simd_dispatch(const A&... a) {
    switch (active_isa()) {
        case Isa::avx512: return simd_run_avx512<Job>(a...);
        case Isa::avx2: return simd_run_avx2<Job>(a...);
        default: return simd_run_generic<Job>(a...);
    }
}

}  // namespace pyfast
