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
// GEMMs are the whole cost). The price is per block, whatever its size: w packed twice and
// dw read and written once, which is why pf.ops makes blocks of at least 96 rows.

#include "cpu/linear_xent.h"

#include <omp.h>

#include <algorithm>

#include "common/linear_xent_block.h"
#include "common/runtime.h"
#include "cpu/gemm.h"
#include "cpu/softmax_xent.h"

namespace pyfast {
namespace {

using std::int64_t;

// [begin, end) of `count` for thread tid of nth, cut at multiples of `quantum` (so every
// slice but the last starts on a whole GEMM micro-tile).
void slice(int64_t count, int64_t quantum, int tid, int nth, int64_t* begin, int64_t* end) {
    const int64_t units = (count + quantum - 1) / quantum;
    *begin = std::min(count, units * tid / nth * quantum);
    *end = std::min(count, units * (tid + 1) / nth * quantum);
}

constexpr int64_t kSliceQuantum = 64;  // a multiple of every NR of csrc/cpu/gemm.cpp

}  // namespace

// Each thread owns a slice of the vocabulary (its columns of z, its rows of w, dw and db)
// and a slice of dh's columns, and runs single-threaded GEMMs on them: a block costs three
// parallel regions (products, cross-entropy, gradients) instead of the GEMM's own
// barrier per packed panel, which on a block of a few hundred rows would be hundreds, each
// waiting for the slowest thread.
template <typename T>
void linear_xent(const LinearXentArgs<T>& a) {
    const int64_t n = a.n, d = a.d, v = a.v;
    if (n == 0) return;
    const int threads = omp_in_parallel() ? 1 : team(a.block_rows * v * d, v / kSliceQuantum + 1);
    T* z = a.workspace;
    for (int64_t r0 = 0; r0 < n; r0 += a.block_rows) {
        const int64_t rows = std::min(a.block_rows, n - r0);
        const MatRef<T> h_blk{a.h + r0 * d, d, 1};
        const bool first = r0 == 0;
#pragma omp parallel num_threads(threads)
        {
            int64_t v0, v1;
            slice(v, kSliceQuantum, omp_get_thread_num(), omp_get_num_threads(), &v0, &v1);
            Epilogue<T> with_bias;
            with_bias.bias = a.bias ? a.bias + v0 : nullptr;
            gemm<T>(rows, v1 - v0, d, h_blk, MatRef<T>{a.w + v0 * d, 1, d}, z + v0, v, with_bias);
        }

        softmax_xent<T>(block_xent_args<XentArgs<T>>(a, z, r0, rows));

#pragma omp parallel num_threads(threads)
        {
            const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            int64_t v0, v1, d0, d1;
            slice(v, kSliceQuantum, tid, nth, &v0, &v1);
            slice(d, kSliceQuantum, tid, nth, &d0, &d1);
            gemm<T>(rows, d1 - d0, v, MatRef<T>{z, v, 1}, MatRef<T>{a.w + d0, d, 1},
                    a.dh + r0 * d + d0, d, Epilogue<T>{});
            Epilogue<T> add;
            add.accumulate = !first;
            gemm<T>(v1 - v0, d, rows, MatRef<T>{z + v0, 1, v}, h_blk, a.dw + v0 * d, d, add);
            if (a.db) {
                T* out = a.db + v0;
                if (first) std::fill(out, out + (v1 - v0), T(0));
                for (int64_t r = 0; r < rows; ++r) {
                    const T* zr = z + r * v + v0;
#pragma omp simd
                    for (int64_t j = 0; j < v1 - v0; ++j) out[j] += zr[j];
                }
            }
        }
    }
}

template void linear_xent<float>(const LinearXentArgs<float>&);
template void linear_xent<double>(const LinearXentArgs<double>&);

}  // namespace pyfast
