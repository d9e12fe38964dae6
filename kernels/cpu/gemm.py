"""Numba CPU GEMM: out = relu?(a @ b + bias), float32 and float64.

Numba cannot keep a C tile in vector registers across the k loop (its arrays live in
memory and LLVM does not promote them), so the micro-kernel is a row update instead: one
unit-stride pass over KSTEP rows of a packed B panel updates ROWS rows of a C tile: per
vector of j, 8 B loads and 4 C load/store pairs feed ROWS * KSTEP = 32 FMAs. LLVM
vectorises that j loop (AVX-512 where the CPU has it); the 32 scalars of A are loop
invariants, broadcast once per pass, and those that do not fit in registers become FMA
memory operands, which the load ports absorb. Of 4x4, 4x8, 3x8, 6x4, 8x4, 6x2, 8x2, 2x8,
2x16 and 4x16 (rows x k steps), 4x8 measured fastest: float32 n=1024, 1 thread, 164-186
GFLOP/s against 154-168 for 4x4 and at most 152 for the rest; float64 4x4 ran at half the
speed of 4x8.

Blocking: out is cut into independent tiles of at most MC x NC run in a prange (no
synchronisation: each tile packs its own panels, an overhead of 1/MC and 1/NC). Per tile
and per KC slice of k, B is packed into a contiguous KC x NC panel (512 KiB, held in L2
while the tile's row groups stream over it) and A into MC x KC rows, both zero-padded to a
multiple of KSTEP in k so the micro-kernel has no k remainder. The tile accumulates in a
private buffer (see carve_workspace); out is written once per element at the end, with
the bias added and relu applied in that same write.

Operands arrive as row- or column-major views with a leading dimension; they are passed as
flat 1-D views plus element strides, so each dtype compiles exactly one specialisation.
"""

import numpy as np
from numba import get_num_threads, njit, prange

from pyfast.kernels import flat_operand

ROWS = 4           # C rows per micro-kernel pass
KSTEP = 8          # k steps per micro-kernel pass
MC = 256           # tile rows, at most (fewer when that gives threads equal shares)
KC = 256           # k slice per packed panel
NC_BYTES = 2048    # tile width in bytes: 512 float32 / 256 float64 columns
PAD = 16           # packed panel widths are rounded up to a multiple of this
PAGE_BYTES = 4096

_JIT = dict(cache=True, fastmath=True, nogil=True)


@njit(**_JIT)
def pack_b_panel(b, sb_k, sb_n, p0, kc, kc_pad, j0, nc, width, panel):
    """panel[p*width + j] = b[p0 + p, j0 + j]; zero for j >= nc and for kc <= p < kc_pad."""
    if sb_n == 1:
        for p in range(kc):
            src = b[(p0 + p) * sb_k + j0:(p0 + p) * sb_k + j0 + nc]
            dst = panel[p * width:(p + 1) * width]
            for j in range(nc):
                dst[j] = src[j]
            for j in range(nc, width):
                dst[j] = 0
    else:  # column-major (sb_k == 1): read each column contiguously
        for j in range(nc):
            src = b[(j0 + j) * sb_n + p0:(j0 + j) * sb_n + p0 + kc]
            for p in range(kc):
                panel[p * width + j] = src[p]
        for p in range(kc):
            panel[p * width + nc:(p + 1) * width] = 0
    panel[kc * width:kc_pad * width] = 0


@njit(**_JIT)
def pack_a_panel(a, sa_m, sa_k, i0, mc, p0, kc, kc_pad, panel):
    """panel[i*kc_pad + p] = a[i0 + i, p0 + p]; zero for kc <= p < kc_pad."""
    if sa_k == 1:
        for i in range(mc):
            src = a[(i0 + i) * sa_m + p0:(i0 + i) * sa_m + p0 + kc]
            dst = panel[i * kc_pad:(i + 1) * kc_pad]
            for p in range(kc):
                dst[p] = src[p]
            for p in range(kc, kc_pad):
                dst[p] = 0
    else:  # column-major (sa_m == 1)
        for p in range(kc):
            src = a[(p0 + p) * sa_k + i0:(p0 + p) * sa_k + i0 + mc]
            for i in range(mc):
                panel[i * kc_pad + p] = src[i]
        for i in range(mc):
            panel[i * kc_pad + kc:(i + 1) * kc_pad] = 0


@njit(**_JIT)
def update_rows4(ap, a_row, kc_pad, bp, width, ct, c_off):
    """C tile rows c_off/width .. +3 (row stride width) += packed A rows a_row..a_row+3
    times the packed B panel, KSTEP = 8 rows of the panel per pass."""
    # Row slices, not flat offsets: numba wraps negative indices, and the j + offset form
    # would hide the unit stride from the vectoriser behind that select.
    c0 = ct[c_off:c_off + width]
    c1 = ct[c_off + width:c_off + 2 * width]
    c2 = ct[c_off + 2 * width:c_off + 3 * width]
    c3 = ct[c_off + 3 * width:c_off + 4 * width]
    for p in range(0, kc_pad, KSTEP):
        x = ap[a_row * kc_pad + p:a_row * kc_pad + p + KSTEP]
        a00, a01, a02, a03, a04, a05, a06, a07 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
        x = ap[(a_row + 1) * kc_pad + p:(a_row + 1) * kc_pad + p + KSTEP]
        a10, a11, a12, a13, a14, a15, a16, a17 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
        x = ap[(a_row + 2) * kc_pad + p:(a_row + 2) * kc_pad + p + KSTEP]
        a20, a21, a22, a23, a24, a25, a26, a27 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
        x = ap[(a_row + 3) * kc_pad + p:(a_row + 3) * kc_pad + p + KSTEP]
        a30, a31, a32, a33, a34, a35, a36, a37 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
        b0 = bp[p * width:(p + 1) * width]
        b1 = bp[(p + 1) * width:(p + 2) * width]
        b2 = bp[(p + 2) * width:(p + 3) * width]
        b3 = bp[(p + 3) * width:(p + 4) * width]
        b4 = bp[(p + 4) * width:(p + 5) * width]
        b5 = bp[(p + 5) * width:(p + 6) * width]
        b6 = bp[(p + 6) * width:(p + 7) * width]
        b7 = bp[(p + 7) * width:(p + 8) * width]
        for j in range(width):
            v0, v1, v2, v3, v4, v5, v6, v7 = b0[j], b1[j], b2[j], b3[j], b4[j], b5[j], b6[j], b7[j]
            c0[j] += (a00 * v0 + a01 * v1 + a02 * v2 + a03 * v3
                      + a04 * v4 + a05 * v5 + a06 * v6 + a07 * v7)
            c1[j] += (a10 * v0 + a11 * v1 + a12 * v2 + a13 * v3
                      + a14 * v4 + a15 * v5 + a16 * v6 + a17 * v7)
            c2[j] += (a20 * v0 + a21 * v1 + a22 * v2 + a23 * v3
                      + a24 * v4 + a25 * v5 + a26 * v6 + a27 * v7)
            c3[j] += (a30 * v0 + a31 * v1 + a32 * v2 + a33 * v3
                      + a34 * v4 + a35 * v5 + a36 * v6 + a37 * v7)


@njit(**_JIT)
def update_row1(ap, a_row, kc_pad, bp, width, ct, c_off):
    """update_rows4 for a single row: the last mc % 4 rows of a tile."""
    # update_rows4's pass for one row, on purpose: the micro-kernel's shape is fixed at
    # ROWS x KSTEP (measured, module doc), so the remainder is its own kernel, not a row count.
    c0 = ct[c_off:c_off + width]
    for p in range(0, kc_pad, KSTEP):
        x = ap[a_row * kc_pad + p:a_row * kc_pad + p + KSTEP]
        a00, a01, a02, a03, a04, a05, a06, a07 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
        b0 = bp[p * width:(p + 1) * width]
        b1 = bp[(p + 1) * width:(p + 2) * width]
        b2 = bp[(p + 2) * width:(p + 3) * width]
        b3 = bp[(p + 3) * width:(p + 4) * width]
        b4 = bp[(p + 4) * width:(p + 5) * width]
        b5 = bp[(p + 5) * width:(p + 6) * width]
        b6 = bp[(p + 6) * width:(p + 7) * width]
        b7 = bp[(p + 7) * width:(p + 8) * width]
        for j in range(width):
            c0[j] += (a00 * b0[j] + a01 * b1[j] + a02 * b2[j] + a03 * b3[j]
                      + a04 * b4[j] + a05 * b5[j] + a06 * b6[j] + a07 * b7[j])


@njit(**_JIT)
def update_tile(ap, mc, kc_pad, bp, width, ct):
    """C tile (mc rows, width apart) += packed A (mc x kc_pad) times the packed B panel:
    ROWS rows per micro-kernel pass, the last mc % ROWS one at a time."""
    for i in range(0, mc - ROWS + 1, ROWS):
        update_rows4(ap, i, kc_pad, bp, width, ct, i * width)
    for i in range(mc - mc % ROWS, mc):
        update_row1(ap, i, kc_pad, bp, width, ct, i * width)


@njit(**_JIT)
def write_out_row(acc, bias_row, has_bias, relu, dst):
    """dst = relu?(acc + bias): the one write of these out elements."""
    if has_bias:
        if relu:
            for j in range(dst.shape[0]):
                dst[j] = max(acc[j] + bias_row[j], 0)
        else:
            for j in range(dst.shape[0]):
                dst[j] = acc[j] + bias_row[j]
    elif relu:
        for j in range(dst.shape[0]):
            dst[j] = max(acc[j], 0)
    else:
        for j in range(dst.shape[0]):
            dst[j] = acc[j]


@njit(**_JIT)
def carve_workspace(mc, kc_max, width, like):
    """Packed A (mc x kc_max), packed B (kc_max x width) and the C tile (mc x width) in
    one allocation: B starts on a page, C starts 64 bytes below a page boundary after it.

    The micro-kernel stores C rows while it loads B rows in lockstep; a load whose address
    matches an in-flight store in bits 0-11 can be held back as if it depended on it (4K
    aliasing), and with independent allocations the relative placement was left to
    chance. Measured: separate np.empty buffers ran 121-198 GFLOP/s from one process to
    the next (n = 512, 1024, float32, 1 thread); this placement 168-187."""
    ws = np.empty(mc * kc_max + (kc_max + mc) * width + 3 * PAGE_BYTES // 4, like.dtype)
    page = PAGE_BYTES // ws.itemsize
    b0 = ((-ws.ctypes.data) % PAGE_BYTES) // ws.itemsize
    c0 = (b0 + kc_max * width + page - 1) // page * page + page - 64 // ws.itemsize
    a0 = c0 + mc * width
    return ws[a0:a0 + mc * kc_max], ws[b0:b0 + kc_max * width], ws[c0:c0 + mc * width]


@njit(**_JIT)
def gemm_tile(a, sa_m, sa_k, b, sb_k, sb_n, out, n, bias, has_bias, relu, k, i0, mc, j0, nc):
    """out[i0:i0+mc, j0:j0+nc] over the whole k range."""
    width = (nc + PAD - 1) // PAD * PAD
    kc_max = (min(KC, k) + KSTEP - 1) // KSTEP * KSTEP
    ap, bp, ct = carve_workspace(mc, kc_max, width, out)
    ct[:] = 0  # the tile's accumulator, rows width apart
    for p0 in range(0, k, KC):
        kc = min(KC, k - p0)
        kc_pad = (kc + KSTEP - 1) // KSTEP * KSTEP
        pack_b_panel(b, sb_k, sb_n, p0, kc, kc_pad, j0, nc, width, bp)
        pack_a_panel(a, sa_m, sa_k, i0, mc, p0, kc, kc_pad, ap)
        update_tile(ap, mc, kc_pad, bp, width, ct)
    for i in range(mc):
        write_out_row(ct[i * width:i * width + nc], bias[j0:j0 + nc], has_bias, relu,
                      out[(i0 + i) * n + j0:(i0 + i) * n + j0 + nc])


@njit(parallel=True, **_JIT)
def gemm_kernel(a, sa_m, sa_k, b, sb_k, sb_n, out, bias, has_bias, relu, m, n, k, threads):
    nc_max = NC_BYTES // out.itemsize
    tiles_n = (n + nc_max - 1) // nc_max
    # Tiles as tall as MC allows (a tile re-packs B for every KC slice: 1/mc of its work),
    # but split further, down to 16 rows, until every thread gets the same number.
    tiles_m = (m + MC - 1) // MC
    while (tiles_m * tiles_n) % threads and (tiles_m + 1) * 16 <= m:
        tiles_m += 1
    mc_max = ((m + tiles_m - 1) // tiles_m + ROWS - 1) // ROWS * ROWS
    tiles_m = (m + mc_max - 1) // mc_max
    for t in prange(tiles_m * tiles_n):
        i0 = (t // tiles_n) * mc_max
        j0 = (t % tiles_n) * nc_max
        gemm_tile(a, sa_m, sa_k, b, sb_k, sb_n, out, n, bias, has_bias, relu, k,
                  i0, min(mc_max, m - i0), j0, min(nc_max, n - j0))


def matmul(a, b, out, bias, relu):
    """out[:] = relu?(a @ b + bias); a (M, K), b (K, N) row- or column-major, out (M, N)
    C-contiguous, bias (N,) contiguous or None; all numpy arrays of one float dtype."""
    m, k = a.shape
    n = b.shape[1]
    a_flat, sa_m, sa_k = flat_operand(a, np)
    b_flat, sb_k, sb_n = flat_operand(b, np)
    out_flat = out.reshape(-1)
    has_bias = bias is not None
    gemm_kernel(a_flat, sa_m, sa_k, b_flat, sb_k, sb_n, out_flat,
                bias if has_bias else out_flat[:0], has_bias, bool(relu), m, n, k,
                get_num_threads())
