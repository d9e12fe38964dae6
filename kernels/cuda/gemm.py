"""Numba CUDA GEMM: out = relu?(a @ b + bias), float32 (SGEMM) and float64 (DGEMM).

Classic shared-memory tiling: a block of 16 x 16 threads owns a BM x BN = 64 x 64 tile of
out; per BK-deep slice of k it stages the 64 x BK tile of A and the BK x 64 tile of B in
shared memory (zero-filled past the edges, so the inner loop has no bounds checks), then
each thread accumulates a 4 x 4 register block: per k step 4 + 4 shared loads feed 16
FMAs. A thread's rows and columns are strided by 16 (not contiguous), so a warp's shared
reads of B hit 16 consecutive words (no bank conflicts) and its stores of out are
coalesced. Bias and relu are applied in the single write of each output.

Operands come as flat 1-D views plus element strides (row- or column-major, any leading
dimension); the global loads are mapped so consecutive threads read consecutive addresses
for either layout. One kernel, compiled once per dtype (the shared and local arrays take
the dtype of out). It launches on CuPy's current stream, so it is ordered with the CuPy
work around it without a synchronisation.
"""

import math

import numpy as np
from numba import cuda

from pyfast.kernels import flat_operand

BM = 64       # out tile rows per block
BN = 64       # out tile columns per block
BK = 16       # k slice staged in shared memory per step
TM = 4        # out rows per thread (strided by THREADS_M)
TN = 4        # out columns per thread (strided by THREADS_N)
THREADS_M = BM // TM
THREADS_N = BN // TN
THREADS = THREADS_M * THREADS_N
LOADS = BM * BK // THREADS   # elements of each tile a thread stages (BM == BN: one count)
TILE_LD = BM + 1             # padded shared rows (see the kernel)


def register_block_update(bk, tm, tn, stride_m, stride_n):
    """A device function: acc[i, j] += the thread's tm x tn register block of one bk-deep
    slice of shared tiles, a_tile[p, ty + i*stride_m] times b_tile[p, tx + j*stride_n]. The
    loop bounds are closure constants (numba freezes them), so the loops unroll and acc,
    a_reg and b_reg stay in registers; conv.py's tile shape builds its own."""
    @cuda.jit(device=True, inline=True)
    def update(a_tile, b_tile, a_reg, b_reg, acc, ty, tx):
        for p in range(bk):
            for i in range(tm):
                a_reg[i] = a_tile[p, ty + i * stride_m]
            for j in range(tn):
                b_reg[j] = b_tile[p, tx + j * stride_n]
            for i in range(tm):
                for j in range(tn):
                    acc[i, j] += a_reg[i] * b_reg[j]
    return update


update_register_block = register_block_update(BK, TM, TN, THREADS_M, THREADS_N)


@cuda.jit(device=True, inline=True)
def stage_slice(src, s_x, s_p, x0, x_len, k0, k, along_k, tile, tid):
    """tile[p, x] = src[x0 + x, k0 + p] (strides s_x, s_p; zero past x_len or k): this
    thread's share of a BK x BM slice. Consecutive threads walk along k where the operand
    is contiguous along k (along_k), else along x, so global loads coalesce either way."""
    for r in range(LOADS):
        e = tid + r * THREADS
        if along_k:
            x, p = e // BK, e % BK
        else:
            x, p = e % BM, e // BM
        gx, gp = x0 + x, k0 + p
        if gx < x_len and gp < k:
            tile[p, x] = src[gx * s_x + gp * s_p]
        else:
            tile[p, x] = 0


@cuda.jit(fastmath=True, cache=True)
def gemm_tiled(a, sa_m, sa_k, b, sb_k, sb_n, out, bias, has_bias, relu, m, n, k):
    tid = cuda.threadIdx.x
    row0 = cuda.blockIdx.x * BM
    col0 = cuda.blockIdx.y * BN
    ty = tid // THREADS_N   # thread's first row within the tile
    tx = tid % THREADS_N    # thread's first column within the tile

    # A tile stored k-major (a_tile[p, i]) so the inner loop reads a row of it. Rows are
    # padded by one element: staging writes that walk along p (row-major A, column-major
    # B) then fall in different banks instead of all in one.
    a_tile = cuda.shared.array((BK, TILE_LD), dtype=out.dtype)
    b_tile = cuda.shared.array((BK, TILE_LD), dtype=out.dtype)
    acc = cuda.local.array((TM, TN), dtype=out.dtype)
    a_reg = cuda.local.array(TM, dtype=out.dtype)
    b_reg = cuda.local.array(TN, dtype=out.dtype)
    for i in range(TM):
        for j in range(TN):
            acc[i, j] = 0

    for k0 in range(0, k, BK):
        # A as rows i (stride sa_m) of k, B^T as rows j (stride sb_n) of k
        stage_slice(a, sa_m, sa_k, row0, m, k0, k, sa_k == 1, a_tile, tid)
        stage_slice(b, sb_n, sb_k, col0, n, k0, k, sb_k == 1, b_tile, tid)
        cuda.syncthreads()
        update_register_block(a_tile, b_tile, a_reg, b_reg, acc, ty, tx)
        cuda.syncthreads()  # before the next slice overwrites the tiles

    for i in range(TM):
        gi = row0 + ty + i * THREADS_M
        if gi < m:
            for j in range(TN):
                gj = col0 + tx + j * THREADS_N
                if gj < n:
                    v = acc[i, j]
                    if has_bias:
                        v += bias[gj]
                    # store a literal 0 rather than assign it: v = 0 would retype v (and
                    # the bias add) as float64 in the float32 kernel
                    if relu and v < 0:
                        out[gi * n + gj] = 0
                    else:
                        out[gi * n + gj] = v


def matmul(a, b, out, bias, relu):
    """out[:] = relu?(a @ b + bias); a (M, K), b (K, N) row- or column-major, out (M, N)
    C-contiguous, bias (N,) contiguous or None; cupy arrays (numpy under the simulator)."""
    m, k = a.shape
    n = b.shape[1]
    grid = (math.ceil(m / BM), math.ceil(n / BN))
    out_flat = out.reshape(-1)
    bias_arr = bias if bias is not None else out_flat[:1]
    if isinstance(out, np.ndarray):
        # Host arrays (the simulator, or a caller outside pf.ops): stage explicitly so the
        # result lands in out and not in a temporary copy of it.
        a_flat, sa_m, sa_k = flat_operand(a, np)
        b_flat, sb_k, sb_n = flat_operand(b, np)
        d_out = cuda.to_device(out_flat)
        gemm_tiled[grid, THREADS](cuda.to_device(a_flat), sa_m, sa_k, cuda.to_device(b_flat),
                                  sb_k, sb_n, d_out, cuda.to_device(bias_arr),
                                  bias is not None, bool(relu), m, n, k)
        d_out.copy_to_host(out_flat)
        return
    import cupy

    a_flat, sa_m, sa_k = flat_operand(a, cupy)
    b_flat, sb_k, sb_n = flat_operand(b, cupy)
    stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    # sync=False: the kernel runs on the stream cupy orders these arrays on already.
    view = lambda x: cuda.as_cuda_array(x, sync=False)  # noqa: E731
    gemm_tiled[grid, THREADS, stream](view(a_flat), sa_m, sa_k, view(b_flat), sb_k, sb_n,
                                      view(out_flat), view(bias_arr), bias is not None,
                                      bool(relu), m, n, k)
