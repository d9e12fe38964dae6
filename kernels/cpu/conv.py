"""Numba CPU convolution (NCHW, float32 and float64): im2col tiles and the numba GEMM.

Per image n and group g, with P = OH*OW positions and CRS = C/groups * kh * kw:
    forward      y[n,g] (Kg x P)   = W[g] (Kg x CRS) @ cols (CRS x P), then bias and ReLU
    weight grad  gW[g] (Kg x CRS) += gy[n,g] (Kg x P) @ cols^T
    input grad   stride 1: the forward convolution of gy with the flipped, transposed weights
                 (padding d*(k-1) - p); stride > 1: dcols = W[g]^T @ gy[n,g], then col2im.
The GEMMs are the serial tiles of kernels/cpu/gemm.py (packed panels, row-update
micro-kernel) on flat views with strides, so transposes cost nothing. The column buffer
covers a tile of positions of at most COLUMN_BYTES, so memory stays bounded for large
images. A prange runs over (image, group, tile) items: forward tiles write disjoint
outputs; the weight gradient sums into one partial per thread, added in a fixed order; the
input gradient's col2im takes whole (image, group) slices, so no two threads add into one
element. A 1x1, stride-1, unpadded convolution reads x directly, without im2col.

Stride 1 (forward, and so the input gradient; and the weight gradient) skips the column
matrix as the native kernels do: a band of output rows has its input copied once into
zero-padded planes of wp columns (a row's left padding doubles as the previous row's right
padding), and the output is computed on that wide grid of wp columns per row, where row
(c, i, j) of the column matrix at positions q.. is simply planes[c][q + i*dh*wp + j*dw..]:
the GEMM's packed panels are filled with slice copies straight from the planes, and the
numba GEMM's row-update micro-kernel runs on them. The wp - OW extra positions per row are
computed and dropped.
"""

import math

import numpy as np
from numba import get_num_threads, njit, prange

from .._conv_shape import ConvShape
from .gemm import (KC, KSTEP, MC, NC_BYTES, PAD, ROWS, carve_workspace, gemm_tile,
                   pack_a_panel, update_row1, update_rows4)

COLUMN_BYTES = 1 << 20   # column buffer per item
BAND_BYTES = 1 << 20     # padded planes per item (stride-1 kernels)
TILE_QUANTUM = 16        # tile widths are multiples of the GEMM panels' padding

_JIT = dict(cache=True, fastmath=True, nogil=True)


@njit(**_JIT)
def block_matmul(a, sa_m, sa_k, b, sb_k, sb_n, out, ldo, m, n, k):
    """out[i*ldo + j] = sum over p of a[i*sa_m + p*sa_k] * b[p*sb_k + j*sb_n], i < m, j < n:
    the numba GEMM's tiles, serially."""
    nc_max = NC_BYTES // out.itemsize
    for i0 in range(0, m, MC):
        for j0 in range(0, n, nc_max):
            gemm_tile(a, sa_m, sa_k, b, sb_k, sb_n, out, ldo, out[:0], False, False, k,
                      i0, min(MC, m - i0), j0, min(nc_max, n - j0))


@njit(**_JIT)
def column_walk(src, dst, x0, cg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ow, p0, p1, gather):
    """The one map between the column matrix (positions p0..p1) and the image that im2col
    and col2im share: cols[r*(p1-p0) + p-p0], tap r = (c, i, j), is the image element under
    that tap at output position p (x0: the channel slice's offset in the flat image).
    gather: src is the image, dst the columns (zero in the padding); else src is the
    columns, dst the image, which each column element is added into (padding's dropped)."""
    width = p1 - p0
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                r0 = ((c * kh + i) * kw + j) * width
                off = j * dw - pw
                for oh in range(p0 // ow, (p1 - 1) // ow + 1):
                    a = max(p0 - oh * ow, 0)
                    b = min(p1 - oh * ow, ow)
                    at = r0 + oh * ow - p0  # column index of output column o: at + o
                    ih = oh * sh - ph + i * dh
                    if ih < 0 or ih >= h:
                        if gather:
                            for o in range(a, b):
                                dst[at + o] = 0
                        continue
                    row = x0 + (c * h + ih) * w
                    for o in range(a, b):
                        iw = o * sw + off
                        if 0 <= iw < w:
                            if gather:
                                dst[at + o] = src[row + iw]
                            else:
                                dst[row + iw] += src[at + o]
                        elif gather:
                            dst[at + o] = 0


@njit(**_JIT)
def im2col(x, x0, cg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ow, p0, p1, cols):
    """cols = the column matrix of x's channel slice at x0 for positions p0..p1."""
    column_walk(x, cols, x0, cg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ow, p0, p1, True)


@njit(**_JIT)
def col2im(cols, cg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ow, p0, p1, gx, x0):
    """gx (flat, channel slice at x0) += each element of cols where im2col took it from."""
    column_walk(cols, gx, x0, cg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ow, p0, p1, False)


@njit(**_JIT)
def tile_item(item, tiles, width, groups, c, cg, k, kg, p, hw):
    """(group, positions p0..p1, x offset, y offset) of work item (image, group, tile) of
    the im2col kernels; the y offset is also gy's in the weight gradient."""
    pair = item // tiles
    ni, g = pair // groups, pair % groups
    p0 = (item % tiles) * width
    return g, p0, min(p, p0 + width), (ni * c + g * cg) * hw, (ni * k + g * kg) * p + p0


@njit(parallel=True, **_JIT)
def forward_kernel(x, w, bias, has_bias, relu, y, n, c, h, wd, k, kh, kw, oh, ow, sh, sw, ph,
                   pw, dh, dw, groups, width, tiles, plain_1x1):
    cg, kg = c // groups, k // groups
    rows, p, hw = cg * kh * kw, oh * ow, h * wd
    for item in prange(n * groups * tiles):
        g, p0, p1, x0, y0 = tile_item(item, tiles, width, groups, c, cg, k, kg, p, hw)
        if plain_1x1:
            block_matmul(w[g * kg * rows:], rows, 1, x[x0 + p0:], hw, 1, y[y0:], p,
                         kg, p1 - p0, rows)
        else:
            cols = np.empty(rows * (p1 - p0), y.dtype)
            im2col(x, x0, cg, h, wd, kh, kw, sh, sw, ph, pw, dh, dw, ow, p0, p1, cols)
            block_matmul(w[g * kg * rows:], rows, 1, cols, p1 - p0, 1, y[y0:], p,
                         kg, p1 - p0, rows)
        # Bias and ReLU on the tile just written (the numba GEMM's epilogue has per-column
        # bias only); a literal 0 is stored, never assigned, to keep the dtype.
        for kk in range(kg):
            out = y[y0 + kk * p:y0 + kk * p + p1 - p0]
            if has_bias:
                add = bias[g * kg + kk]
                for e in range(p1 - p0):
                    out[e] += add
            if relu:
                for e in range(p1 - p0):
                    if out[e] < 0:
                        out[e] = 0


@njit(parallel=True, **_JIT)
def sum_transposed_partials(partial, gw, k, kg, rows):
    """gw[g, kl, r] = the sum over threads t, in order, of partial[t]'s gW^T[g, r, kl]: the
    weight gradient kernels' per-thread partials (rows taps per group), added."""
    for e in prange(k * rows):
        g, rest = e // (kg * rows), e % (kg * rows)
        src = g * kg * rows + (rest % rows) * kg + rest // rows
        total = partial[0, src]
        for t in range(1, partial.shape[0]):
            total += partial[t, src]
        gw[e] = total


@njit(parallel=True, **_JIT)
def weight_grad_kernel(gy, x, gw, n, c, h, wd, k, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw,
                       groups, width, tiles, threads, plain_1x1):
    cg, kg = c // groups, k // groups
    rows, p, hw = cg * kh * kw, oh * ow, h * wd
    items = n * groups * tiles
    # gW^T (rows x Kg per group) = cols @ gy^T: the long side (rows) is the GEMM's M and the
    # column matrix its row-major A; B = gy^T packs only Kg columns. One chunk of items per
    # thread, summed in its own partial: no races, and a fixed order for the final sum.
    partial = np.zeros((threads, k * rows), gw.dtype)
    for t in prange(threads):
        product = np.empty(rows * kg, gw.dtype)
        cols = np.empty(0 if plain_1x1 else rows * width, gw.dtype)
        for item in range(items * t // threads, items * (t + 1) // threads):
            g, p0, p1, x0, g0 = tile_item(item, tiles, width, groups, c, cg, k, kg, p, hw)
            if plain_1x1:
                block_matmul(x[x0 + p0:], hw, 1, gy[g0:], 1, p, product, kg,
                             rows, kg, p1 - p0)
            else:
                im2col(x, x0, cg, h, wd, kh, kw, sh, sw, ph, pw, dh, dw, ow, p0, p1, cols)
                block_matmul(cols, p1 - p0, 1, gy[g0:], 1, p, product, kg,
                             rows, kg, p1 - p0)
            acc = partial[t, g * kg * rows:(g + 1) * kg * rows]
            for e in range(rows * kg):
                acc[e] += product[e]
    sum_transposed_partials(partial, gw, k, kg, rows)


@njit(parallel=True, **_JIT)
def input_grad_kernel(gy, w, bias, has_bias, gx, n, c, h, wd, k, kh, kw, oh, ow, sh, sw, ph,
                      pw, dh, dw, groups, width):
    """gx = the input gradient (+ bias per channel) by GEMM and col2im, for any stride."""
    cg, kg = c // groups, k // groups
    rows, p, hw = cg * kh * kw, oh * ow, h * wd
    for pair in prange(n * groups):
        ni, g = pair // groups, pair % groups
        x0 = (ni * c + g * cg) * hw
        for cc in range(cg):
            if has_bias:
                gx[x0 + cc * hw:x0 + (cc + 1) * hw] = bias[g * cg + cc]
            else:
                gx[x0 + cc * hw:x0 + (cc + 1) * hw] = 0
        dcols = np.empty(rows * min(width, p), gx.dtype)
        for p0 in range(0, p, width):
            p1 = min(p, p0 + width)
            block_matmul(w[g * kg * rows:], 1, rows, gy[(ni * k + g * kg) * p + p0:], p, 1,
                         dcols, p1 - p0, rows, p1 - p0, kg)
            col2im(dcols, cg, h, wd, kh, kw, sh, sw, ph, pw, dh, dw, ow, p0, p1, gx, x0)


# ---------------------------------------------------------------------------- stride 1

@njit(**_JIT)
def fill_band(x, x0, cg, h, w, ph, pw, oh0, in_rows, wp, planes):
    """planes[c*in_rows*wp + r*wp + pw + col] = x[c, oh0 + r - ph, col], zero elsewhere
    (the padding, and the tail after the last plane)."""
    planes[:] = 0
    plane = in_rows * wp
    for c in range(cg):
        for r in range(in_rows):
            ih = oh0 + r - ph
            if 0 <= ih < h:
                dst = c * plane + r * wp + pw
                src = x0 + (c * h + ih) * w
                planes[dst:dst + w] = x[src:src + w]


@njit(**_JIT)
def band_item(item, bands, band, groups, oh, halo, wp):
    """(image, group, first output row, output rows, plane size, wide positions) of work
    item (image, group, band) of the stride-1 kernels."""
    pair = item // bands
    oh0 = (item % bands) * band
    rows = min(band, oh - oh0)
    return pair // groups, pair % groups, oh0, rows, (rows + halo) * wp, rows * wp


@njit(**_JIT)
def tap_offsets(kh, kw, dh, dw, wp):
    offsets = np.empty(kh * kw, np.int64)
    for i in range(kh):
        for j in range(kw):
            offsets[i * kw + j] = i * dh * wp + j * dw
    return offsets


@njit(parallel=True, **_JIT)
def stride1_forward_kernel(x, w, bias, has_bias, relu, y, n, c, h, wd, k, kh, kw, oh, ow, ph,
                          pw, dh, dw, groups, wp, band, bands):
    cg, kg = c // groups, k // groups
    taps = kh * kw
    reduce, p = cg * taps, oh * ow
    halo = (kh - 1) * dh
    offsets = tap_offsets(kh, kw, dh, dw, wp)
    nc_max = NC_BYTES // y.itemsize
    for item in prange(n * groups * bands):
        ni, g, oh0, rows, plane, positions = band_item(item, bands, band, groups, oh, halo, wp)
        planes = np.empty(cg * plane + (kw - 1) * dw, y.dtype)
        fill_band(x, (ni * c + g * cg) * h * wd, cg, h, wd, ph, pw, oh0, rows + halo, wp,
                  planes)
        kc_max = (min(KC, reduce) + KSTEP - 1) // KSTEP * KSTEP
        w_max = (min(nc_max, positions) + PAD - 1) // PAD * PAD
        ap, bp, ct = carve_workspace(min(MC, kg), kc_max, w_max, y)
        wg = w[g * kg * reduce:]
        y0 = (ni * k + g * kg) * p + oh0 * ow
        # gemm_tile's blocking, written out (so in the weight gradient): its B panel is
        # filled from the planes, not by pack_b_panel, and the tile pass stays inline (below)
        for j0 in range(0, positions, nc_max):
            nc = min(nc_max, positions - j0)
            width = (nc + PAD - 1) // PAD * PAD
            for i0 in range(0, kg, MC):
                mc = min(MC, kg - i0)
                ct[:mc * width] = 0
                for p0 in range(0, reduce, KC):
                    kc = min(KC, reduce - p0)
                    kc_pad = (kc + KSTEP - 1) // KSTEP * KSTEP
                    # B panel rows (c, i, j): slices of the planes, no im2col
                    for pp in range(kc):
                        r = p0 + pp
                        ci = r // taps
                        src = ci * plane + offsets[r - ci * taps] + j0
                        bp[pp * width:pp * width + nc] = planes[src:src + nc]
                        bp[pp * width + nc:(pp + 1) * width] = 0
                    bp[kc * width:kc_pad * width] = 0
                    pack_a_panel(wg, reduce, 1, i0, mc, p0, kc, kc_pad, ap)
                    # gemm.update_tile's loop written out: called from here (inside the
                    # prange body) it made this kernel 25% slower (N16 64->64 32x32, 2
                    # threads: 9.2 -> 11.5 ms); gemm_tile calls it at no cost.
                    for i in range(0, mc - ROWS + 1, ROWS):
                        update_rows4(ap, i, kc_pad, bp, width, ct, i * width)
                    for i in range(mc - mc % ROWS, mc):
                        update_row1(ap, i, kc_pad, bp, width, ct, i * width)
                # out: wide position q = row*wp + col is an output where col < ow
                for i in range(mc):
                    acc = ct[i * width:i * width + nc]
                    dst = y[y0 + (i0 + i) * p:]
                    add = bias[g * kg + i0 + i] if has_bias else acc[0] * 0
                    row = j0 // wp
                    col = j0 - row * wp
                    for e in range(nc):
                        if col < ow:
                            v = acc[e] + add
                            if relu and v < 0:
                                dst[row * ow + col] = 0
                            else:
                                dst[row * ow + col] = v
                        col += 1
                        if col == wp:
                            col = 0
                            row += 1


@njit(parallel=True, **_JIT)
def stride1_weight_grad_kernel(gy, x, gw, n, c, h, wd, k, kh, kw, oh, ow, ph, pw, dh, dw,
                              groups, wp, band, bands, threads):
    cg, kg = c // groups, k // groups
    taps = kh * kw
    reduce, p = cg * taps, oh * ow
    halo = (kh - 1) * dh
    offsets = tap_offsets(kh, kw, dh, dw, wp)
    items = n * groups * bands
    # gW^T (reduce x kg per group) = X (reduce x positions) @ gy^T (positions x kg), with X's
    # rows slices of the planes (the GEMM's A, packed by slice copies) and gy^T, laid out
    # once per band, the B panel. One chunk of items per thread, summed in its own partial.
    partial = np.zeros((threads, k * reduce), gw.dtype)
    width = (kg + PAD - 1) // PAD * PAD
    for t in prange(threads):
        ap, _, ct = carve_workspace(MC, KC, width, gw)
        for item in range(items * t // threads, items * (t + 1) // threads):
            ni, g, oh0, rows, plane, positions = band_item(item, bands, band, groups, oh, halo,
                                                           wp)
            planes = np.empty(cg * plane + (kw - 1) * dw, gw.dtype)
            fill_band(x, (ni * c + g * cg) * h * wd, cg, h, wd, ph, pw, oh0, rows + halo, wp,
                      planes)
            g0 = (ni * k + g * kg) * p + oh0 * ow
            # gy^T on the wide grid, zero at dropped positions and past the band: the B
            # panel of every block, read in place
            gyt = np.zeros(((positions + KC) * width), gw.dtype)
            for j in range(kg):
                for r in range(rows):
                    src = gy[g0 + j * p + r * ow:g0 + j * p + (r + 1) * ow]
                    for col in range(ow):
                        gyt[(r * wp + col) * width + j] = src[col]
            acc = partial[t, g * kg * reduce:(g + 1) * kg * reduce]
            for i0 in range(0, reduce, MC):
                mc = min(MC, reduce - i0)
                ct[:mc * width] = 0
                for p0 in range(0, positions, KC):
                    kc = min(KC, positions - p0)
                    kc_pad = (kc + KSTEP - 1) // KSTEP * KSTEP
                    for i in range(mc):  # A rows: the planes under tap row i0 + i
                        r = i0 + i
                        ci = r // taps
                        src = ci * plane + offsets[r - ci * taps] + p0
                        ap[i * kc_pad:i * kc_pad + kc] = planes[src:src + kc]
                        ap[i * kc_pad + kc:(i + 1) * kc_pad] = 0
                    bp = gyt[p0 * width:]
                    for i in range(0, mc - ROWS + 1, ROWS):  # as in the forward above
                        update_rows4(ap, i, kc_pad, bp, width, ct, i * width)
                    for i in range(mc - mc % ROWS, mc):
                        update_row1(ap, i, kc_pad, bp, width, ct, i * width)
                for i in range(mc):  # partial is gW^T: rows (c, i, j), kg columns
                    dst = acc[(i0 + i) * kg:(i0 + i + 1) * kg]
                    src_row = ct[i * width:i * width + kg]
                    for j in range(kg):
                        dst[j] += src_row[j]
    sum_transposed_partials(partial, gw, k, kg, reduce)


# ---------------------------------------------------------------------------- entry points

def _tiling(pairs, positions, rows, itemsize, threads, split=True):
    """(width, tiles): positions per tile, within COLUMN_BYTES of column buffer (rows > 0),
    cut finer until every thread has an item."""
    width = positions
    if rows:
        width = max(TILE_QUANTUM, COLUMN_BYTES // (rows * itemsize) // TILE_QUANTUM * TILE_QUANTUM)
    tiles = math.ceil(positions / min(width, positions))
    while split and pairs * tiles < threads and positions // (tiles + 1) >= TILE_QUANTUM:
        tiles += 1
    width = min(positions, math.ceil(math.ceil(positions / tiles) / TILE_QUANTUM) * TILE_QUANTUM)
    return width, math.ceil(positions / width)


def _is_plain_1x1(shape):
    """1x1, stride 1, unpadded, output the input's size: the GEMM reads x in place as its B
    (forward_kernel and weight_grad_kernel take that path, told so by this), with no im2col."""
    s = shape
    return s.kh == s.kw == s.sh == s.sw == 1 and s.ph == s.pw == 0 and (s.oh, s.ow) == (s.h, s.w)


def _stride1_bands(shape, weight_grad=False):
    """(wp, band, bands) when the stride-1 kernels (stride1_forward_kernel,
    stride1_weight_grad_kernel) take this convolution, else None: wp columns per padded
    row, output rows per band, bands. The band's planes (and for the weight gradient also
    gy laid out on the same rows) take at most BAND_BYTES."""
    s = shape
    if s.sh != 1 or s.sw != 1 or s.ph < 0 or s.pw < 0 or (s.kh == s.kw == 1 and s.ph == s.pw == 0):
        return None
    if (s.oh, s.ow) != (s.h + 2 * s.ph - s.dh * (s.kh - 1), s.w + 2 * s.pw - s.dw * (s.kw - 1)):
        return None  # a transposed convolution's output_padding: rows past the formula
    wp = max(s.w + s.pw, s.ow)
    halo = (s.kh - 1) * s.dh
    per_row = 8 * (s.c // s.groups + (s.k // s.groups if weight_grad else 0)) * wp
    band = max(1, BAND_BYTES // per_row - halo)
    bands = math.ceil(s.oh / min(band, s.oh))
    while s.n * s.groups * bands < get_num_threads() and bands < s.oh:
        bands += 1
    band = math.ceil(s.oh / bands)
    return wp, band, math.ceil(s.oh / band)


def _forward(x, w, bias, out, shape, relu):
    s = shape
    bands = _stride1_bands(s)
    if bands is not None:
        y = out.reshape(-1)
        stride1_forward_kernel(x.reshape(-1), w.reshape(-1), y[:1] if bias is None else bias,
                               bias is not None, bool(relu), y, *s.without_stride(), *bands)
        return
    plain_1x1 = _is_plain_1x1(s)
    rows = 0 if plain_1x1 else s.c // s.groups * s.kh * s.kw
    width, tiles = _tiling(s.n * s.groups, s.oh * s.ow, rows, out.itemsize, get_num_threads())
    y = out.reshape(-1)
    forward_kernel(x.reshape(-1), w.reshape(-1), y[:0] if bias is None else bias,
                   bias is not None, bool(relu), y, *s, width, tiles, plain_1x1)


def _input_grad(gy, w, bias, gx, shape):
    """gx = the input gradient of the convolution ``shape`` for gy, plus bias per channel."""
    s = shape
    if s.sh == 1 and s.sw == 1:
        # A stride-1 input gradient is a convolution of gy: taps reversed, in and out
        # channels swapped within each group, padding d*(k-1) - p (negative is a crop).
        cg, kg = s.c // s.groups, s.k // s.groups
        flipped = (w[:, :, ::-1, ::-1].reshape(s.groups, kg, cg, s.kh, s.kw)
                   .transpose(0, 2, 1, 3, 4).reshape(s.c, kg, s.kh, s.kw))
        flipped = np.ascontiguousarray(flipped)
        of_gy = ConvShape(n=s.n, c=s.k, h=s.oh, w=s.ow, k=s.c, kh=s.kh, kw=s.kw, oh=s.h, ow=s.w,
                          sh=1, sw=1, ph=s.dh * (s.kh - 1) - s.ph, pw=s.dw * (s.kw - 1) - s.pw,
                          dh=s.dh, dw=s.dw, groups=s.groups)
        _forward(gy, flipped, bias, gx, of_gy, False)
        return
    rows = s.c // s.groups * s.kh * s.kw
    width, _ = _tiling(s.n * s.groups, s.oh * s.ow, rows, gx.itemsize, 1, split=False)
    g = gx.reshape(-1)
    input_grad_kernel(gy.reshape(-1), w.reshape(-1), g[:0] if bias is None else bias,
                      bias is not None, g, *s, width)


def conv2d(x, w, bias, out, stride, padding, dilation, groups, relu):
    """out = relu?(conv2d(x, w) + bias); C-contiguous numpy arrays of one float dtype."""
    _forward(x, w, bias, out, ConvShape.of(x.shape, w.shape, out.shape, stride, padding,
                                           dilation, groups), relu)


def conv2d_backward(gy, x, w, gx, gw, gb, stride, padding, dilation, groups):
    """Overwrites gx, gw, gb (each may be None) with conv2d's gradients given gy."""
    x_shape = (x if x is not None else gx).shape if (x is not None or gx is not None) else None
    if gb is not None:
        gb[...] = gy.sum(axis=(0, 2, 3), dtype=gy.dtype)
    if x_shape is None:
        return
    s = ConvShape.of(x_shape, w.shape, gy.shape, stride, padding, dilation, groups)
    bands = _stride1_bands(s, weight_grad=True)
    if gw is not None and bands is not None:
        stride1_weight_grad_kernel(gy.reshape(-1), x.reshape(-1), gw.reshape(-1),
                                   *s.without_stride(), *bands, get_num_threads())
    elif gw is not None:
        plain_1x1 = _is_plain_1x1(s)
        threads = get_num_threads()
        width, tiles = _tiling(s.n * s.groups, s.oh * s.ow,
                               0 if plain_1x1 else s.c // s.groups * s.kh * s.kw, gw.itemsize,
                               threads)
        weight_grad_kernel(gy.reshape(-1), x.reshape(-1), gw.reshape(-1), *s, width, tiles,
                           threads, plain_1x1)
    if gx is not None:
        _input_grad(gy, w, None, gx, s)


def conv_transpose2d(x, w, bias, out, stride, padding, dilation, groups):
    """out = conv_transpose2d(x, w) + bias, as an input gradient (ConvShape.transposed)."""
    _input_grad(x, w, bias, out, ConvShape.transposed(x.shape, w.shape, out.shape, stride,
                                                      padding, dilation, groups))
