// Softmax cross-entropy (and softmax, BCE-with-logits, MSE) on the GPU: loss and gradient
// from one read of the logits and one write of the gradient, the probabilities never stored.
//
// Plain rows (s == 1): one block per row. Pass 1: each thread keeps a running (max m, sum of
// exp(x - m)) over its elements (16-byte loads when the rows allow), rescaling its sum when
// its max grows; the block merges the pairs with warp shuffles and one shared-memory step.
// Pass 2 re-reads the row (from L2: a block's row is at most a few hundred KB) and writes
//     g_c = grad_scale [(1 - e) w_y (p_c - [c == y]) + e / C (W p_c - w_c)]
// as a exp(x_c - m) - b w_c, summing w_c (x_c - m) for label smoothing on the way; then
// thread 0 rewrites the label's entry in double (a exp - b minus the one-hot term cancels
// when p_y is near 1) and the row's loss. Each element is read and written by the same
// thread, so dlogits may be the logits (in place).
//
// Positions (s > 1, logits (N, C, H, W)): one thread per position walks the classes at
// stride s; neighbouring threads take neighbouring positions, so every access of a warp is
// one contiguous run. Same two passes per thread.
//
// A label outside [0, C) that is not ignore_index is never used as an index: the position
// gets NaN loss and gradient. The pointwise losses are grid-stride loops; their sum, when
// asked for, is reduced per block in double and added atomically into one device value.

#include <cfloat>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/softmax_xent.h"

namespace pyfast::cuda {
namespace {

using std::int64_t;

constexpr int kWarp = 32;
constexpr int kPointwiseThreads = 256;
constexpr int kPositionThreads = 256;
constexpr int kMaxRowThreads = 1024;
constexpr int64_t kMaxBlocks = 1 << 20;  // grid-stride loops cover the rest

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_(double x) { return log1p(x); }

template <typename T>
__device__ __forceinline__ T lowest() { return sizeof(T) == 4 ? T(-FLT_MAX) : T(-DBL_MAX); }
template <typename T>
__device__ __forceinline__ T quiet_nan() { return T(NAN); }

// Running max m and sum s of exp(x - m). m starts at the lowest finite value, not -inf, so
// -inf logits add exp(-inf) = 0 rather than exp(NaN); a NaN logit makes s NaN.
template <typename T>
struct MaxSum {
    T m, s;
    __device__ __forceinline__ void add(T x) {
        if (x > m) {
            s = s * exp_(m - x) + T(1);
            m = x;
        } else {
            s += exp_(x - m);
        }
    }
    __device__ __forceinline__ void merge(T om, T os) {
        const T mm = om > m ? om : m;
        s = s * exp_(m - mm) + os * exp_(om - mm);
        m = mm;
    }
};

// Block-wide merge of every thread's (m, s); all threads get the result. `scratch` holds
// 2 * 32 values. Contains __syncthreads: call from every thread of the block.
template <typename T>
__device__ MaxSum<T> block_max_sum(MaxSum<T> v, T* scratch) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int warps = (blockDim.x + kWarp - 1) / kWarp;
#pragma unroll
    for (int off = kWarp / 2; off > 0; off /= 2)
        v.merge(__shfl_xor_sync(0xffffffffu, v.m, off), __shfl_xor_sync(0xffffffffu, v.s, off));
    if (lane == 0) {
        scratch[warp] = v.m;
        scratch[kWarp + warp] = v.s;
    }
    __syncthreads();
    MaxSum<T> r{lowest<T>(), T(0)};
    for (int w = 0; w < warps; ++w) r.merge(scratch[w], scratch[kWarp + w]);
    __syncthreads();  // scratch is reused by the caller's next reduction
    return r;
}

// Block-wide sum; all threads get the result. Contains __syncthreads.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int warps = (blockDim.x + kWarp - 1) / kWarp;
#pragma unroll
    for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T r = 0;
    for (int w = 0; w < warps; ++w) r += scratch[w];
    __syncthreads();
    return r;
}

// Constants of the cross-entropy formulas.
template <typename T>
struct XentConsts {
    T scale, hard, e_over_c, wsum;
    bool smooth;
};

// The label's gradient and the loss of one row or position, in double from p_y = exp(d_y) / s.
template <typename T>
__device__ __forceinline__ void label_terms(const XentConsts<T>& k, T w_y, T d_y, T s, T tw,
                                            T* g_y, T* loss) {
    const double hard = static_cast<double>(k.hard) * static_cast<double>(w_y);
    const double e_over_c = k.e_over_c, wsum = k.wsum;
    const double p = exp(static_cast<double>(d_y)) / static_cast<double>(s);
    *g_y = static_cast<T>(static_cast<double>(k.scale) *
                          (hard * (p - 1) + e_over_c * (wsum * p - static_cast<double>(w_y))));
    const double log_s = log(static_cast<double>(s));
    *loss = static_cast<T>(hard * (log_s - static_cast<double>(d_y)) +
                           (k.smooth ? e_over_c * (wsum * log_s - static_cast<double>(tw)) : 0.0));
}

template <typename T, bool Vec>
__global__ void __launch_bounds__(kMaxRowThreads) xent_rows_kernel(XentArgs<T> a, XentConsts<T> k) {
    __shared__ T scratch[2 * kWarp];
    const int64_t c = a.c;
    for (int64_t row = blockIdx.x; row < a.n; row += gridDim.x) {
        const T* x = a.logits + row * c;
        T* g = a.dlogits + row * c;
        const int64_t y = a.labels[row];
        if (y == a.ignore_index || y < 0 || y >= c) {  // the same branch for the whole block
            const T fill = y == a.ignore_index ? T(0) : quiet_nan<T>();
            for (int64_t i = threadIdx.x; i < c; i += blockDim.x) g[i] = fill;
            if (threadIdx.x == 0) a.losses[row] = fill;
            continue;
        }
        const T xy = x[y];  // read by every thread before any writes this row (in place)
        MaxSum<T> ms{lowest<T>(), T(0)};
        if (Vec) {
            for (int64_t i = 4 * threadIdx.x; i < c; i += 4 * blockDim.x) {
                T v[4];
                load4(x + i, v);  // not __ldg: in place, this kernel writes the same memory
#pragma unroll
                for (int j = 0; j < 4; ++j) ms.add(v[j]);
            }
        } else {
            for (int64_t i = threadIdx.x; i < c; i += blockDim.x) ms.add(x[i]);
        }
        const MaxSum<T> row_ms = block_max_sum(ms, scratch);
        const T m = row_ms.m, s = row_ms.s;
        const T w_y = a.weight ? a.weight[y] : T(1);
        const T coef = k.scale * (k.hard * w_y + k.e_over_c * k.wsum) / s;
        const T b = k.scale * k.e_over_c;
        T tw = 0;
        if (Vec) {
            for (int64_t i = 4 * threadIdx.x; i < c; i += 4 * blockDim.x) {
                T v[4], w[4] = {T(1), T(1), T(1), T(1)};
                load4(x + i, v);
                if (a.weight) load4_global(a.weight + i, w);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const T d = v[j] - m;
                    tw += w[j] * d;
                    v[j] = coef * exp_(d) - b * w[j];
                }
                store4(g + i, v);
            }
        } else {
            for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
                const T d = x[i] - m, w = a.weight ? a.weight[i] : T(1);
                tw += w * d;
                g[i] = coef * exp_(d) - b * w;
            }
        }
        if (k.smooth)
            tw = block_sum(tw, scratch);
        else
            __syncthreads();  // g[y] was written by some thread in pass 2
        if (threadIdx.x == 0) label_terms(k, w_y, xy - m, s, tw, g + y, a.losses + row);
    }
}

template <typename T>
__global__ void xent_positions_kernel(XentArgs<T> a, XentConsts<T> k) {
    const int64_t c = a.c, sp = a.s, total = a.n * a.s;
    for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t item = idx / sp, pos = idx % sp;
        const T* x = a.logits + item * c * sp + pos;
        T* g = a.dlogits + item * c * sp + pos;
        const int64_t y = a.labels[idx];
        if (y == a.ignore_index || y < 0 || y >= c) {
            const T fill = y == a.ignore_index ? T(0) : quiet_nan<T>();
            for (int64_t j = 0; j < c; ++j) g[j * sp] = fill;
            a.losses[idx] = fill;
            continue;
        }
        const T xy = x[y * sp];
        MaxSum<T> ms{lowest<T>(), T(0)};
        for (int64_t j = 0; j < c; ++j) ms.add(x[j * sp]);
        const T w_y = a.weight ? a.weight[y] : T(1);
        const T coef = k.scale * (k.hard * w_y + k.e_over_c * k.wsum) / ms.s;
        const T b = k.scale * k.e_over_c;
        T tw = 0;
        for (int64_t j = 0; j < c; ++j) {
            const T d = x[j * sp] - ms.m, w = a.weight ? a.weight[j] : T(1);
            tw += w * d;
            g[j * sp] = coef * exp_(d) - b * w;
        }
        label_terms(k, w_y, xy - ms.m, ms.s, tw, g + y * sp, a.losses + idx);
    }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
softmax_rows_kernel(const T* x_all, T* out_all, int64_t rows, int64_t c, bool log) {
    __shared__ T scratch[2 * kWarp];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* x = x_all + row * c;
        T* out = out_all + row * c;
        MaxSum<T> ms{lowest<T>(), T(0)};
        for (int64_t i = threadIdx.x; i < c; i += blockDim.x) ms.add(x[i]);
        const MaxSum<T> r = block_max_sum(ms, scratch);
        const T f = log ? log_(r.s) : T(1) / r.s;
        for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
            const T d = x[i] - r.m;
            out[i] = log ? d - f : exp_(d) * f;
        }
    }
}

template <typename T>
__global__ void softmax_positions_kernel(const T* x_all, T* out_all, int64_t a, int64_t c,
                                         int64_t b, bool log) {
    const int64_t total = a * b;
    for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t item = idx / b, pos = idx % b;
        const T* x = x_all + item * c * b + pos;
        T* out = out_all + item * c * b + pos;
        MaxSum<T> ms{lowest<T>(), T(0)};
        for (int64_t j = 0; j < c; ++j) ms.add(x[j * b]);
        const T f = log ? log_(ms.s) : T(1) / ms.s;
        for (int64_t j = 0; j < c; ++j) {
            const T d = x[j * b] - ms.m;
            out[j * b] = log ? d - f : exp_(d) * f;
        }
    }
}

// Per-block sum of `v` in double added to *total (when total is not nullptr).
__device__ void add_block_total(double v, double* total) {
    __shared__ double scratch[kWarp];
    v = block_sum(v, scratch);
    if (threadIdx.x == 0) atomicAdd(total, v);
}

template <typename T>
__global__ void bce_kernel(BceArgs<T> a, double* total) {
    double acc = 0;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.m;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const T x = a.x[i], y = a.y[i];
        // log(1 + e^-x) = max(-x, 0) + log1p(e^-|x|); sigmoid(-x) from the same e^-|x|
        const T t = exp_(-fabs(x));
        const T softplus = (x < T(0) ? -x : T(0)) + log1p_(t);
        const T sig_neg = (x >= T(0) ? t : T(1)) / (T(1) + t);
        const T lw = a.pos_weight ? T(1) + (a.pos_weight[i % a.pos_weight_period] - T(1)) * y : T(1);
        const T w = a.weight ? a.weight[i % a.weight_period] : T(1);
        const T loss = ((T(1) - y) * x + lw * softplus) * w;
        a.grad[i] = ((T(1) - y) - lw * sig_neg) * w * static_cast<T>(a.grad_scale);
        if (a.losses)
            a.losses[i] = loss;
        else
            acc += loss;
    }
    if (total) add_block_total(acc, total);
}

template <typename T>
__global__ void mse_kernel(const T* x, const T* y, T scale2, T* grad, T* losses, int64_t m,
                           double* total) {
    double acc = 0;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const T d = x[i] - y[i];
        grad[i] = scale2 * d;
        if (losses)
            losses[i] = d * d;
        else
            acc += d * d;
    }
    if (total) add_block_total(acc, total);
}

// Threads per row block: enough that every thread has several elements to hide latency.
int row_threads(int64_t c) {
    if (c <= 1024) return 128;
    if (c <= 4096) return 256;
    if (c <= 16384) return 512;
    return kMaxRowThreads;
}

unsigned grid_for(int64_t work_items, int64_t per_block) {
    const int64_t blocks = ceil_div(work_items, per_block);
    return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

// A device double for a sum, set to 0 on `stream`, read back after the kernel (waiting).
class DeviceTotal {
   public:
    explicit DeviceTotal(cudaStream_t stream)
        : stream_(stream), sum_(1, stream, "cudaMallocAsync (loss sum)") {
        check(cudaMemsetAsync(get(), 0, sizeof(double), stream), "cudaMemsetAsync (loss sum)");
    }
    double* get() const { return sum_.get(); }
    double read() const {
        double v = 0;
        check(cudaMemcpyAsync(&v, get(), sizeof(double), cudaMemcpyDeviceToHost, stream_),
              "cudaMemcpyAsync (loss sum)");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (loss sum)");
        return v;
    }

   private:
    cudaStream_t stream_;
    StreamScratch<double> sum_;
};

}  // namespace

template <typename T>
void softmax_xent(const XentArgs<T>& a, cudaStream_t stream) {
    if (a.n == 0 || a.s == 0) return;
    if (a.c < 1 || a.c > INT_MAX)
        throw std::invalid_argument("cuda softmax_xent: classes must be in 1.." +
                                    std::to_string(INT_MAX) + ", got " + std::to_string(a.c));
    double wsum = static_cast<double>(a.c);
    XentConsts<T> k;
    if (a.weight) {
        // W = sum of the weights, on the device: one small reduction kernel would do, but
        // a host copy of C values is simpler and C is small next to N C.
        std::vector<T> w(static_cast<size_t>(a.c));
        check(cudaMemcpyAsync(w.data(), a.weight, sizeof(T) * a.c, cudaMemcpyDeviceToHost, stream),
              "cudaMemcpyAsync (class weights)");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (class weights)");
        wsum = 0;
        for (const T v : w) wsum += static_cast<double>(v);
    }
    k.scale = static_cast<T>(a.grad_scale);
    k.hard = static_cast<T>(1 - a.smoothing);
    k.e_over_c = static_cast<T>(a.smoothing / static_cast<double>(a.c));
    k.wsum = static_cast<T>(wsum);
    k.smooth = a.smoothing != 0;
    if (a.s == 1) {
        const bool vec = a.c % 4 == 0 && is_aligned(a.logits, 16) && is_aligned(a.dlogits, 16) &&
                         (!a.weight || is_aligned(a.weight, 16));
        const unsigned grid = static_cast<unsigned>(a.n < kMaxBlocks ? a.n : kMaxBlocks);
        const int threads = row_threads(a.c);
        if (vec)
            xent_rows_kernel<T, true><<<grid, threads, 0, stream>>>(a, k);
        else
            xent_rows_kernel<T, false><<<grid, threads, 0, stream>>>(a, k);
        check_launch("cuda softmax_xent rows kernel launch");
    } else {
        xent_positions_kernel<T><<<grid_for(a.n * a.s, kPositionThreads), kPositionThreads, 0,
                                   stream>>>(a, k);
        check_launch("cuda softmax_xent positions kernel launch");
    }
}

template <typename T>
void softmax(const T* x, T* out, int64_t a, int64_t c, int64_t b, bool log, cudaStream_t stream) {
    if (a == 0 || b == 0 || c == 0) return;
    if (b == 1) {
        const unsigned grid = static_cast<unsigned>(a < kMaxBlocks ? a : kMaxBlocks);
        softmax_rows_kernel<T><<<grid, row_threads(c), 0, stream>>>(x, out, a, c, log);
        check_launch("cuda softmax rows kernel launch");
    } else {
        softmax_positions_kernel<T><<<grid_for(a * b, kPositionThreads), kPositionThreads, 0,
                                      stream>>>(x, out, a, c, b, log);
        check_launch("cuda softmax positions kernel launch");
    }
}

template <typename T>
double bce_with_logits(const BceArgs<T>& a, cudaStream_t stream) {
    if (a.m == 0) return 0;
    const unsigned grid = grid_for(a.m, kPointwiseThreads);
    if (a.losses) {
        bce_kernel<T><<<grid, kPointwiseThreads, 0, stream>>>(a, nullptr);
        check_launch("cuda bce_with_logits kernel launch");
        return 0;
    }
    DeviceTotal total(stream);
    bce_kernel<T><<<grid, kPointwiseThreads, 0, stream>>>(a, total.get());
    check_launch("cuda bce_with_logits kernel launch");
    return total.read();
}

template <typename T>
double mse(const T* x, const T* y, double grad_scale, T* grad, T* losses, int64_t m,
           cudaStream_t stream) {
    if (m == 0) return 0;
    const unsigned grid = grid_for(m, kPointwiseThreads);
    const T scale2 = static_cast<T>(2 * grad_scale);
    if (losses) {
        mse_kernel<T><<<grid, kPointwiseThreads, 0, stream>>>(x, y, scale2, grad, losses, m, nullptr);
        check_launch("cuda mse kernel launch");
        return 0;
    }
    DeviceTotal total(stream);
    mse_kernel<T><<<grid, kPointwiseThreads, 0, stream>>>(x, y, scale2, grad, nullptr, m,
                                                          total.get());
    check_launch("cuda mse kernel launch");
    return total.read();
}

template void softmax_xent<float>(const XentArgs<float>&, cudaStream_t);
template void softmax_xent<double>(const XentArgs<double>&, cudaStream_t);
template void softmax<float>(const float*, float*, int64_t, int64_t, int64_t, bool, cudaStream_t);
template void softmax<double>(const double*, double*, int64_t, int64_t, int64_t, bool, cudaStream_t);
template double bce_with_logits<float>(const BceArgs<float>&, cudaStream_t);
template double bce_with_logits<double>(const BceArgs<double>&, cudaStream_t);
template double mse<float>(const float*, const float*, double, float*, float*, int64_t, cudaStream_t);
template double mse<double>(const double*, const double*, double, double*, double*, int64_t,
                            cudaStream_t);

}  // namespace pyfast::cuda
