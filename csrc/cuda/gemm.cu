// GEMM on the GPU: out = relu?(a @ b + bias) for float32 and float64, with a (M x K) and
// b (K x N) each row- or column-major with a leading dimension and out C-contiguous.
//
// The classic SIMT design for CUDA cores (no tensor cores: results match the FP32/FP64
// reference to rounding). A block of 256 threads owns a 128 x 128 tile of out and each
// thread an 8 x 8 piece of it in registers, so per k step a thread reads 8 + 8 values from
// shared memory for 64 FMAs. A and B reach shared memory in slices 8 deep in k, both stored
// k-major (a_smem[k][m], b_smem[k][n]) so that the 8 values a thread needs from each are two
// 16-byte reads. An operand whose memory runs along m or n (column-major a, row-major b)
// lands with plain vector stores; one whose memory runs along k (row-major a, column-major
// b) is transposed on the way in, which costs four scalar stores per thread per slice and no
// bank conflicts thanks to a 4-element row padding. One kernel source covers the four
// layouts: both operands go through the same loader, templated on which way memory runs.
//
// The slices are double-buffered: while the block computes on one shared buffer, each
// thread has already issued the global loads of the next slice into registers and stores
// them to the other buffer afterwards, so one __syncthreads per slice suffices and global
// latency hides behind 512 FMAs per thread. Global loads are 16 bytes wide when both
// operands' base pointers and leading dimensions allow it (checked at run time, else a
// scalar-load instantiation of the same kernel runs). Edge tiles (any M, N, K >= 1) load
// zeros outside the matrices and store only what lies inside; only edge blocks and the last
// k-slice pay for those tests, interior blocks run the k-loop as a straight line. Bias and
// ReLU are applied as the 8 x 8 piece leaves registers. Consecutive blocks walk down groups of 8 tile rows so
// the blocks resident at one time share panels of A and B in L2.

#include <climits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/gemm.h"

namespace pyfast::cuda {
namespace {

using std::int64_t;

constexpr int kBlockM = 128, kBlockN = 128, kBlockK = 8;
constexpr int kThreads = 256;
// A shared row holds 128 values plus 4 of padding. The transposing store of a k-contiguous
// slice has lane pairs writing k = 0..3 and 4..7 of the same row; the padding shifts the
// second half by 16 banks, so a warp's 32 stores hit 32 banks. 132 keeps rows 16-byte
// aligned for the vector reads.
constexpr int kSmemRow = kBlockM + 4;
constexpr int kGroupM = 8;  // tile rows per group in the block order (L2 reuse)

static_assert(kBlockM == kBlockN, "A and B slices share one loader and one shared row size");
static_assert(kBlockM * kBlockK == 4 * kThreads, "each thread loads 4 elements per slice");

// One thread's share of a k-slice of an operand: 4 elements of the 128 (outer: rows of a or
// columns of b) x 8 (k) slice, adjacent in memory. KContig says memory runs along k:
// element (o, k) is at o * ld + k; otherwise at o + k * ld.
template <typename T, bool KContig, bool Vector>
struct SliceLoader {
    const T* ptr;       // this thread's first element in the current slice
    int64_t step;       // elements from one slice to the next
    int outer, k;       // slice-local position of the first element
    int outer_left;     // how many of outer, outer + 1, ... lie inside the matrix (<= 0: none)
    int k_left;         // same along k, for the current slice

    __device__ SliceLoader(const T* base, int64_t ld, int outer0, int outer_extent, int K,
                           int tid) {
        if (KContig) {  // two threads per row of 8 k: a warp reads 16 rows x 32 bytes
            outer = tid / 2;
            k = (tid % 2) * 4;
        } else {        // one warp per k: 128 consecutive values, 512 bytes
            outer = (tid % 32) * 4;
            k = tid / 32;
        }
        outer_left = outer_extent - (outer0 + outer);
        k_left = K - k;
        // Past the edge nothing is read; clamping keeps the pointer near the data anyway.
        const int64_t o = min(outer0 + outer, outer_extent - 1);
        ptr = KContig ? base + o * ld + k : base + o + k * ld;
        step = KContig ? kBlockK : kBlockK * ld;
    }

    // Checked: test the matrix edges, loading zeros outside. Unchecked is for slices known
    // to lie wholly inside (interior blocks, k-slices before the last), a straight line.
    template <bool Checked>
    __device__ __forceinline__ void load(T* r) const {
        if (!Checked) {
            if (Vector) {
                load4_global(ptr, r);
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j) r[j] = __ldg(ptr + j);
            }
            return;
        }
        const int inside = KContig ? (outer_left > 0 ? k_left : 0)
                                   : (k_left > 0 ? outer_left : 0);
        if (Vector && inside >= 4) {
            load4_global(ptr, r);
        } else {
#pragma unroll
            for (int j = 0; j < 4; ++j) r[j] = j < inside ? __ldg(ptr + j) : T(0);
        }
    }

    __device__ __forceinline__ void advance() {
        ptr += step;
        k_left -= kBlockK;
    }

    // Into the k-major shared slice s[k][outer].
    __device__ __forceinline__ void store(T (*s)[kSmemRow], const T* r) const {
        if (KContig) {
#pragma unroll
            for (int j = 0; j < 4; ++j) s[k + j][outer] = r[j];
        } else {
            store4(&s[k][outer], r);
        }
    }
};

template <typename T>
constexpr int kMinBlocksPerSm = sizeof(T) == 4 ? 2 : 1;  // float: 2 blocks, <= 128 regs each

template <typename T, bool AKContig, bool BKContig, bool Vector>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<T>)
gemm_bias_relu_kernel(int M, int N, int K, const T* __restrict__ a, int64_t lda,
                      const T* __restrict__ b, int64_t ldb, T* __restrict__ out,
                      const T* __restrict__ bias, bool relu, bool vector_store) {
    __shared__ __align__(16) T a_smem[2][kBlockK][kSmemRow];
    __shared__ __align__(16) T b_smem[2][kBlockK][kSmemRow];

    // Block -> output tile, going down a group of kGroupM tile rows before moving right.
    const int tiles_m = (M + kBlockM - 1) / kBlockM;
    const int tiles_n = (N + kBlockN - 1) / kBlockN;
    const int per_group = kGroupM * tiles_n;
    const int group = blockIdx.x / per_group;
    const int first_tile_m = group * kGroupM;
    const int group_rows = min(tiles_m - first_tile_m, kGroupM);
    const int in_group = blockIdx.x - group * per_group;
    const int m0 = (first_tile_m + in_group % group_rows) * kBlockM;
    const int n0 = (in_group / group_rows) * kBlockN;

    const int tid = threadIdx.x;
    SliceLoader<T, AKContig, Vector> a_loader(a, lda, m0, M, K, tid);
    SliceLoader<T, BKContig, Vector> b_loader(b, ldb, n0, N, K, tid);

    // Warps 4 (m) x 2 (n), each a 32 x 64 piece of the tile; lanes 4 x 8 inside a warp, each
    // an 8 x 8 piece made of four 4 x 4 blocks 16 rows and 32 columns apart. Per k step a
    // warp reads 4 distinct A vectors and 8 distinct B vectors, each broadcast to 8 or 4
    // lanes: no bank conflicts, few shared-memory wavefronts.
    const int warp = tid / 32, lane = tid % 32;
    const int row0 = (warp / 2) * 32 + (lane / 8) * 4;
    const int col0 = (warp % 2) * 64 + (lane % 8) * 4;

    T acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = T(0);

    T a_next[4], b_next[4];
    a_loader.template load<true>(a_next);
    b_loader.template load<true>(b_next);
    a_loader.store(a_smem[0], a_next);
    b_loader.store(b_smem[0], b_next);
    __syncthreads();

    // One k-slice: compute on shared buffer s & 1 while the loads of slice s + 1 are in
    // flight, then store those to the other buffer (everyone finished reading it before the
    // previous sync, so one sync per slice suffices).
    const int k_slices = (K + kBlockK - 1) / kBlockK;
    auto run_slice = [&](int s, auto checked) {
        constexpr bool kChecked = decltype(checked)::value;
        const int cur = s & 1;
        const bool more = !kChecked || s + 1 < k_slices;
        if (more) {
            a_loader.advance();
            b_loader.advance();
            a_loader.template load<kChecked>(a_next);
            b_loader.template load<kChecked>(b_next);
        }
#pragma unroll
        for (int kk = 0; kk < kBlockK; ++kk) {
            T av[8], bv[8];
            load4(&a_smem[cur][kk][row0], av);
            load4(&a_smem[cur][kk][row0 + 16], av + 4);
            load4(&b_smem[cur][kk][col0], bv);
            load4(&b_smem[cur][kk][col0 + 32], bv + 4);
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        if (more) {
            a_loader.store(a_smem[cur ^ 1], a_next);
            b_loader.store(b_smem[cur ^ 1], b_next);
        }
        __syncthreads();
    };
    // A block wholly inside M x N runs unchecked while the slice it fetches is wholly inside
    // K; the rest (edge blocks, the last slices) runs checked. Both conditions are uniform
    // over the block, so the syncs stay collective.
    int s = 0;
    if (m0 + kBlockM <= M && n0 + kBlockN <= N)
        for (; s + 1 < K / kBlockK; ++s) run_slice(s, std::false_type{});
    for (; s < k_slices; ++s) run_slice(s, std::true_type{});

    // Epilogue: acc[i][j] is out[m0 + row0 + (i & 3) + 16 * (i >> 2)][n0 + col0 + (j & 3) +
    // 32 * (j >> 2)]. A warp's vector store covers 4 rows x 128 contiguous bytes.
    T bias_v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int c = n0 + col0 + (j & 3) + 32 * (j >> 2);
        bias_v[j] = bias != nullptr && c < N ? __ldg(bias + c) : T(0);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int r = m0 + row0 + (i & 3) + 16 * (i >> 2);
        if (r >= M) continue;
        T* out_row = out + static_cast<int64_t>(r) * N;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int c = n0 + col0 + 32 * h;
            T v[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                v[j] = acc[i][4 * h + j] + bias_v[4 * h + j];
                if (relu) v[j] = v[j] < T(0) ? T(0) : v[j];  // NaN stays NaN, as np.maximum
            }
            if (vector_store && c + 3 < N) {
                store4(out_row + c, v);
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (c + j < N) out_row[c + j] = v[j];
            }
        }
    }
}

template <typename T>
using GemmKernel = void (*)(int, int, int, const T*, int64_t, const T*, int64_t, T*, const T*,
                            bool, bool);

template <typename T, bool AKContig, bool BKContig>
GemmKernel<T> pick_kernel(bool vector_loads) {
    return vector_loads ? gemm_bias_relu_kernel<T, AKContig, BKContig, true>
                        : gemm_bias_relu_kernel<T, AKContig, BKContig, false>;
}

template <typename T>
GemmKernel<T> pick_kernel(bool a_k_contig, bool b_k_contig, bool vector_loads) {
    if (a_k_contig)
        return b_k_contig ? pick_kernel<T, true, true>(vector_loads)
                          : pick_kernel<T, true, false>(vector_loads);
    return b_k_contig ? pick_kernel<T, false, true>(vector_loads)
                      : pick_kernel<T, false, false>(vector_loads);
}

// 16-byte loads need the base 16-byte aligned and every row (or column) start likewise.
template <typename T>
bool vector_loadable(const DeviceMatrix<T>& x) {
    return is_aligned(x.data, 16) && (x.ld * static_cast<int64_t>(sizeof(T))) % 16 == 0;
}

}  // namespace

template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, DeviceMatrix<T> a, DeviceMatrix<T> b, T* out,
          const T* bias, bool relu, cudaStream_t stream) {
    // The kernel indexes with int; the headroom keeps tile-rounded indices from overflowing.
    constexpr int64_t kMaxExtent = INT_MAX - 2 * kBlockM;
    if (m < 1 || n < 1 || k < 1 || m > kMaxExtent || n > kMaxExtent || k > kMaxExtent)
        throw std::invalid_argument("cuda gemm: sizes must be in 1.." +
                                    std::to_string(kMaxExtent) + ", got m=" +
                                    std::to_string(m) + ", n=" + std::to_string(n) +
                                    ", k=" + std::to_string(k));
    const int64_t blocks = ceil_div(m, kBlockM) * ceil_div(n, kBlockN);
    if (blocks > INT_MAX)
        throw std::invalid_argument("cuda gemm: output of " + std::to_string(m) + " x " +
                                    std::to_string(n) + " needs too many thread blocks");
    const bool vector_loads = vector_loadable(a) && vector_loadable(b);
    const bool vector_store =
        is_aligned(out, 16) && (n * static_cast<int64_t>(sizeof(T))) % 16 == 0;
    // Row-major a and column-major b run along k.
    const GemmKernel<T> kernel = pick_kernel<T>(!a.col_major, b.col_major, vector_loads);
    kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), a.data, a.ld, b.data,
        b.ld, out, bias, relu, vector_store);
    check_launch("cuda gemm kernel launch");
}

template void gemm<float>(int64_t, int64_t, int64_t, DeviceMatrix<float>, DeviceMatrix<float>,
                          float*, const float*, bool, cudaStream_t);
template void gemm<double>(int64_t, int64_t, int64_t, DeviceMatrix<double>,
                           DeviceMatrix<double>, double*, const double*, bool, cudaStream_t);

}  // namespace pyfast::cuda
