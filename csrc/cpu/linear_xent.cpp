// Fused linear + softmax cross-entropy on the CPU: loss and gradients of
// cross_entropy(h @ w.T + bias, labels) without the (n, v) logits ever in memory.
//
// The rows of h go in blocks of block_rows (a few percent of n, chosen by pf.ops). For a
// block r:
//   1. z = h[r] @ w.T + bias     the project's packed GEMM, bias fused in its epilogue;
//   2. z <- dloss/dz             the softmax_xent kernel in place (one read, one write of z);
//   3. dh[r] = z @ w; dw (+)= z.T @ h[r]   two more GEMMs on the same block, while it is warm;
//   4. db += column sums of z.
// Each block's logits are made once and consumed at once: the three GEMMs of the unfused
// pair, no recomputation (a vocabulary-chunked two-pass scheme needs a fourth GEMM to
// rebuild the logits after the log-sum-exp is known, a third more flops on a CPU where the
// GEMMs are the whole cost). The price is dw's read-modify-write once per block; a block of
// at most KC rows keeps that to one pass over dw per block. Every step runs on the OpenMP
// team of its own kernel; the block loop itself is sequential.

#include "cpu/linear_xent.h"

#include <omp.h>

#include <algorithm>

#include "common/runtime.h"
#include "cpu/gemm.h"
#include "cpu/softmax_xent.h"

namespace pyfast {
namespace {

using std::int64_t;

// db (+)= the column sums of z (rows x v): each thread owns a range of columns, so the
// inner loop runs along a contiguous row and vectorises.
template <typename T>
void add_column_sums(const T* z, int64_t rows, int64_t v, T* db, bool accumulate) {
#pragma omp parallel num_threads(team(rows * v, v))
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        const int64_t c0 = v * tid / nth, c1 = v * (tid + 1) / nth;
        T* out = db + c0;
        const int64_t len = c1 - c0;
        if (!accumulate) std::fill(out, out + len, T(0));
        for (int64_t r = 0; r < rows; ++r) {
            const T* zr = z + r * v + c0;
#pragma omp simd
            for (int64_t j = 0; j < len; ++j) out[j] += zr[j];
        }
    }
}

}  // namespace

template <typename T>
void linear_xent(const LinearXentArgs<T>& a) {
    const int64_t n = a.n, d = a.d, v = a.v;
    if (n == 0) return;
    for (int64_t r0 = 0; r0 < n; r0 += a.block_rows) {
        const int64_t rows = std::min(a.block_rows, n - r0);
        const T* hb = a.h + r0 * d;
        T* z = a.workspace;
        const MatRef<T> h_blk{hb, d, 1}, w_t{a.w, 1, d}, w_mat{a.w, d, 1};

        Epilogue<T> with_bias;
        with_bias.bias = a.bias;
        gemm<T>(rows, v, d, h_blk, w_t, z, v, with_bias);

        XentArgs<T> x;
        x.logits = z;
        x.labels = a.labels + r0;
        x.weight = nullptr;
        x.ignore_index = a.ignore_index;
        x.smoothing = a.smoothing;
        x.grad_scale = a.grad_scale;
        x.dlogits = z;
        x.losses = a.losses + r0;
        x.n = rows;
        x.c = v;
        x.s = 1;
        softmax_xent<T>(x);

        gemm<T>(rows, d, v, MatRef<T>{z, v, 1}, w_mat, a.dh + r0 * d, d, Epilogue<T>{});
        Epilogue<T> add;
        add.accumulate = r0 > 0;
        gemm<T>(v, d, rows, MatRef<T>{z, 1, v}, h_blk, a.dw, d, add);
        if (a.db) add_column_sums(z, rows, v, a.db, r0 > 0);
    }
}

template void linear_xent<float>(const LinearXentArgs<float>&);
template void linear_xent<double>(const LinearXentArgs<double>&);

}  // namespace pyfast
