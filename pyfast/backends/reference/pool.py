"""Reference 2-D pooling over (N, C, H, W) arrays: max (with argmax indices), average and
adaptive average, forward and backward. xp-generic.

Max and average pooling loop over the kernel's offsets, each a strided slice of the padded
input, so every output is computed by whole-array operations. Ties in max pooling go to the
first maximum in scan order and a NaN wins (a later NaN replaces an earlier one), as torch's
CPU kernel; indices are flat positions within each input plane (ih * W + iw).
"""

import numpy as np

from pyfast._arrays import array_module


def _first_valid(o, stride, pad, dilation):
    """First in-bounds input position of each window (torch's starting argmax)."""
    start = o * stride - pad
    return np.where(start < 0, start + ((-start + dilation - 1) // dilation) * dilation, start)


def max_pool2d(x, y, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    xp = array_module(x)
    n, c, h, w = x.shape
    oh, ow = y.shape[2:]
    hp = max(h + ph, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(w + pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    padded = xp.full((n, c, hp, wp), -xp.inf, x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    rows = np.arange(oh)[:, None] * sh - ph
    cols = np.arange(ow)[None, :] * sw - pw
    best = xp.full(y.shape, -xp.inf, x.dtype)
    where = xp.asarray(_first_valid(np.arange(oh), sh, ph, dh)[:, None] * w
                       + _first_valid(np.arange(ow), sw, pw, dw)[None, :])
    where = xp.broadcast_to(where, y.shape).copy()
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            val = padded[:, :, r0:r0 + (oh - 1) * sh + 1:sh, c0:c0 + (ow - 1) * sw + 1:sw]
            better = (val > best) | xp.isnan(val)
            best = xp.where(better, val, best)
            flat = xp.asarray((rows + r0) * w + cols + c0)
            where = xp.where(better, flat, where)
    # a window wholly in the padding (dilation allows it) has no input position: -1
    empty = xp.asarray((_first_valid(np.arange(oh), sh, ph, dh) >= h)[:, None]
                       | (_first_valid(np.arange(ow), sw, pw, dw) >= w)[None, :])
    y[...] = best
    indices[...] = xp.where(empty, -1, where)


def max_pool2d_backward(gy, indices, gx):
    xp = array_module(gy)
    n, c, h, w = gx.shape
    gx[...] = 0
    planes = gx.reshape(n * c, h * w)
    rows = xp.broadcast_to(xp.arange(n * c)[:, None], (n * c, indices[0, 0].size))
    at, g = indices.reshape(n * c, -1), gy.reshape(n * c, -1)
    keep = at >= 0   # -1: a window in the padding, nothing to route back
    xp.add.at(planes, (rows[keep], at[keep]), g[keep])


def _avg_divisors(h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    """Per output position, what torch divides the window's sum by."""
    if divisor:
        return np.full((oh, ow), float(divisor))
    def extent(o, size, k, s, p):
        start = o * s - p
        end = np.minimum(start + k, size + p)
        whole = end - start
        return whole, np.minimum(end, size) - np.maximum(start, 0)
    hw, hv = extent(np.arange(oh), h, kh, sh, ph)
    ww, wv = extent(np.arange(ow), w, kw, sw, pw)
    if count_include_pad:
        return hw[:, None] * ww[None, :].astype(float)
    return hv[:, None] * wv[None, :].astype(float)


def _padded_extent(h, w, oh, ow, kh, kw, sh, sw, ph, pw):
    return max(h + ph, (oh - 1) * sh + kh), max(w + pw, (ow - 1) * sw + kw)


def avg_pool2d(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    xp = array_module(x)
    n, c, h, w = x.shape
    oh, ow = y.shape[2:]
    hp, wp = _padded_extent(h, w, oh, ow, kh, kw, sh, sw, ph, pw)
    padded = xp.zeros((n, c, hp, wp), x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    total = xp.zeros(y.shape, x.dtype)
    for i in range(kh):
        for j in range(kw):
            total += padded[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
    div = _avg_divisors(h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad, divisor)
    y[...] = total / xp.asarray(div.astype(x.dtype))


def avg_pool2d_backward(gy, gx, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    xp = array_module(gy)
    n, c, h, w = gx.shape
    oh, ow = gy.shape[2:]
    hp, wp = _padded_extent(h, w, oh, ow, kh, kw, sh, sw, ph, pw)
    div = _avg_divisors(h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad, divisor)
    share = gy / xp.asarray(div.astype(gy.dtype))
    padded = xp.zeros((n, c, hp, wp), gy.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw] += share
    gx[...] = padded[:, :, ph:ph + h, pw:pw + w]


def _adaptive_windows(size, out):
    return [((o * size) // out, -(-((o + 1) * size) // out)) for o in range(out)]


def adaptive_avg_pool2d(x, y):
    h, w = x.shape[2:]
    oh, ow = y.shape[2:]
    for i, (h0, h1) in enumerate(_adaptive_windows(h, oh)):
        for j, (w0, w1) in enumerate(_adaptive_windows(w, ow)):
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))


def adaptive_avg_pool2d_backward(gy, gx):
    h, w = gx.shape[2:]
    oh, ow = gy.shape[2:]
    gx[...] = 0
    for i, (h0, h1) in enumerate(_adaptive_windows(h, oh)):
        for j, (w0, w1) in enumerate(_adaptive_windows(w, ow)):
            area = (h1 - h0) * (w1 - w0)
            gx[:, :, h0:h1, w0:w1] += gy[:, :, i:i + 1, j:j + 1] / area
