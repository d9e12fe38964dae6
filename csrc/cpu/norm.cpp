// Batch normalisation, forward (training and eval) and backward, float32 and float64, with
// the layers that follow it in ResNet / DenseNet / U-Net blocks fused in: an optional
// residual added to the normalised values and an optional ReLU, forward and backward.
//
// Two layouts of (N, C, S):
//  * planes (S > 1, BatchNorm2d): threads take blocks of neighbouring channels (one channel
//    where a plane has 4 KB or more; at 8x8, 16 channels, so that each image's part of a
//    block is one contiguous run the prefetchers follow). A channel's N planes are read once
//    for the statistics: shifted sums (x - x0, x0 the channel's first element) and their
//    squares in double accumulators, so one pass gives mean and variance without the
//    cancellation of raw sums. The block is then normalised with one fused multiply-add per
//    element (scale = weight * invstd, shift = bias - mean * scale), the residual added and
//    the ReLU applied in the same loop, right after its statistics, while its elements are
//    still in L2 (channel_block bounds them): x comes from memory about once. The backward
//    does the same: one pass for sum(gz) and sum(gz * (x - mean)), where gz is gy masked by
//    the ReLU output (and written out as the residual's gradient when asked), then the fused
//    gradient formula over the cached block.
//    The per-block work is compiled for AVX-512, AVX2 and the baseline and picked at run
//    time: at the baseline ISA the double accumulators make these loops compute-bound
//    (about 4 GB/s against 20 GB/s of copy bandwidth).
//  * rows (S == 1, BatchNorm1d on (N, C)): channels are contiguous within a row, so threads
//    take blocks of rows and accumulate per-channel sums (shifted by the first row, in
//    double) that are reduced after the parallel loop; the elementwise pass then vectorises
//    across channels.

#include "cpu/norm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "common/runtime.h"
#include "cpu/select.h"

namespace pyfast {
namespace {

using std::int64_t;

// The epilogue after the affine map: z = x * scale + shift (+ residual); y = relu(z) or z.
template <typename T, bool Res, bool Relu>
PYFAST_INLINE T epilogue(T v, const T* r, int64_t j) {
    if constexpr (Res) v += r[j];
    if constexpr (Relu) v = v < T(0) ? T(0) : v;  // NaN stays NaN, as torch
    return v;
}

// gy where the ReLU output y > 0, else 0 (torch's threshold_backward), through integer masks:
// GCC does not if-convert the float select inside these reductions, and the branch it
// leaves mispredicts on half of real data (20x slower).
template <typename T>
PYFAST_INLINE T relu_grad(T g, T y) {
    return blend(__builtin_isgreater(y, T(0)), g, T(0));
}

// Calls f(std::bool_constant<res>, std::bool_constant<relu>) so loops are branch-free.
template <class F>
PYFAST_INLINE void with_epilogue(bool res, bool relu, F&& f) {
    if (res) {
        if (relu) f(std::true_type{}, std::true_type{});
        else f(std::true_type{}, std::false_type{});
    } else {
        if (relu) f(std::false_type{}, std::true_type{});
        else f(std::false_type{}, std::false_type{});
    }
}

// Statistics of channel `ch` -> mean_out/invstd_out (and running statistics in training).
template <typename T>
PYFAST_INLINE void finish_stats(int64_t ch, double mean, double var_biased, int64_t count,
                                const T* weight, const T* bias, T* running_mean, T* running_var,
                                T* mean_out, T* invstd_out, double momentum, double eps,
                                T& scale, T& shift) {
    const double invstd = 1.0 / std::sqrt(var_biased + eps);
    mean_out[ch] = static_cast<T>(mean);
    invstd_out[ch] = static_cast<T>(invstd);
    if (running_mean)
        running_mean[ch] = static_cast<T>((1 - momentum) * running_mean[ch] + momentum * mean);
    if (running_var) {
        const double unbiased = var_biased * count / static_cast<double>(count - 1);
        running_var[ch] = static_cast<T>((1 - momentum) * running_var[ch] + momentum * unbiased);
    }
    const double sc = invstd * (weight ? weight[ch] : 1.0);
    scale = static_cast<T>(sc);
    shift = static_cast<T>((bias ? bias[ch] : 0.0) - mean * sc);
}

// ---------------------------------------------------------------------------- planes

template <typename T>
struct ForwardPlanes {
    const T *x, *residual, *weight, *bias;
    T *y, *running_mean, *running_var, *mean_out, *invstd_out;
    int64_t n, c, s, xn;  // xn: x's batch stride in elements (c * s when contiguous)
    bool training, relu;
    double momentum, eps;
};

template <typename T>
struct BackwardPlanes {
    const T *gy, *x, *y, *weight, *mean, *invstd;  // y: the ReLU output, or null (no ReLU)
    T *gx, *gweight, *gbias, *gresidual;
    int64_t n, c, s, xn;  // xn: x's batch stride in elements
    bool training;
};

// Channels [c0, c1) of the forward (at most kMaxBlock, as the backward's blocks below):
// statistics in one pass, then the affine map and epilogue.
constexpr int64_t kMaxBlock = 64;

template <typename T>
PYFAST_INLINE void forward_block_body(const ForwardPlanes<T>& a, int64_t c0, int64_t c1) {
    const int64_t n = a.n, c = a.c, s = a.s, count = n * s;
    double s1[kMaxBlock] = {}, s2[kMaxBlock] = {};
    if (a.training) {
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t ch = c0; ch < c1; ++ch) {
                const double x0 = a.x[ch * s];
                const T* p = a.x + i * a.xn + ch * s;
                double t1 = s1[ch - c0], t2 = s2[ch - c0];
#pragma omp simd reduction(+ : t1, t2)
                for (int64_t j = 0; j < s; ++j) {
                    const double d = static_cast<double>(p[j]) - x0;
                    t1 += d;
                    t2 += d * d;
                }
                s1[ch - c0] = t1, s2[ch - c0] = t2;
            }
        }
    }
    T scale[kMaxBlock], shift[kMaxBlock];
    for (int64_t ch = c0; ch < c1; ++ch) {
        double mean, var;
        if (a.training) {
            const double m = s1[ch - c0] / static_cast<double>(count);
            mean = a.x[ch * s] + m;
            var = std::max(s2[ch - c0] / static_cast<double>(count) - m * m, 0.0);
        } else {
            mean = a.running_mean[ch];
            var = a.running_var[ch];
        }
        finish_stats<T>(ch, mean, var, count, a.weight, a.bias,
                        a.training ? a.running_mean : nullptr,
                        a.training ? a.running_var : nullptr, a.mean_out, a.invstd_out,
                        a.momentum, a.eps, scale[ch - c0], shift[ch - c0]);
    }
    with_epilogue(a.residual != nullptr, a.relu, [&](auto res, auto relu) {
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t ch = c0; ch < c1; ++ch) {
                const int64_t off = (i * c + ch) * s;
                const T* p = a.x + i * a.xn + ch * s;
                const T* r = a.residual + off;  // unused without a residual
                T* q = a.y + off;
                const T sc = scale[ch - c0], sh = shift[ch - c0];
#pragma omp simd
                for (int64_t j = 0; j < s; ++j)
                    q[j] = epilogue<T, decltype(res)::value, decltype(relu)::value>(
                        p[j] * sc + sh, r, j);
            }
        }
    });
}

// Channels [c0, c1) of the backward: gz = gy masked by the ReLU output;
// reduce, then gx. Small planes come in blocks of neighbouring channels, read image by image:
// each image's part of the block is one contiguous run, where a channel at a time read N
// runs of s elements a batch stride apart (256 bytes at 8x8, each in another page), which the
// prefetchers did not follow. Every channel still sums in the same order (images, then
// positions), so the result does not depend on the blocking.

template <typename T>
PYFAST_INLINE void backward_block_body(const BackwardPlanes<T>& a, int64_t c0, int64_t c1) {
    const int64_t n = a.n, c = a.c, s = a.s;
    const double count = static_cast<double>(n * s);
    const bool reduce = a.training || a.gweight || a.gbias;
    const bool masked = a.y != nullptr;
    double sum_gz[kMaxBlock] = {}, sum_gzx[kMaxBlock] = {};
    if (reduce || a.gresidual) {
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t ch = c0; ch < c1; ++ch) {
                const int64_t off = (i * c + ch) * s;
                const T* g = a.gy + off;
                const T* p = a.x + i * a.xn + ch * s;
                const double mu = a.mean[ch];
                double sg = sum_gz[ch - c0], sgx = sum_gzx[ch - c0];
                if (masked) {
                    const T* v = a.y + off;
                    T* gr = a.gresidual ? a.gresidual + off : nullptr;
                    if (gr) {
#pragma omp simd reduction(+ : sg, sgx)
                        for (int64_t j = 0; j < s; ++j) {
                            const T gz = relu_grad(g[j], v[j]);
                            gr[j] = gz;
                            sg += gz;
                            sgx += static_cast<double>(gz) * (static_cast<double>(p[j]) - mu);
                        }
                    } else {
#pragma omp simd reduction(+ : sg, sgx)
                        for (int64_t j = 0; j < s; ++j) {
                            const T gz = relu_grad(g[j], v[j]);
                            sg += gz;
                            sgx += static_cast<double>(gz) * (static_cast<double>(p[j]) - mu);
                        }
                    }
                } else {
                    if (a.gresidual) std::copy(g, g + s, a.gresidual + off);
#pragma omp simd reduction(+ : sg, sgx)
                    for (int64_t j = 0; j < s; ++j) {
                        sg += g[j];
                        sgx += static_cast<double>(g[j]) * (static_cast<double>(p[j]) - mu);
                    }
                }
                sum_gz[ch - c0] = sg, sum_gzx[ch - c0] = sgx;
            }
        }
    }
    // gx = k * gz - ka - (x - mean) * kb: k = weight * invstd, ka = k * mean(gz),
    // kb = k * invstd^2 * mean(gz * (x - mean)) (the last two only in training)
    T k[kMaxBlock], ka[kMaxBlock], kb[kMaxBlock], m[kMaxBlock];
    for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t b = ch - c0;
        const double is = a.invstd[ch];
        if (a.gbias) a.gbias[ch] = static_cast<T>(sum_gz[b]);
        if (a.gweight) a.gweight[ch] = static_cast<T>(sum_gzx[b] * is);
        const double kd = is * (a.weight ? a.weight[ch] : 1.0);
        k[b] = static_cast<T>(kd);
        ka[b] = a.training ? static_cast<T>(kd * sum_gz[b] / count) : T(0);
        kb[b] = a.training ? static_cast<T>(kd * sum_gzx[b] * is * is / count) : T(0);
        m[b] = static_cast<T>(a.mean[ch]);
    }
    if (!a.gx) return;
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t ch = c0; ch < c1; ++ch) {
            const int64_t off = (i * c + ch) * s, b = ch - c0;
            const T* p = a.x + i * a.xn + ch * s;
            const T kc = k[b], kac = ka[b], kbc = kb[b], mc = m[b];
            T* out = a.gx + off;
            if (a.gresidual) {  // gz already written there
                const T* gz = a.gresidual + off;
#pragma omp simd
                for (int64_t j = 0; j < s; ++j) out[j] = kc * gz[j] - kac - (p[j] - mc) * kbc;
            } else if (masked) {
                const T* g = a.gy + off;
                const T* v = a.y + off;
#pragma omp simd
                for (int64_t j = 0; j < s; ++j) {
                    const T gz = relu_grad(g[j], v[j]);
                    out[j] = kc * gz - kac - (p[j] - mc) * kbc;
                }
            } else {
                const T* g = a.gy + off;
#pragma omp simd
                for (int64_t j = 0; j < s; ++j) out[j] = kc * g[j] - kac - (p[j] - mc) * kbc;
            }
        }
    }
}

// The channel functions compiled per ISA: Body (forward_block_body or backward_block_body)
// inlines into each and vectorises for it; active_block gives the active ISA's.
template <auto Body, class Planes>
void block_generic(const Planes& a, int64_t c0, int64_t c1) {
    Body(a, c0, c1);
}
template <auto Body, class Planes>
PYFAST_TARGET_AVX2 void block_avx2(const Planes& a, int64_t c0, int64_t c1) {
    Body(a, c0, c1);
}
template <auto Body, class Planes>
PYFAST_TARGET_AVX512 void block_avx512(const Planes& a, int64_t c0, int64_t c1) {
    Body(a, c0, c1);
}
template <auto Body, class Planes>
auto active_block() {
    return for_active_isa(&block_generic<Body, Planes>, &block_avx2<Body, Planes>,
                          &block_avx512<Body, Planes>);
}

// Channels per block: runs of 4 KB per image (one channel where a plane is that large), the
// block's N images within 512 KB per array (what the second pass reads again from L2), and
// blocks for every thread.
template <typename T>
int64_t channel_block(int64_t n, int64_t c, int64_t s, int threads) {
    constexpr int64_t kRunBytes = 4 << 10, kBlockBytes = 512 << 10;
    const int64_t plane = s * static_cast<int64_t>(sizeof(T));
    int64_t block = std::min<int64_t>(kMaxBlock, (kRunBytes + plane - 1) / plane);
    block = std::min(block, std::max<int64_t>(1, kBlockBytes / (n * plane)));
    return std::max<int64_t>(1, std::min(block, (c + threads - 1) / threads));
}

// f(c0, c1) for every block of channel_block's channels, the blocks shared out over threads.
template <typename T, class F>
void for_channel_blocks(int64_t n, int64_t c, int64_t s, F&& f) {
    const int threads = team(n * c * s, c);
    const int64_t block = channel_block<T>(n, c, s, threads), blocks = (c + block - 1) / block;
#pragma omp parallel for schedule(static) num_threads(std::min<int64_t>(threads, blocks))
    for (int64_t b = 0; b < blocks; ++b) f(b * block, std::min(c, (b + 1) * block));
}

// ---------------------------------------------------------------------------- rows

// Two sums per channel over the n rows of (N, C) input: add_row(i, s1, s2) adds row i's
// terms into a thread's partial sums s1[0, c) and s2[0, c) (double, zeroed first); sum1
// and sum2 (zeroed by the caller) then get the partials added in thread order, so the
// result does not depend on which thread ran first.
template <class F>
void row_sums(int64_t n, int64_t c, int threads, double* sum1, double* sum2, F&& add_row) {
    std::vector<double> partial(static_cast<size_t>(threads) * 2 * c, 0.0);
#pragma omp parallel num_threads(threads)
    {
        double* s1 = partial.data() + static_cast<size_t>(omp_get_thread_num()) * 2 * c;
        double* s2 = s1 + c;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; ++i) add_row(i, s1, s2);
    }
    for (int t = 0; t < threads; ++t)
        for (int64_t j = 0; j < c; ++j) {
            sum1[j] += partial[static_cast<size_t>(t) * 2 * c + j];
            sum2[j] += partial[static_cast<size_t>(t) * 2 * c + c + j];
        }
}

template <typename T>
void forward_rows(const T* x, int64_t xn, T* y, int64_t n, int64_t c, const T* weight,
                  const T* bias, T* running_mean, T* running_var, T* mean_out, T* invstd_out,
                  bool training, double momentum, double eps, const T* residual, bool relu) {
    std::vector<T> scale(c), shift(c);
    const int threads = team(n * c, n);
    if (training) {
        // shifted sums and shifted sums of squares, shifted by the first row
        std::vector<double> sum(c, 0.0), sum_sq(c, 0.0);
        row_sums(n, c, threads, sum.data(), sum_sq.data(),
                 [&](int64_t i, double* acc, double* acc2) __attribute__((always_inline)) {
                     const T* row = x + i * xn;
#pragma omp simd
                     for (int64_t j = 0; j < c; ++j) {
                         const double d = static_cast<double>(row[j]) - x[j];
                         acc[j] += d;
                         acc2[j] += d * d;
                     }
                 });
        for (int64_t j = 0; j < c; ++j) {
            const double m = sum[j] / n;
            const double var = std::max(sum_sq[j] / n - m * m, 0.0);
            finish_stats<T>(j, x[j] + m, var, n, weight, bias, running_mean, running_var,
                            mean_out, invstd_out, momentum, eps, scale[j], shift[j]);
        }
    } else {
        for (int64_t j = 0; j < c; ++j)
            finish_stats<T>(j, running_mean[j], running_var[j], 2, weight, bias, nullptr,
                            nullptr, mean_out, invstd_out, 0.0, eps, scale[j], shift[j]);
    }
    const T* sc = scale.data();
    const T* sh = shift.data();
    with_epilogue(residual != nullptr, relu, [&](auto res, auto rl) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t i = 0; i < n; ++i) {
            const T* row = x + i * xn;
            const T* r = residual + i * c;
            T* out = y + i * c;
#pragma omp simd
            for (int64_t j = 0; j < c; ++j)
                out[j] = epilogue<T, decltype(res)::value, decltype(rl)::value>(
                    row[j] * sc[j] + sh[j], r, j);
        }
    });
}

template <typename T>
void backward_rows(const T* gy, const T* x, int64_t xn, int64_t n, int64_t c, const T* weight,
                   const T* mean, const T* invstd, T* gx, T* gweight, T* gbias, bool training,
                   const T* y, T* gresidual) {
    const int threads = team(n * c, n);
    // With a ReLU the masked gradient is needed twice: materialise it (in gresidual when
    // that is wanted, else in a scratch array) and continue as without.
    std::vector<T> scratch;
    if (y) {
        T* gz = gresidual;
        if (!gz) {
            scratch.resize(static_cast<size_t>(n * c));
            gz = scratch.data();
        }
        const int64_t total = n * c;
#pragma omp parallel for simd schedule(static) num_threads(threads)
        for (int64_t i = 0; i < total; ++i)
            gz[i] = relu_grad(gy[i], y[i]);
        gy = gz;
    } else if (gresidual) {
        std::copy(gy, gy + n * c, gresidual);
    }
    const bool reduce = training || gweight || gbias;
    std::vector<double> sum_gy(c, 0.0), sum_gyx(c, 0.0);
    if (reduce)
        row_sums(n, c, threads, sum_gy.data(), sum_gyx.data(),
                 [&](int64_t i, double* a, double* b) __attribute__((always_inline)) {
                     const T* g = gy + i * c;
                     const T* row = x + i * xn;
#pragma omp simd
                     for (int64_t j = 0; j < c; ++j) {
                         a[j] += g[j];
                         b[j] += static_cast<double>(g[j]) *
                                 (static_cast<double>(row[j]) - mean[j]);
                     }
                 });
    for (int64_t j = 0; j < c; ++j) {
        if (gbias) gbias[j] = static_cast<T>(sum_gy[j]);
        if (gweight) gweight[j] = static_cast<T>(sum_gyx[j] * invstd[j]);
    }
    if (!gx) return;
    std::vector<T> k(c), a(c), b(c);  // gx = k * (gy - a - (x - mean) * b)
    for (int64_t j = 0; j < c; ++j) {
        const double is = invstd[j];
        k[j] = static_cast<T>(is * (weight ? weight[j] : 1.0));
        a[j] = training ? static_cast<T>(sum_gy[j] / n) : T(0);
        b[j] = training ? static_cast<T>(sum_gyx[j] * is * is / n) : T(0);
    }
    const T *kp = k.data(), *ap = a.data(), *bp = b.data();
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
        const T* g = gy + i * c;
        const T* row = x + i * xn;
        T* out = gx + i * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j)
            out[j] = kp[j] * (g[j] - ap[j] - (row[j] - mean[j]) * bp[j]);
    }
}

}  // namespace

template <typename T>
void batch_norm_forward(const T* x, T* y, int64_t n, int64_t c, int64_t s, const T* weight,
                        const T* bias, T* running_mean, T* running_var, T* mean_out,
                        T* invstd_out, bool training, double momentum, double eps,
                        const T* residual, bool relu, int64_t x_batch_stride) {
    const int64_t xn = x_batch_stride < 0 ? c * s : x_batch_stride;
    if (s == 1)
        return forward_rows(x, xn, y, n, c, weight, bias, running_mean, running_var, mean_out,
                            invstd_out, training, momentum, eps, residual, relu);
    const ForwardPlanes<T> a{x, residual, weight, bias, y, running_mean, running_var,
                             mean_out, invstd_out, n, c, s, xn, training, relu, momentum, eps};
    const auto block_fn = active_block<&forward_block_body<T>, ForwardPlanes<T>>();
    for_channel_blocks<T>(n, c, s, [&](int64_t c0, int64_t c1) { block_fn(a, c0, c1); });
}

template <typename T>
void batch_norm_backward(const T* gy, const T* x, int64_t n, int64_t c, int64_t s,
                         const T* weight, const T* mean, const T* invstd, T* gx, T* gweight,
                         T* gbias, bool training, const T* y, T* gresidual,
                         int64_t x_batch_stride) {
    const int64_t xn = x_batch_stride < 0 ? c * s : x_batch_stride;
    if (s == 1)
        return backward_rows(gy, x, xn, n, c, weight, mean, invstd, gx, gweight, gbias, training,
                             y, gresidual);
    const BackwardPlanes<T> a{gy, x, y, weight, mean, invstd, gx, gweight, gbias, gresidual,
                              n, c, s, xn, training};
    const auto block_fn = active_block<&backward_block_body<T>, BackwardPlanes<T>>();
    for_channel_blocks<T>(n, c, s, [&](int64_t c0, int64_t c1) { block_fn(a, c0, c1); });
}

#define PYFAST_INSTANTIATE(T)                                                                 \
    template void batch_norm_forward<T>(const T*, T*, int64_t, int64_t, int64_t, const T*,    \
                                        const T*, T*, T*, T*, T*, bool, double, double,       \
                                        const T*, bool, int64_t);                             \
    template void batch_norm_backward<T>(const T*, const T*, int64_t, int64_t, int64_t,       \
                                         const T*, const T*, const T*, T*, T*, T*, bool,      \
                                         const T*, T*, int64_t);
PYFAST_INSTANTIATE(float)
PYFAST_INSTANTIATE(double)
#undef PYFAST_INSTANTIATE

}  // namespace pyfast
