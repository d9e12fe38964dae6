"""pool family: 2-D max pooling (with argmax indices), average pooling and adaptive average
pooling, forward and backward, with torch's conventions: output sizes (floor or ceil
mode, a window may not start in the right/bottom padding), padding at most half the
kernel, ``count_include_pad`` and ``divisor_override`` divisors, adaptive windows
[floor(i*H/OH), ceil((i+1)*H/OH)).

Inputs are (N, C, H, W) or unbatched (C, H, W). Max-pool indices are int64 flat positions
within each input plane (ih * W + iw), as torch returns them; the backward routes each
gradient to its index (ties went to the first maximum, as torch).
"""

import numbers

import numpy as np

from pyfast import backends
from pyfast._arrays import (array_module, as_array, check_shape, contiguous, describe,
                            float_dtype, pair, same_device)


def _as_4d(x, name):
    if x.ndim == 3:
        return x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x


def output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """torch's pooling_output_shape."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) \
        // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _geometry(x, kernel_size, stride, padding, dilation, ceil_mode, what):
    kh, kw = pair(kernel_size, "kernel_size", minimum=1)
    sh, sw = (kh, kw) if stride is None or stride == () or stride == [] \
        else pair(stride, "stride", minimum=1)
    ph, pw = pair(padding, "padding", minimum=0)
    dh, dw = pair(dilation, "dilation", minimum=1)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{what}: padding {(ph, pw)} must be at most half of kernel_size "
                         f"{(kh, kw)}")
    h, w = x.shape[-2:]
    oh = output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = output_size(w, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input of shape {tuple(x.shape)} is too small for "
                         f"kernel_size {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}, "
                         f"dilation {(dh, dw)}: the output would be {oh}x{ow}")
    return (kh, kw, sh, sw, ph, pw, dh, dw), (oh, ow)


def _float_input(x, name):
    x = as_array(x, name)
    float_dtype(**{name: x})
    return x


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               backend=None):
    """Returns (y, indices); indices (int64, y's shape) are flat positions in each plane,
    -1 (with y = -inf) for a window that lies wholly in the padding (dilation allows it;
    torch gives a position outside the plane there)."""
    x = _float_input(x, "x")
    x4 = _as_4d(x, "x")
    g, (oh, ow) = _geometry(x4, kernel_size, stride, padding, dilation, ceil_mode,
                            "max_pool2d")
    xp = array_module(x)
    n, c = x4.shape[:2]
    y = xp.empty((n, c, oh, ow), x.dtype)
    indices = xp.empty((n, c, oh, ow), np.int64)
    if y.size:
        _, kernels = backends.select("pool", same_device(x=x), backend)
        kernels.max_pool2d(contiguous(x4), y, indices, *g)
    shape = x.shape[:-2] + (oh, ow)
    return y.reshape(shape), indices.reshape(shape)


def max_pool2d_backward(gy, indices, input_shape, *, backend=None):
    """Gradient of max_pool2d: ``gy`` summed into the positions ``indices`` name, in a
    zero array of ``input_shape``."""
    gy, indices = as_array(gy, "gy"), as_array(indices, "indices")
    float_dtype(gy=gy)
    device = same_device(gy=gy, indices=indices)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4) or gy.ndim != len(input_shape) or \
            gy.shape[:-2] != input_shape[:-2]:
        raise ValueError(f"max_pool2d_backward: gy of shape {tuple(gy.shape)} does not fit "
                         f"input_shape {input_shape}")
    check_shape(indices, gy.shape, "indices", " (the shape of gy)")
    if indices.dtype != np.int64:
        raise TypeError(f"indices must be int64, got {describe(indices)}")
    xp = array_module(gy)
    gx = xp.empty(input_shape, gy.dtype)
    gx4, gy4 = _as_4d(gx, "gx"), _as_4d(contiguous(gy), "gy")
    if gx.size == 0:
        return gx
    if gy.size and (int(indices.min()) < -1 or int(indices.max()) >= gx4.shape[2] * gx4.shape[3]):
        raise ValueError(f"indices must lie in [0, {gx4.shape[2] * gx4.shape[3]}) (positions "
                         f"in a {gx4.shape[2]}x{gx4.shape[3]} plane) or be -1 (a window in "
                         f"the padding)")
    _, kernels = backends.select("pool", device, backend)
    kernels.max_pool2d_backward(gy4, _as_4d(contiguous(indices), "indices"), gx4)
    return gx


def _avg_options(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override, what):
    g, out = _geometry(x, kernel_size, stride, padding, 1, ceil_mode, what)
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(
            divisor_override, numbers.Integral) or divisor_override == 0):
        raise ValueError(f"{what}: divisor_override must be a non-zero int or None, got "
                         f"{divisor_override!r}")
    kh, kw, sh, sw, ph, pw = g[:6]
    return (kh, kw, sh, sw, ph, pw, bool(count_include_pad), int(divisor_override or 0)), out


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, backend=None):
    x = _float_input(x, "x")
    x4 = _as_4d(x, "x")
    options, (oh, ow) = _avg_options(x4, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad, divisor_override, "avg_pool2d")
    xp = array_module(x)
    y = xp.empty(x4.shape[:2] + (oh, ow), x.dtype)
    if y.size:
        _, kernels = backends.select("pool", same_device(x=x), backend)
        kernels.avg_pool2d(contiguous(x4), y, *options)
    return y.reshape(x.shape[:-2] + (oh, ow))


def avg_pool2d_backward(gy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, backend=None):
    gy = _float_input(gy, "gy")
    input_shape = tuple(int(s) for s in input_shape)
    xp = array_module(gy)
    gx = xp.empty(input_shape, gy.dtype)
    gx4 = _as_4d(gx, "input_shape")
    options, out = _avg_options(gx4, kernel_size, stride, padding, ceil_mode,
                                count_include_pad, divisor_override, "avg_pool2d_backward")
    check_shape(gy, input_shape[:-2] + out, "gy", f" (the pooled shape of {input_shape})")
    if gx.size:
        _, kernels = backends.select("pool", same_device(gy=gy), backend)
        kernels.avg_pool2d_backward(_as_4d(contiguous(gy), "gy"), gx4, *options)
    return gx


def adaptive_avg_pool2d(x, output_size, *, backend=None):
    """Average over windows [floor(i*H/OH), ceil((i+1)*H/OH)) (and the same for columns)."""
    x = _float_input(x, "x")
    x4 = _as_4d(x, "x")
    oh, ow = pair(output_size, "output_size", minimum=1)
    xp = array_module(x)
    y = xp.empty(x4.shape[:2] + (oh, ow), x.dtype)
    if x4.shape[2] == 0 or x4.shape[3] == 0:
        raise ValueError(f"adaptive_avg_pool2d: input of shape {tuple(x.shape)} has an empty "
                         f"plane")
    if y.size:
        _, kernels = backends.select("pool", same_device(x=x), backend)
        kernels.adaptive_avg_pool2d(contiguous(x4), y)
    return y.reshape(x.shape[:-2] + (oh, ow))


def adaptive_avg_pool2d_backward(gy, input_shape, *, backend=None):
    gy = _float_input(gy, "gy")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4) or gy.ndim != len(input_shape) or \
            gy.shape[:-2] != input_shape[:-2]:
        raise ValueError(f"adaptive_avg_pool2d_backward: gy of shape {tuple(gy.shape)} does "
                         f"not fit input_shape {input_shape}")
    xp = array_module(gy)
    gx = xp.empty(input_shape, gy.dtype)
    if gx.size:
        _, kernels = backends.select("pool", same_device(gy=gy), backend)
        kernels.adaptive_avg_pool2d_backward(_as_4d(contiguous(gy), "gy"), _as_4d(gx, "gx"))
    return gx
