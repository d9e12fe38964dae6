"""Numba CPU GEMM: out = relu?(a @ b + bias) for float32 and float64.

Numba cannot hold a C tile in vector registers across the k loop (its arrays live in
memory and LLVM will not promote them), so the micro-kernel is a row update instead: one
unit-stride pass over a packed row chunk of B updates ROWS rows of C with KSTEP k-steps at
once, i.e. ROWS*KSTEP FMAs per C load/store and KSTEP FMAs per B load. LLVM vectorises that
j loop; the ROWS*KSTEP scalars of A are loop-invariant broadcasts kept in registers.

Blocking: the C matrix is cut into independent MC x NC tiles run in a prange (no
synchronisation; each tile packs its own panels, an overhead of 1/MC and 1/NC). Per tile
and per KC slice of k, B is packed to a contiguous KC x NC panel (stays in L2 while the row
groups of the tile stream over it) and A to MC x KC rows padded with zeros to a multiple of
KSTEP, so the micro-kernel never needs a k remainder. The first k slice starts C from the
bias (no read of out, no zeroing pass); relu runs on each row group right after its last
update, while it is still in L1.

Operands arrive as row- or column-major views with a leading dimension; they are passed as
flat 1-D views plus element strides, so there is one compiled specialisation per dtype.
"""

import numpy as np
from numba import get_num_threads, njit, prange

ROWS = 4    # C rows per micro-kernel pass
KSTEP = 4   # k steps per micro-kernel pass (zero padding makes k a multiple of it)
MC = 256    # C tile rows (at most)
NC = 256    # C tile columns (= packed B panel width)
KC = 256    # k slice (= packed B panel depth)
VEC = 16    # packed panel widths are padded to a multiple of this (one zmm of float32)
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
    else:  # column-major: read each column contiguously
        for j in range(nc):
            src = b[(j0 + j) * sb_n + p0:(j0 + j) * sb_n + p0 + kc]
            for p in range(kc):
                panel[p * width + j] = src[p]
        for p in range(kc):
            panel[p * width + nc:(p + 1) * width] = 0
    panel[kc * width:kc_pad * width] = 0


@njit(**_JIT)
def pack_a_panel(a, sa_m, sa_k, i0, mc, p0, kc, kc_pad, panel):
    """panel[i*kc_pad + p] = a[i0 + i, p0 + p], zero for kc <= p < kc_pad."""
    if sa_k == 1:
        for i in range(mc):
            src = a[(i0 + i) * sa_m + p0:(i0 + i) * sa_m + p0 + kc]
            dst = panel[i * kc_pad:i * kc_pad + kc_pad]
            for p in range(kc):
                dst[p] = src[p]
            for p in range(kc, kc_pad):
                dst[p] = 0
    else:  # column-major
        for p in range(kc):
            src = a[(p0 + p) * sa_k + i0:(p0 + p) * sa_k + i0 + mc]
            for i in range(mc):
                panel[i * kc_pad + p] = src[i]
        for i in range(mc):
            panel[i * kc_pad + kc:i * kc_pad + kc_pad] = 0


@njit(**_JIT)
def update_rows4(ap, a_row, kc_pad, bp, width, c0, c1, c2, c3):
    """C rows c0..c3 += packed A rows a_row..a_row+3 @ packed panel (width columns)."""
    for p in range(0, kc_pad, KSTEP):
        x0 = ap[a_row * kc_pad + p:a_row * kc_pad + p + KSTEP]
        x1 = ap[(a_row + 1) * kc_pad + p:(a_row + 1) * kc_pad + p + KSTEP]
        x2 = ap[(a_row + 2) * kc_pad + p:(a_row + 2) * kc_pad + p + KSTEP]
        x3 = ap[(a_row + 3) * kc_pad + p:(a_row + 3) * kc_pad + p + KSTEP]
        a00, a01, a02, a03 = x0[0], x0[1], x0[2], x0[3]
        a10, a11, a12, a13 = x1[0], x1[1], x1[2], x1[3]
        a20, a21, a22, a23 = x2[0], x2[1], x2[2], x2[3]
        a30, a31, a32, a33 = x3[0], x3[1], x3[2], x3[3]
        b0 = bp[p * width:(p + 1) * width]
        b1 = bp[(p + 1) * width:(p + 2) * width]
        b2 = bp[(p + 2) * width:(p + 3) * width]
        b3 = bp[(p + 3) * width:(p + 4) * width]
        for j in range(width):
            v0, v1, v2, v3 = b0[j], b1[j], b2[j], b3[j]
            c0[j] += a00 * v0 + a01 * v1 + a02 * v2 + a03 * v3
            c1[j] += a10 * v0 + a11 * v1 + a12 * v2 + a13 * v3
            c2[j] += a20 * v0 + a21 * v1 + a22 * v2 + a23 * v3
            c3[j] += a30 * v0 + a31 * v1 + a32 * v2 + a33 * v3


@njit(**_JIT)
def update_row1(ap, a_row, kc_pad, bp, width, c0):
    for p in range(0, kc_pad, KSTEP):
        x0 = ap[a_row * kc_pad + p:a_row * kc_pad + p + KSTEP]
        a00, a01, a02, a03 = x0[0], x0[1], x0[2], x0[3]
        b0 = bp[p * width:(p + 1) * width]
        b1 = bp[(p + 1) * width:(p + 2) * width]
        b2 = bp[(p + 2) * width:(p + 3) * width]
        b3 = bp[(p + 3) * width:(p + 4) * width]
        for j in range(width):
            c0[j] += a00 * b0[j] + a01 * b1[j] + a02 * b2[j] + a03 * b3[j]


@njit(**_JIT)
def write_tile_row(acc, bias_row, has_bias, relu, dst):
    """dst = relu?(acc + bias): the only write of a C element to out."""
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
def gemm_tile(a, sa_m, sa_k, b, sb_k, sb_n, out, n, bias, has_bias, relu, k,
              i0, mc, j0, nc, ap, bp, ct):
    """One mc x nc tile of out over the whole k range, accumulated in the private buffer
    ct (row stride NC) and written to out once."""
    width = (nc + VEC - 1) // VEC * VEC
    ct[:mc * NC] = 0
    for p0 in range(0, k, KC):
        kc = min(KC, k - p0)
        kc_pad = (kc + KSTEP - 1) // KSTEP * KSTEP
        pack_b_panel(b, sb_k, sb_n, p0, kc, kc_pad, j0, nc, width, bp)
        pack_a_panel(a, sa_m, sa_k, i0, mc, p0, kc, kc_pad, ap)
        i = 0
        while i + 4 <= mc:
            c = i * NC
            update_rows4(ap, i, kc_pad, bp, width,
                         ct[c:c + width], ct[c + NC:c + NC + width],
                         ct[c + 2 * NC:c + 2 * NC + width],
                         ct[c + 3 * NC:c + 3 * NC + width])
            i += 4
        while i < mc:
            update_row1(ap, i, kc_pad, bp, width, ct[i * NC:i * NC + width])
            i += 1
    for i in range(mc):
        write_tile_row(ct[i * NC:i * NC + nc], bias[j0:j0 + nc], has_bias, relu,
                       out[(i0 + i) * n + j0:(i0 + i) * n + j0 + nc])


@njit(**_JIT)
def carve_workspace(mc, kc_max, like):
    """Packed A (mc x kc_max), packed B (kc_max x NC) and the C tile (mc x NC) in one
    allocation, placed so that every C row sits 64 bytes *below* a B row modulo 4 KiB.
    The micro-kernel stores C rows while loading B rows in lockstep; a later load whose
    address matches an in-flight store in bits 0-11 is held back as if it depended on it
    (4K aliasing), which with random buffer addresses cost up to 30% in some processes.
    With this placement a B load can only match a C store made >= 15 iterations earlier."""
    ws = np.empty(mc * kc_max + (kc_max + mc) * NC + 3 * PAGE_BYTES // 4, like.dtype)
    item = ws.itemsize
    page = PAGE_BYTES // item
    b0 = ((-ws.ctypes.data) % PAGE_BYTES) // item
    c0 = (b0 + kc_max * NC + page - 1) // page * page + page - 64 // item
    a0 = c0 + mc * NC
    return ws[a0:a0 + mc * kc_max], ws[b0:b0 + kc_max * NC], ws[c0:c0 + mc * NC]


@njit(parallel=True, **_JIT)
def gemm_kernel(a, sa_m, sa_k, b, sb_k, sb_n, out, bias, has_bias, relu, m, n, k, threads):
    # Tile rows: as tall as MC allows (each tile re-packs its B panels, 1/mc of the work),
    # but enough tiles that every thread gets an equal share.
    tiles_n = (n + NC - 1) // NC
    tiles_m = (m + MC - 1) // MC
    while (tiles_m * tiles_n) % threads and tiles_m * ROWS * 4 < m:
        tiles_m += 1
    mc_tile = ((m + tiles_m - 1) // tiles_m + ROWS - 1) // ROWS * ROWS
    tiles_m = (m + mc_tile - 1) // mc_tile
    kc_max = (min(KC, k) + KSTEP - 1) // KSTEP * KSTEP
    for t in prange(tiles_m * tiles_n):
        ti, tj = t // tiles_n, t % tiles_n
        i0, j0 = ti * mc_tile, tj * NC
        mc, nc = min(mc_tile, m - i0), min(NC, n - j0)
        ap, bp, ct = carve_workspace(mc, kc_max, out)
        gemm_tile(a, sa_m, sa_k, b, sb_k, sb_n, out, n, bias, has_bias, relu, k,
                  i0, mc, j0, nc, ap, bp, ct)


def _flat(x):
    """``x`` (2-D, one unit stride) as a flat 1-D view from its first element, plus its two
    element strides (a stride along an extent-1 axis is reported as 1)."""
    item = x.itemsize
    s0, s1 = x.strides
    rows, cols = x.shape
    s0 = 1 if rows == 1 else s0 // item
    s1 = 1 if cols == 1 else s1 // item
    if (s0 != 1 and s1 != 1) or x.strides[0] % item or x.strides[1] % item:
        x = np.ascontiguousarray(x)
        s0, s1 = cols, 1
    span = (rows - 1) * s0 + (cols - 1) * s1 + 1
    return np.lib.stride_tricks.as_strided(x, shape=(span,), strides=(item,)), s0, s1


def matmul(a, b, out, bias, relu):
    """out[:] = relu?(a @ b + bias); a (M, K), b (K, N) row- or column-major, out (M, N)
    C-contiguous, bias (N,) contiguous or None; all of one float dtype."""
    m, k = a.shape
    n = b.shape[1]
    a_flat, sa_m, sa_k = _flat(a)
    b_flat, sb_k, sb_n = _flat(b)
    has_bias = bias is not None
    bias_arr = bias if has_bias else out.reshape(-1)[:0]
    gemm_kernel(a_flat, sa_m, sa_k, b_flat, sb_k, sb_n, out.reshape(-1), bias_arr,
                has_bias, bool(relu), m, n, k, get_num_threads())
