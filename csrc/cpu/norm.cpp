// Batch normalisation, forward (training and eval) and backward, float32 and float64.
//
// Two layouts of (N, C, S):
//  * planes (S > 1, BatchNorm2d): threads take whole channels. A channel's N planes are
//    read once for the statistics: each plane (in chunks of at most kChunk elements, so a
//    chunk sits in L1/L2) gets its mean by one pass and its squared deviations by a second
//    pass over the cached chunk, and chunks merge with Chan's parallel formula; double
//    accumulators throughout. The channel is normalised (one fused multiply-add with
//    scale = weight * invstd, shift = bias - mean * scale) right after its statistics,
//    while its N * S elements are still in L2 at ResNet/U-Net sizes, so x comes from memory
//    about once. The backward does the same: one pass for sum(gy) and sum(gy * (x - mean)),
//    then the fused gradient formula over the cached channel.
//  * rows (S == 1, BatchNorm1d on (N, C)): channels are contiguous within a row, so threads
//    take blocks of rows and accumulate per-channel sums (shifted by the first row, in
//    double) that are reduced after the parallel loop; the elementwise pass then vectorises
//    across channels.

#include "cpu/norm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/runtime.h"

namespace pyfast {
namespace {

using std::int64_t;

constexpr int64_t kChunk = 8192;
// Mean and sum of squared deviations of one channel (planes layout).
template <typename T>
void channel_moments(const T* x, int64_t n, int64_t c, int64_t s, int64_t ch, double& mean,
                     double& m2) {
    double count = 0, mu = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i) {
        const T* plane = x + (i * c + ch) * s;
        for (int64_t b = 0; b < s; b += kChunk) {
            const int64_t len = std::min(kChunk, s - b);
            const T* p = plane + b;
            double sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < len; ++j) sum += p[j];
            const double m = sum / static_cast<double>(len);
            double dev = 0;
#pragma omp simd reduction(+ : dev)
            for (int64_t j = 0; j < len; ++j) {
                const double d = static_cast<double>(p[j]) - m;
                dev += d * d;
            }
            const double total = count + static_cast<double>(len);
            const double delta = m - mu;
            mu += delta * static_cast<double>(len) / total;
            sq += dev + delta * delta * count * static_cast<double>(len) / total;
            count = total;
        }
    }
    mean = mu;
    m2 = sq;
}

template <typename T>
void affine_planes(const T* x, T* y, int64_t n, int64_t c, int64_t s, int64_t ch, T scale,
                   T shift) {
    for (int64_t i = 0; i < n; ++i) {
        const T* p = x + (i * c + ch) * s;
        T* q = y + (i * c + ch) * s;
#pragma omp simd
        for (int64_t j = 0; j < s; ++j) q[j] = p[j] * scale + shift;
    }
}

// Statistics of channel `ch` -> mean_out/invstd_out (and running statistics in training).
template <typename T>
void finish_stats(int64_t ch, double mean, double var_biased, int64_t count, const T* weight,
                  const T* bias, T* running_mean, T* running_var, T* mean_out, T* invstd_out,
                  double momentum, double eps, T& scale, T& shift) {
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

template <typename T>
void forward_rows(const T* x, T* y, int64_t n, int64_t c, const T* weight, const T* bias,
                  T* running_mean, T* running_var, T* mean_out, T* invstd_out, bool training,
                  double momentum, double eps) {
    std::vector<T> scale(c), shift(c);
    const int threads = team(n * c, n);
    if (training) {
        // per thread: c shifted sums, then c shifted sums of squares
        std::vector<double> partial(static_cast<size_t>(threads) * 2 * c, 0.0);
#pragma omp parallel num_threads(threads)
        {
            double* acc = partial.data() + static_cast<size_t>(omp_get_thread_num()) * 2 * c;
            double* acc2 = acc + c;
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; ++i) {
                const T* row = x + i * c;
#pragma omp simd
                for (int64_t j = 0; j < c; ++j) {
                    const double d = static_cast<double>(row[j]) - x[j];
                    acc[j] += d;
                    acc2[j] += d * d;
                }
            }
        }
        for (int64_t j = 0; j < c; ++j) {
            double s1 = 0, s2 = 0;
            for (int t = 0; t < threads; ++t) {
                s1 += partial[static_cast<size_t>(t) * 2 * c + j];
                s2 += partial[static_cast<size_t>(t) * 2 * c + c + j];
            }
            const double m = s1 / n;
            const double var = std::max(s2 / n - m * m, 0.0);
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
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
        const T* row = x + i * c;
        T* out = y + i * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) out[j] = row[j] * sc[j] + sh[j];
    }
}

template <typename T>
void backward_rows(const T* gy, const T* x, int64_t n, int64_t c, const T* weight,
                   const T* mean, const T* invstd, T* gx, T* gweight, T* gbias, bool training) {
    const int threads = team(n * c, n);
    const bool reduce = training || gweight || gbias;
    std::vector<double> sum_gy(c, 0.0), sum_gyx(c, 0.0);
    if (reduce) {
        std::vector<double> partial(static_cast<size_t>(threads) * 2 * c, 0.0);
#pragma omp parallel num_threads(threads)
        {
            double* a = partial.data() + static_cast<size_t>(omp_get_thread_num()) * 2 * c;
            double* b = a + c;
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; ++i) {
                const T* g = gy + i * c;
                const T* row = x + i * c;
#pragma omp simd
                for (int64_t j = 0; j < c; ++j) {
                    a[j] += g[j];
                    b[j] += static_cast<double>(g[j]) * (static_cast<double>(row[j]) - mean[j]);
                }
            }
        }
        for (int t = 0; t < threads; ++t)
            for (int64_t j = 0; j < c; ++j) {
                sum_gy[j] += partial[static_cast<size_t>(t) * 2 * c + j];
                sum_gyx[j] += partial[static_cast<size_t>(t) * 2 * c + c + j];
            }
    }
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
        const T* row = x + i * c;
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
                        T* invstd_out, bool training, double momentum, double eps) {
    if (s == 1)
        return forward_rows(x, y, n, c, weight, bias, running_mean, running_var, mean_out,
                            invstd_out, training, momentum, eps);
    const int64_t count = n * s;
#pragma omp parallel for schedule(static) num_threads(team(n * c * s, c))
    for (int64_t ch = 0; ch < c; ++ch) {
        double mean, var;
        if (training) {
            double m2;
            channel_moments(x, n, c, s, ch, mean, m2);
            var = m2 / static_cast<double>(count);
        } else {
            mean = running_mean[ch];
            var = running_var[ch];
        }
        T scale, shift;
        finish_stats<T>(ch, mean, var, count, weight, bias, training ? running_mean : nullptr,
                        training ? running_var : nullptr, mean_out, invstd_out, momentum, eps,
                        scale, shift);
        affine_planes(x, y, n, c, s, ch, scale, shift);
    }
}

template <typename T>
void batch_norm_backward(const T* gy, const T* x, int64_t n, int64_t c, int64_t s,
                         const T* weight, const T* mean, const T* invstd, T* gx, T* gweight,
                         T* gbias, bool training) {
    if (s == 1)
        return backward_rows(gy, x, n, c, weight, mean, invstd, gx, gweight, gbias, training);
    const double count = static_cast<double>(n * s);
    const bool reduce = training || gweight || gbias;
#pragma omp parallel for schedule(static) num_threads(team(n * c * s, c))
    for (int64_t ch = 0; ch < c; ++ch) {
        const double mu = mean[ch], is = invstd[ch];
        double sum_gy = 0, sum_gyx = 0;
        if (reduce) {
            for (int64_t i = 0; i < n; ++i) {
                const T* g = gy + (i * c + ch) * s;
                const T* p = x + (i * c + ch) * s;
#pragma omp simd reduction(+ : sum_gy, sum_gyx)
                for (int64_t j = 0; j < s; ++j) {
                    sum_gy += g[j];
                    sum_gyx += static_cast<double>(g[j]) * (static_cast<double>(p[j]) - mu);
                }
            }
        }
        if (gbias) gbias[ch] = static_cast<T>(sum_gy);
        if (gweight) gweight[ch] = static_cast<T>(sum_gyx * is);
        if (!gx) continue;
        const T k = static_cast<T>(is * (weight ? weight[ch] : 1.0));
        const T a = training ? static_cast<T>(sum_gy / count) : T(0);
        const T b = training ? static_cast<T>(sum_gyx * is * is / count) : T(0);
        const T m = static_cast<T>(mu);
        for (int64_t i = 0; i < n; ++i) {
            const T* g = gy + (i * c + ch) * s;
            const T* p = x + (i * c + ch) * s;
            T* out = gx + (i * c + ch) * s;
#pragma omp simd
            for (int64_t j = 0; j < s; ++j) out[j] = k * (g[j] - a - (p[j] - m) * b);
        }
    }
}

#define PYFAST_INSTANTIATE(T)                                                                 \
    template void batch_norm_forward<T>(const T*, T*, int64_t, int64_t, int64_t, const T*,    \
                                        const T*, T*, T*, T*, T*, bool, double, double);      \
    template void batch_norm_backward<T>(const T*, const T*, int64_t, int64_t, int64_t,       \
                                         const T*, const T*, const T*, T*, T*, T*, bool);
PYFAST_INSTANTIATE(float)
PYFAST_INSTANTIATE(double)
#undef PYFAST_INSTANTIATE

}  // namespace pyfast
