// Convolution on the GPU (NCHW, float32 and float64) as implicit GEMMs: the operands of each
// pass are gathered from the tensors straight into shared memory, so no column matrix exists.
// Per group g, with P = OH*OW:
//   forward      M = Kg, N = n*P (image, oh, ow), R = Cg*kh*kw:  y = W[g] @ cols(x)
//   input grad   M = Cg, N = n*H*W (image, h, w),  R = Kg*kh*kw:  gx[c, h, w] = sum over
//                (k, i, j) of W[k, c, i, j] * gy[k, (h + p - i*d) / s, ...] where that
//                division is exact and in range (a gather: no atomics, any stride)
//   weight grad  M = Kg, N = Cg*kh*kw, R = n*P:                   gW = gy @ cols(x)^T
// One kernel template serves the three: a block of 256 threads computes a 64 x 64 tile of the
// GEMM, each thread a 4 x 4 piece strided by 16 (a warp's shared reads are then broadcasts
// or 16 consecutive words: no bank conflicts). The reduction advances in slices of 16: each
// thread gathers 4 elements of A and 4 of B per slice into registers while the block computes
// on the other shared buffer (double buffering, one __syncthreads per slice). Threads walk
// the operand along its contiguous memory axis (R for the weights and for gy in the weight
// gradient, the output positions otherwise), and what stays fixed for a thread over the
// slices (its output position or its row) is decoded once. Bias and ReLU are applied as the
// tile is written. The weight gradient's reduction (over every image and position) is cut
// into splits that run as separate blocks, writing partial sums that a second kernel adds in
// a fixed order, so results do not depend on scheduling.

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "cuda/common.cuh"
#include "cuda/conv.h"

namespace pyfast::cuda {
namespace {

using std::int64_t;

constexpr int kTileM = 64, kTileN = 64, kTileK = 16, kThreads = 256;
constexpr int kThreadsPerSide = 16;  // the 16 x 16 thread grid over a tile, 4 x 4 each
// Workspace for the weight gradient's partial sums, at most.
constexpr int64_t kMaxWorkspaceBytes = int64_t(256) << 20;

static_assert(kTileM * kTileK == 4 * kThreads && kTileN * kTileK == 4 * kThreads,
              "each thread stages 4 elements of each operand per slice");

enum class Pass { forward, input_grad, weight_grad };

// The convolution in ints, and the GEMM view of one pass over it.
struct Geometry {
    int n, c, h, w, k, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw;
    int groups, cg, kg, taps;
    int group0, launch_groups;  // groups [group0, group0 + launch_groups) in this launch
    int m, cols, reduce;        // the GEMM: M, N and the reduction length R
    int chunk;                  // reduction per split (weight gradient), a multiple of kTileK
};

// ---- operands -----------------------------------------------------------------------------
// For each pass: A(m, r), B(r, col) and where out(m, col) goes. `*_fixed` decodes the index
// that stays the same for a thread over the slices; the loads decode r. Outside the matrices
// (m >= M, col >= N, r >= the split's end) and in the padding they read 0.

template <Pass P, typename T>
struct Ops;

template <typename T>
struct Ops<Pass::forward, T> {
    static constexpr bool kBAlongR = false;  // x is contiguous along output positions
    struct Row { int64_t base; bool ok; };
    struct Col { int64_t base; int ih0, iw0; bool ok; };

    __device__ static Row a_fixed(const Geometry& d, int g, int m) {
        return {int64_t(g * d.kg + m) * d.reduce, m < d.m};
    }
    __device__ static T a_load(const Geometry& d, const T* w, const Row& row, int r, int r_end) {
        return row.ok && r < r_end ? __ldg(w + row.base + r) : T(0);
    }
    __device__ static Col b_fixed(const Geometry& d, int g, int col) {
        const int p = d.oh * d.ow;
        const int img = col / p, pos = col - img * p, oh = pos / d.ow, ow = pos - oh * d.ow;
        return {(int64_t(img) * d.c + int64_t(g) * d.cg) * d.h * d.w, oh * d.sh - d.ph,
                ow * d.sw - d.pw, col < d.cols};
    }
    __device__ static T b_load(const Geometry& d, const T* x, const Col& col, int r, int r_end) {
        if (!col.ok || r >= r_end) return T(0);
        const int c = r / d.taps, t = r - c * d.taps, i = t / d.kw, j = t - i * d.kw;
        const int ih = col.ih0 + i * d.dh, iw = col.iw0 + j * d.dw;
        if (ih < 0 || ih >= d.h || iw < 0 || iw >= d.w) return T(0);
        return __ldg(x + col.base + (int64_t(c) * d.h + ih) * d.w + iw);
    }
    __device__ static void store(const Geometry& d, T* y, const T* bias, bool relu, int g, int,
                                 int m, int col, T v) {
        if (m >= d.m || col >= d.cols) return;
        const int p = d.oh * d.ow, img = col / p, pos = col - img * p;
        const int channel = g * d.kg + m;
        if (bias) v += __ldg(bias + channel);
        if (relu) v = v < T(0) ? T(0) : v;  // NaN stays NaN, as torch.relu
        y[(int64_t(img) * d.k + channel) * p + pos] = v;
    }
};

template <typename T>
struct Ops<Pass::input_grad, T> {
    static constexpr bool kBAlongR = false;  // gy is contiguous along positions
    struct Row { int64_t base; bool ok; };
    struct Col { int64_t base; int th0, tw0; bool ok; };

    // A(c, (k, i, j)) = w[g*kg + k, c, i, j]
    __device__ static Row a_fixed(const Geometry& d, int g, int m) {
        return {(int64_t(g) * d.kg * d.cg + m) * d.taps, m < d.m};
    }
    __device__ static T a_load(const Geometry& d, const T* w, const Row& row, int r, int r_end) {
        if (!row.ok || r >= r_end) return T(0);
        const int kl = r / d.taps, t = r - kl * d.taps;
        return __ldg(w + row.base + int64_t(kl) * d.cg * d.taps + t);
    }
    // B((k, i, j), (img, h, w)) = gy[img, g*kg + k, (h + ph - i*dh) / sh, (w + pw - j*dw) / sw]
    __device__ static Col b_fixed(const Geometry& d, int g, int col) {
        const int hw = d.h * d.w;
        const int img = col / hw, pos = col - img * hw, h = pos / d.w, w = pos - h * d.w;
        return {(int64_t(img) * d.k + int64_t(g) * d.kg) * d.oh * d.ow, h + d.ph, w + d.pw,
                col < d.cols};
    }
    __device__ static T b_load(const Geometry& d, const T* gy, const Col& col, int r, int r_end) {
        if (!col.ok || r >= r_end) return T(0);
        const int kl = r / d.taps, t = r - kl * d.taps, i = t / d.kw, j = t - i * d.kw;
        const int th = col.th0 - i * d.dh, tw = col.tw0 - j * d.dw;
        if (th < 0 || tw < 0) return T(0);
        const int oh = th / d.sh, ow = tw / d.sw;
        if (oh * d.sh != th || ow * d.sw != tw || oh >= d.oh || ow >= d.ow) return T(0);
        return __ldg(gy + col.base + (int64_t(kl) * d.oh + oh) * d.ow + ow);
    }
    __device__ static void store(const Geometry& d, T* gx, const T* bias, bool, int g, int,
                                 int m, int col, T v) {
        if (m >= d.m || col >= d.cols) return;
        const int hw = d.h * d.w, img = col / hw, pos = col - img * hw;
        const int channel = g * d.cg + m;
        if (bias) v += __ldg(bias + channel);
        gx[(int64_t(img) * d.c + channel) * hw + pos] = v;
    }
};

template <typename T>
struct Ops<Pass::weight_grad, T> {
    static constexpr bool kBAlongR = true;  // x is contiguous along the positions it sums over
    struct Row { int64_t base; bool ok; };
    struct Col { int64_t base; int ioff, joff; bool ok; };

    // A(k, (img, pos)) = gy[img, g*kg + k, pos]
    __device__ static Row a_fixed(const Geometry& d, int g, int m) {
        return {int64_t(g * d.kg + m) * d.oh * d.ow, m < d.m};
    }
    __device__ static T a_load(const Geometry& d, const T* gy, const Row& row, int r, int r_end) {
        if (!row.ok || r >= r_end) return T(0);
        const int p = d.oh * d.ow, img = r / p, pos = r - img * p;
        return __ldg(gy + row.base + int64_t(img) * d.k * p + pos);
    }
    // B((img, oh, ow), (c, i, j)) = x[img, g*cg + c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
    __device__ static Col b_fixed(const Geometry& d, int g, int col) {
        const int c = col / d.taps, t = col - c * d.taps, i = t / d.kw, j = t - i * d.kw;
        return {(int64_t(g) * d.cg + c) * d.h * d.w, i * d.dh - d.ph, j * d.dw - d.pw,
                col < d.cols};
    }
    __device__ static T b_load(const Geometry& d, const T* x, const Col& col, int r, int r_end) {
        if (!col.ok || r >= r_end) return T(0);
        const int p = d.oh * d.ow, img = r / p, pos = r - img * p, oh = pos / d.ow,
                  ow = pos - oh * d.ow;
        const int ih = oh * d.sh + col.ioff, iw = ow * d.sw + col.joff;
        if (ih < 0 || ih >= d.h || iw < 0 || iw >= d.w) return T(0);
        return __ldg(x + col.base + int64_t(img) * d.c * d.h * d.w + int64_t(ih) * d.w + iw);
    }
    // Split s writes its partial sums to out + s * (K * cols): gw itself when there is one.
    __device__ static void store(const Geometry& d, T* out, const T*, bool, int g, int split,
                                 int m, int col, T v) {
        if (m >= d.m || col >= d.cols) return;
        out[(int64_t(split) * d.k + g * d.kg + m) * d.cols + col] = v;
    }
};

// ---- the kernel ---------------------------------------------------------------------------

template <Pass P, typename T>
__global__ void __launch_bounds__(kThreads)
conv_implicit_gemm(Geometry d, const T* __restrict__ a, const T* __restrict__ b,
                   T* __restrict__ out, const T* __restrict__ bias, bool relu) {
    using O = Ops<P, T>;
    // One padding element per row: the A stores (16 consecutive r of 2 rows per warp) then
    // fall in distinct banks but for a 2-way overlap.
    __shared__ T a_s[2][kTileK][kTileM + 1];
    __shared__ T b_s[2][kTileK][kTileN + 1];

    const int tid = threadIdx.x;
    const int col0 = blockIdx.x * kTileN, m0 = blockIdx.y * kTileM;
    const int g = d.group0 + static_cast<int>(blockIdx.z) % d.launch_groups;
    const int split = static_cast<int>(blockIdx.z) / d.launch_groups;
    const int r_begin = split * d.chunk, r_end = min(d.reduce, r_begin + d.chunk);

    // A walks along r: 16 consecutive r of a row per half-warp, rows 16 apart.
    const int a_r = tid % kTileK;
    typename O::Row rows[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) rows[q] = O::a_fixed(d, g, m0 + tid / kTileK + 16 * q);
    // B walks along r too (weight gradient), or along its columns.
    int b_r[4], b_c[4];
    typename O::Col cols[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        if (O::kBAlongR) {
            b_r[q] = tid % kTileK;
            b_c[q] = tid / kTileK + 16 * q;
        } else {
            b_r[q] = tid / kTileN + 4 * q;
            b_c[q] = tid % kTileN;
        }
        cols[q] = O::b_fixed(d, g, col0 + b_c[q]);
    }

    T a_next[4], b_next[4];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int q = 0; q < 4; ++q) a_next[q] = O::a_load(d, a, rows[q], k0 + a_r, r_end);
#pragma unroll
        for (int q = 0; q < 4; ++q) b_next[q] = O::b_load(d, b, cols[q], k0 + b_r[q], r_end);
    };
    auto stash = [&](int buf) {
#pragma unroll
        for (int q = 0; q < 4; ++q) a_s[buf][a_r][tid / kTileK + 16 * q] = a_next[q];
#pragma unroll
        for (int q = 0; q < 4; ++q) b_s[buf][b_r[q]][b_c[q]] = b_next[q];
    };

    const int tx = tid % kThreadsPerSide, ty = tid / kThreadsPerSide;
    T acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = T(0);

    fetch(r_begin);
    stash(0);
    __syncthreads();
    int buf = 0;
    for (int k0 = r_begin; k0 < r_end; k0 += kTileK) {
        // The next slice's global loads are in flight while this one is computed; they land
        // in the other buffer, which everyone finished reading before the last sync.
        const bool more = k0 + kTileK < r_end;
        if (more) fetch(k0 + kTileK);
#pragma unroll
        for (int kk = 0; kk < kTileK; ++kk) {
            T av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) av[i] = a_s[buf][kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = b_s[buf][kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        if (more) stash(buf ^ 1);
        __syncthreads();
        buf ^= 1;
    }

#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
            O::store(d, out, bias, relu, g, split, m0 + ty + 16 * i, col0 + tx + 16 * j,
                     acc[i][j]);
}

// gw[e] = sum over splits s of partial[s * size + e], in the order of s.
template <typename T>
__global__ void sum_splits(const T* __restrict__ partial, T* __restrict__ gw, int64_t size,
                           int splits) {
    for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < size;
         e += int64_t(gridDim.x) * blockDim.x) {
        T v = T(0);
        for (int s = 0; s < splits; ++s) v += partial[s * size + e];
        gw[e] = v;
    }
}

// gb[k] = sum of gy[:, k, :, :]: one block per channel, a fixed-shape tree at the end.
template <typename T>
__global__ void bias_grad(const T* __restrict__ gy, T* __restrict__ gb, int n, int k, int p) {
    __shared__ T part[kThreads];
    const int channel = blockIdx.x;
    T v = T(0);
    for (int img = 0; img < n; ++img) {
        const T* row = gy + (int64_t(img) * k + channel) * p;
        for (int e = threadIdx.x; e < p; e += kThreads) v += __ldg(row + e);
    }
    part[threadIdx.x] = v;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) gb[channel] = part[0];
}

// out[img, c, :] = bias[c] (or 0): a transposed convolution with nothing to sum.
template <typename T>
__global__ void fill_channels(T* __restrict__ out, const T* __restrict__ bias, int64_t size,
                              int64_t hw, int c) {
    for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < size;
         e += int64_t(gridDim.x) * blockDim.x)
        out[e] = bias ? __ldg(bias + (e / hw) % c) : T(0);
}

// ---- host side ----------------------------------------------------------------------------

constexpr int64_t kMaxExtent = INT_MAX - 2 * kTileN;  // tile-rounded indices stay in int

int to_int(int64_t v, const char* what) {
    if (v < 0 || v > kMaxExtent)
        throw std::invalid_argument(std::string("cuda conv: ") + what + " = " + std::to_string(v) +
                                    " is outside 0.." + std::to_string(kMaxExtent));
    return static_cast<int>(v);
}

Geometry geometry(const ConvShape& s) {
    Geometry d{};
    d.n = to_int(s.n, "batch"), d.c = to_int(s.c, "input channels");
    d.h = to_int(s.h, "input rows"), d.w = to_int(s.w, "input columns");
    d.k = to_int(s.k, "output channels"), d.kh = to_int(s.kh, "kernel rows");
    d.kw = to_int(s.kw, "kernel columns"), d.oh = to_int(s.oh, "output rows");
    d.ow = to_int(s.ow, "output columns");
    d.sh = to_int(s.sh, "stride"), d.sw = to_int(s.sw, "stride");
    d.ph = to_int(s.ph, "padding"), d.pw = to_int(s.pw, "padding");
    d.dh = to_int(s.dh, "dilation"), d.dw = to_int(s.dw, "dilation");
    d.groups = to_int(s.groups, "groups");
    d.cg = d.c / d.groups, d.kg = d.k / d.groups;
    d.taps = to_int(s.kh * s.kw, "kernel taps");
    // Every index the kernels form from these must fit an int too.
    to_int(s.n * s.oh * s.ow, "batch x output positions");
    to_int(s.n * s.h * s.w, "batch x input positions");
    to_int(int64_t(d.cg) * d.taps, "input channels per group x taps");
    to_int(int64_t(d.kg) * d.taps, "output channels per group x taps");
    to_int(s.h * s.w, "input positions");
    to_int(s.oh * s.ow, "output positions");
    to_int(s.oh * s.sh + s.dh * (s.kh - 1) + s.h + 2 * s.ph, "row index range");
    to_int(s.ow * s.sw + s.dw * (s.kw - 1) + s.w + 2 * s.pw, "column index range");
    return d;
}

int multiprocessors() {
    int device = 0, count = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
          "cudaDeviceGetAttribute");
    return std::max(count, 1);
}

// Runs one pass over every group (in launches of at most 65535 / splits groups, the grid's
// z limit). d.m, d.cols, d.reduce and d.chunk are set by the caller.
template <Pass P, typename T>
void launch(Geometry d, int splits, const T* a, const T* b, T* out, const T* bias, bool relu,
            cudaStream_t stream) {
    const int64_t tiles_m = ceil_div(d.m, kTileM), tiles_n = ceil_div(d.cols, kTileN);
    if (tiles_m > 65535)
        throw std::invalid_argument("cuda conv: " + std::to_string(d.m) +
                                    " rows are too many for one grid");
    const int per_launch = std::max(1, 65535 / splits);
    for (int g0 = 0; g0 < d.groups; g0 += per_launch) {
        d.group0 = g0;
        d.launch_groups = std::min(per_launch, d.groups - g0);
        const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>(tiles_m),
                        static_cast<unsigned>(d.launch_groups * splits));
        conv_implicit_gemm<P, T><<<grid, kThreads, 0, stream>>>(d, a, b, out, bias, relu);
        check_launch("cuda conv kernel launch");
    }
}

unsigned grid_for(int64_t size) {
    return static_cast<unsigned>(std::min<int64_t>(ceil_div(size, kThreads), 65535 * 8));
}

template <typename T>
void input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx,
                cudaStream_t stream) {
    Geometry d = geometry(s);
    const int64_t size = s.n * s.c * s.h * s.w;
    if (size == 0) return;
    if (d.kg == 0 || s.oh * s.ow == 0) {
        fill_channels<T><<<grid_for(size), kThreads, 0, stream>>>(gx, bias, size, s.h * s.w, d.c);
        check_launch("cuda conv fill launch");
        return;
    }
    d.m = d.cg, d.cols = d.n * d.h * d.w, d.reduce = d.kg * d.taps, d.chunk = d.reduce;
    launch<Pass::input_grad, T>(d, 1, w, gy, gx, bias, false, stream);
}

template <typename T>
void weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw, cudaStream_t stream) {
    Geometry d = geometry(s);
    const int64_t size = s.k * d.cg * d.taps;
    if (size == 0) return;
    d.m = d.kg, d.cols = d.cg * d.taps, d.reduce = d.n * d.oh * d.ow;
    if (d.reduce == 0) {
        check(cudaMemsetAsync(gw, 0, size * sizeof(T), stream), "cudaMemsetAsync");
        return;
    }
    // Enough blocks to fill the GPU twice over, each summing at least 8 slices.
    const int64_t blocks = ceil_div(d.m, kTileM) * ceil_div(d.cols, kTileN) * d.groups;
    int64_t splits = std::clamp<int64_t>(ceil_div(2 * multiprocessors(), blocks), 1,
                                         ceil_div(d.reduce, 8 * kTileK));
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, kMaxWorkspaceBytes /
                                                                (size * int64_t(sizeof(T)))));
    d.chunk = static_cast<int>(ceil_div(ceil_div(d.reduce, splits), kTileK) * kTileK);
    splits = ceil_div(d.reduce, d.chunk);
    if (splits == 1) {
        launch<Pass::weight_grad, T>(d, 1, gy, x, gw, nullptr, false, stream);
        return;
    }
    T* partial = nullptr;
    check(cudaMallocAsync(reinterpret_cast<void**>(&partial), splits * size * sizeof(T), stream),
          "cudaMallocAsync (weight-gradient partial sums)");
    try {
        launch<Pass::weight_grad, T>(d, static_cast<int>(splits), gy, x, partial, nullptr, false,
                                     stream);
        sum_splits<T><<<grid_for(size), kThreads, 0, stream>>>(partial, gw, size,
                                                               static_cast<int>(splits));
        check_launch("cuda conv split-sum launch");
    } catch (...) {
        cudaFreeAsync(partial, stream);
        throw;
    }
    check(cudaFreeAsync(partial, stream), "cudaFreeAsync");
}

}  // namespace

template <typename T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu,
                    cudaStream_t stream) {
    Geometry d = geometry(s);
    if (d.n == 0 || d.k == 0 || d.oh * d.ow == 0) return;
    d.m = d.kg, d.cols = d.n * d.oh * d.ow, d.reduce = d.cg * d.taps, d.chunk = d.reduce;
    launch<Pass::forward, T>(d, 1, w, x, y, bias, relu, stream);
}

template <typename T>
void conv2d_backward(const ConvShape& s, const T* gy, const T* x, const T* w, T* gx, T* gw,
                     T* gb, cudaStream_t stream) {
    if (gb && s.k > 0) {
        if (s.n * s.oh * s.ow == 0) {
            check(cudaMemsetAsync(gb, 0, s.k * sizeof(T), stream), "cudaMemsetAsync");
        } else {
            bias_grad<T><<<to_int(s.k, "output channels"), kThreads, 0, stream>>>(
                gy, gb, to_int(s.n, "batch"), static_cast<int>(s.k),
                to_int(s.oh * s.ow, "output positions"));
            check_launch("cuda conv bias-gradient launch");
        }
    }
    if (gw) weight_grad(s, gy, x, gw, stream);
    if (gx) input_grad(s, gy, w, static_cast<const T*>(nullptr), gx, stream);
}

template <typename T>
void conv_transpose2d(const ConvShape& s, const T* in, const T* w, const T* bias, T* out,
                      cudaStream_t stream) {
    input_grad(s, in, w, bias, out, stream);
}

#define PYFAST_CUDA_CONV_INSTANTIATE(T)                                                      \
    template void conv2d_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, bool, \
                                    cudaStream_t);                                           \
    template void conv2d_backward<T>(const ConvShape&, const T*, const T*, const T*, T*, T*,  \
                                     T*, cudaStream_t);                                       \
    template void conv_transpose2d<T>(const ConvShape&, const T*, const T*, const T*, T*,     \
                                      cudaStream_t);
PYFAST_CUDA_CONV_INSTANTIATE(float)
PYFAST_CUDA_CONV_INSTANTIATE(double)
#undef PYFAST_CUDA_CONV_INSTANTIATE

}  // namespace pyfast::cuda
