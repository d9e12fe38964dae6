"""Numba CUDA convolution (NCHW, float32 and float64): one shared-memory tiled implicit GEMM
kernel for the three passes, gathering its operands from the tensors (no column matrix).

Per group g, with P = OH*OW (as in csrc/cuda/conv.cu):
    FORWARD      M = Kg, N = n*P,     R = Cg*kh*kw:  y = W[g] @ cols(x), bias and ReLU fused
    INPUT_GRAD   M = Cg, N = n*H*W,   R = Kg*kh*kw:  gx[c, h, w] = sum over (k, i, j) of
                 W[k, c, i, j] * gy[k, (h + p - i*d) / s, ...] where the division is exact
    WEIGHT_GRAD  M = Kg, N = Cg*kh*kw, R = n*P:      gW = gy @ cols(x)^T, the reduction cut
                 into splits (separate blocks) whose partial sums are added in a fixed order
A block of 64 threads computes a 32 x 32 tile, each thread a 4 x 4 piece strided by 8;
per slice of 16 along R each thread gathers 8 elements of each operand into shared memory
(zeros outside the tensors and in the padding), so the inner loop has no bounds checks. The
transposed convolution is INPUT_GRAD plus its bias. Launched on CuPy's current stream.
"""

import math

import numpy as np
from numba import cuda

from .._conv_shape import ConvShape
from .gemm import register_block_update

FORWARD, INPUT_GRAD, WEIGHT_GRAD = 0, 1, 2
BM = 32           # tile rows
BN = 32           # tile columns
BK = 16           # reduction slice staged per step
TM = 4            # rows per thread, strided by THREADS_SIDE
THREADS_SIDE = BM // TM
THREADS = THREADS_SIDE * THREADS_SIDE
LOADS = BM * BK // THREADS   # elements of each operand a thread stages per slice
TILE_LD = BM + 1             # padded shared rows
SPLIT_MIN = 8 * BK           # the weight gradient's splits sum at least this much each
TARGET_BLOCKS = 256

update_register_block = register_block_update(BK, TM, TM, THREADS_SIDE, THREADS_SIDE)


@cuda.jit(device=True, inline=True)
def a_index(mode, g, m, r, n, c, h, w, k, kh, kw, oh, ow, cg, kg, taps):
    """Flat index of A(m, r) in the pass's A tensor (the caller checks m and r)."""
    if mode == FORWARD:        # w[g*kg + m, r]
        return (g * kg + m) * (cg * taps) + r
    if mode == INPUT_GRAD:     # w[g*kg + kl, m, tap], r = (kl, tap)
        kl = r // taps
        return ((g * kg + kl) * cg + m) * taps + (r - kl * taps)
    p = oh * ow                # gy[img, g*kg + m, pos], r = (img, pos)
    img = r // p
    return (img * k + g * kg + m) * p + (r - img * p)


@cuda.jit(device=True, inline=True)
def x_index(g, tap, position, c, h, w, kw, oh, ow, sh, sw, ph, pw, dh, dw, cg, taps):
    """Flat index of x under tap = (c, i, j) at output position = (img, row, col), or -1 in
    the padding: the column matrix, B of the forward pass and B^T of the weight gradient."""
    p = oh * ow
    img = position // p
    pos = position - img * p
    o_h = pos // ow
    ci = tap // taps
    t = tap - ci * taps
    i = t // kw
    ih = o_h * sh - ph + i * dh
    iw = (pos - o_h * ow) * sw - pw + (t - i * kw) * dw
    if ih < 0 or ih >= h or iw < 0 or iw >= w:
        return -1
    return ((img * c + g * cg + ci) * h + ih) * w + iw


@cuda.jit(device=True, inline=True)
def b_index(mode, g, r, col, n, c, h, w, k, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, cg, kg,
            taps):
    """Flat index of B(r, col) in the pass's B tensor, or -1 where it reads a zero."""
    if mode == FORWARD:        # x under tap r = (c, i, j) at output position col
        return x_index(g, r, col, c, h, w, kw, oh, ow, sh, sw, ph, pw, dh, dw, cg, taps)
    if mode == INPUT_GRAD:     # gy that input position col = (img, h, w) received via tap r
        hw = h * w
        img = col // hw
        pos = col - img * hw
        y = pos // w
        kl = r // taps
        t = r - kl * taps
        i = t // kw
        th = y + ph - i * dh
        tw = pos - y * w + pw - (t - i * kw) * dw
        if th < 0 or tw < 0:
            return -1
        o_h = th // sh
        o_w = tw // sw
        if o_h * sh != th or o_w * sw != tw or o_h >= oh or o_w >= ow:
            return -1
        return ((img * k + g * kg + kl) * oh + o_h) * ow + o_w
    # WEIGHT_GRAD: x under tap col = (c, i, j) at output position r = (img, pos)
    return x_index(g, col, r, c, h, w, kw, oh, ow, sh, sw, ph, pw, dh, dw, cg, taps)


@cuda.jit(fastmath=True, cache=True)
def conv_gemm(mode, a, b, out, bias, has_bias, relu, n, c, h, w, k, kh, kw, oh, ow, sh, sw,
              ph, pw, dh, dw, groups, m_rows, n_cols, reduce, chunk):
    cg = c // groups
    kg = k // groups
    taps = kh * kw
    tid = cuda.threadIdx.x
    col0 = cuda.blockIdx.x * BN
    row0 = cuda.blockIdx.y * BM
    g = cuda.blockIdx.z % groups
    split = cuda.blockIdx.z // groups
    r_begin = split * chunk
    r_end = min(reduce, r_begin + chunk)
    tx = tid % THREADS_SIDE
    ty = tid // THREADS_SIDE

    # declared in the kernel, as gemm_tiled does: numba sizes shared and local arrays where
    # they are declared, and this tile is TM x TM where gemm's is TM x TN
    a_tile = cuda.shared.array((BK, TILE_LD), dtype=out.dtype)
    b_tile = cuda.shared.array((BK, TILE_LD), dtype=out.dtype)
    acc = cuda.local.array((TM, TM), dtype=out.dtype)
    a_reg = cuda.local.array(TM, dtype=out.dtype)
    b_reg = cuda.local.array(TM, dtype=out.dtype)
    for i in range(TM):
        for j in range(TM):
            acc[i, j] = 0

    for k0 in range(r_begin, r_end, BK):
        for q in range(LOADS):
            e = tid + q * THREADS
            p = e % BK          # A: consecutive threads walk along r
            i = e // BK
            m = row0 + i
            r = k0 + p
            if m < m_rows and r < r_end:
                a_tile[p, i] = a[a_index(mode, g, m, r, n, c, h, w, k, kh, kw, oh, ow, cg, kg,
                                         taps)]
            else:
                a_tile[p, i] = 0
            if mode == WEIGHT_GRAD:   # B is contiguous along r there, along columns otherwise
                p = e % BK
                j = e // BK
            else:
                p = e // BN
                j = e % BN
            col = col0 + j
            r = k0 + p
            idx = -1
            if col < n_cols and r < r_end:
                idx = b_index(mode, g, r, col, n, c, h, w, k, kh, kw, oh, ow, sh, sw, ph, pw,
                              dh, dw, cg, kg, taps)
            if idx >= 0:
                b_tile[p, j] = b[idx]
            else:
                b_tile[p, j] = 0
        cuda.syncthreads()
        update_register_block(a_tile, b_tile, a_reg, b_reg, acc, ty, tx)
        cuda.syncthreads()  # before the next slice overwrites the tiles

    for i in range(TM):
        m = row0 + ty + i * THREADS_SIDE
        if m >= m_rows:
            continue
        for j in range(TM):
            col = col0 + tx + j * THREADS_SIDE
            if col >= n_cols:
                continue
            v = acc[i, j]
            if mode == FORWARD:
                p = oh * ow
                img = col // p
                if has_bias:
                    v += bias[g * kg + m]
                # a literal 0 is stored, never assigned: v = 0 would retype v as float64
                dst = (img * k + g * kg + m) * p + col - img * p
                if relu and v < 0:
                    out[dst] = 0
                else:
                    out[dst] = v
            elif mode == INPUT_GRAD:
                hw = h * w
                img = col // hw
                if has_bias:
                    v += bias[g * cg + m]
                out[(img * c + g * cg + m) * hw + col - img * hw] = v
            else:
                out[(split * k + g * kg + m) * n_cols + col] = v


# ---------------------------------------------------------------------------- host side

def _staged(out, arrays):
    """Device views of ``arrays`` and of ``out`` (all flat), the launch stream, and a
    function that finishes: host arrays (the simulator, or a caller outside pf.ops) are
    copied to the device and out back; cupy arrays run on CuPy's current stream."""
    if isinstance(out, np.ndarray):
        views = [None if x is None else cuda.to_device(x.reshape(-1)) for x in arrays]
        d_out = cuda.to_device(out.reshape(-1))
        return views, d_out, 0, lambda: d_out.copy_to_host(out.reshape(-1))
    import cupy
    stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    # sync=False: the kernel runs on the stream cupy orders these arrays on already.
    views = [None if x is None else cuda.as_cuda_array(x.reshape(-1), sync=False) for x in arrays]
    return views, cuda.as_cuda_array(out.reshape(-1), sync=False), stream, lambda: None


def _launch(mode, a, b, out, bias, relu, shape, m_rows, n_cols, reduce, chunk, splits):
    (d_a, d_b, d_bias), d_out, stream, finish = _staged(out, [a, b, bias])
    if d_bias is None:
        d_bias = d_out[:1]
    grid = (math.ceil(n_cols / BN), math.ceil(m_rows / BM), shape.groups * splits)
    conv_gemm[grid, THREADS, stream](mode, d_a, d_b, d_out, d_bias, bias is not None,
                                     bool(relu), *shape, m_rows, n_cols, reduce, chunk)
    finish()


def _input_grad(gy, w, bias, gx, shape):
    s = shape
    reduce = s.k // _checked_groups(s.groups) * s.kh * s.kw
    _launch(INPUT_GRAD, w, gy, gx, bias, False, s, s.c // s.groups, s.n * s.h * s.w, reduce,
            reduce, 1)


def conv2d(x, w, bias, out, stride, padding, dilation, groups, relu):
    """out = relu?(conv2d(x, w) + bias); C-contiguous cupy arrays (numpy in the simulator)."""
    s = ConvShape.of(x.shape, w.shape, out.shape, stride, padding, dilation, groups)
    reduce = s.c // _checked_groups(groups) * s.kh * s.kw
    _launch(FORWARD, w, x, out, bias, relu, s, s.k // groups, s.n * s.oh * s.ow, reduce, reduce,
            1)


def conv2d_backward(gy, x, w, gx, gw, gb, stride, padding, dilation, groups):
    """Overwrites gx, gw, gb (each may be None) with conv2d's gradients given gy."""
    if gb is not None:
        gb[...] = gy.sum(axis=(0, 2, 3))
    ref = x if x is not None else gx
    if ref is None:
        return
    s = ConvShape.of(ref.shape, w.shape, gy.shape, stride, padding, dilation, groups)
    if gw is not None:
        rows, cols, reduce = s.k // groups, s.c // groups * s.kh * s.kw, s.n * s.oh * s.ow
        blocks = math.ceil(rows / BM) * math.ceil(cols / BN) * groups
        splits = max(1, min(math.ceil(TARGET_BLOCKS / blocks), math.ceil(reduce / SPLIT_MIN)))
        chunk = math.ceil(math.ceil(reduce / splits) / BK) * BK
        splits = math.ceil(reduce / chunk)
        if groups * splits > 65535:  # the grid's z extent
            raise ValueError(f"conv2d_backward: groups={groups} is too many for the numba CUDA "
                             f"weight gradient (at most 65535)")
        xp = np if isinstance(gw, np.ndarray) else _cupy()
        partial = xp.empty((splits,) + gw.shape, gw.dtype)
        _launch(WEIGHT_GRAD, gy, x, partial, None, False, s, rows, cols, reduce, chunk, splits)
        gw[...] = partial.sum(axis=0)
    if gx is not None:
        _input_grad(gy, w, None, gx, s)


def conv_transpose2d(x, w, bias, out, stride, padding, dilation, groups):
    """out = conv_transpose2d(x, w) + bias, as an input gradient (ConvShape.transposed)."""
    _input_grad(x, w, bias, out, ConvShape.transposed(x.shape, w.shape, out.shape, stride,
                                                      padding, dilation, groups))


def _checked_groups(groups):
    if groups > 65535:  # the grid's z extent
        raise ValueError(f"groups={groups} is too many for the numba CUDA convolution "
                         f"(at most 65535)")
    return groups


def _cupy():
    import cupy
    return cupy
