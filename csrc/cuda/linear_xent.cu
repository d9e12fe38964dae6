// Fused linear + softmax cross-entropy on the GPU, the CPU's scheme (csrc/cpu/linear_xent.cpp)
// on the project's CUDA kernels: for each block of rows r of h,
//   z = h[r] @ w.T + bias (gemm.cu, bias fused), z <- dloss/dz in place (softmax_xent.cu),
//   dh[r] = z @ w, dw (+)= z.T @ h[r], db (+)= column sums of z.
// The GEMM writes its result and cannot accumulate, so after the first block dw's share
// goes through a scratch of at most a quarter of the workspace, slices of dw's rows at a
// time, added in by a vectorised kernel; the scratch comes from the stream-ordered
// allocator (cudaMallocAsync) and is freed on the stream.

#include "cuda/linear_xent.h"

#include <algorithm>

#include "common/linear_xent_block.h"
#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/softmax_xent.h"

namespace pyfast::cuda {
namespace {

using std::int64_t;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

unsigned grid_for(int64_t items) {
    const int64_t blocks = ceil_div(items, kThreads);
    return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, kMaxBlocks)));
}

// out[i] += add[i] for i < count (grid-stride).
template <typename T>
__global__ void add_into_kernel(T* __restrict__ out, const T* __restrict__ add, int64_t count) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += stride)
        out[i] += add[i];
}

// db[j] (+)= sum_r z[r, j]: one thread per column, the rows read coalesced across a warp.
template <typename T>
__global__ void column_sums_kernel(const T* __restrict__ z, int64_t rows, int64_t v,
                                   T* __restrict__ db, bool accumulate) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < v;
         j += stride) {
        T s = accumulate ? db[j] : T(0);
        for (int64_t r = 0; r < rows; ++r) s += z[r * v + j];
        db[j] = s;
    }
}

}  // namespace

template <typename T>
void linear_xent(const LinearXentArgs<T>& a, cudaStream_t stream) {
    const int64_t n = a.n, d = a.d, v = a.v;
    if (n == 0) return;
    if (d < 1 || v < 1 || a.block_rows < 1)
        throw std::invalid_argument("cuda linear_xent: d, v and block_rows must be >= 1");
    // dw's rows per slice through the scratch: a quarter of the workspace, at least one row.
    const int64_t slice = std::max<int64_t>(1, std::min(v, a.block_rows * v / (4 * d)));
    const bool several = n > a.block_rows;
    StreamScratch<T> scratch(several ? slice * d : 1, stream,
                             "cudaMallocAsync (linear_xent scratch)");
    const DeviceMatrix<T> w_t{a.w, d, true}, w_mat{a.w, d, false};
    for (int64_t r0 = 0; r0 < n; r0 += a.block_rows) {
        const int64_t rows = std::min(a.block_rows, n - r0);
        const T* hb = a.h + r0 * d;
        T* z = a.workspace;
        const DeviceMatrix<T> h_blk{hb, d, false};
        gemm<T>(rows, v, d, h_blk, w_t, z, a.bias, false, stream);

        softmax_xent<T>(block_xent_args<XentArgs<T>>(a, z, r0, rows), stream);

        gemm<T>(rows, d, v, DeviceMatrix<T>{z, v, false}, w_mat, a.dh + r0 * d, nullptr, false,
                stream);
        for (int64_t v0 = 0; v0 < v; v0 += slice) {
            const int64_t vs = std::min(slice, v - v0);
            T* out = r0 == 0 ? a.dw + v0 * d : scratch.get();
            // z[:, v0:v0+vs].T is column-major with leading dimension v
            gemm<T>(vs, d, rows, DeviceMatrix<T>{z + v0, v, true}, h_blk, out, nullptr, false,
                    stream);
            if (r0 > 0) {
                add_into_kernel<T><<<grid_for(vs * d), kThreads, 0, stream>>>(a.dw + v0 * d, out,
                                                                               vs * d);
                check_launch("cuda linear_xent add_into_kernel launch");
            }
        }
        if (a.db) {
            column_sums_kernel<T><<<grid_for(v), kThreads, 0, stream>>>(z, rows, v, a.db, r0 > 0);
            check_launch("cuda linear_xent column_sums_kernel launch");
        }
    }
}

template void linear_xent<float>(const LinearXentArgs<float>&, cudaStream_t);
template void linear_xent<double>(const LinearXentArgs<double>&, cudaStream_t);

}  // namespace pyfast::cuda
