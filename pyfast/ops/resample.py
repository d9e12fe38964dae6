"""resample family: 2-D nearest and bilinear resizing of (N, C, H, W) arrays, forward and
backward, with torch's coordinate conventions.

The coordinate maps are decided here, once per call, in torch's arithmetic (the input's
precision; ``scale_factor`` given means the map uses
1/scale_factor, as interpolate without recompute_scale_factor): small per-row and
per-column tables of source indices (and bilinear weights) go to the kernels, which only
gather and scatter-add. That keeps every backend exactly on torch's sample positions.
"""

import math

import numpy as np

from pyfast import backends
from pyfast._arrays import (array_module, as_array, check_shape, contiguous, float_dtype, pair,
                            same_device)

MODES = ("nearest", "bilinear")


def output_size(in_hw, size=None, scale_factor=None):
    """(output size, scales for the coordinate map or (None, None)) of resizing a plane of
    ``in_hw`` to ``size`` or by ``scale_factor`` (exactly one of them): floor(n * scale), as
    torch. The one place that size is computed (interpolate's recompute_scale_factor too)."""
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    if size is not None:
        out = pair(size, "size")
        scales = (None, None)
    else:
        scales = pair(scale_factor, "scale_factor", number=True)
        if any(not math.isfinite(s) or s <= 0 for s in scales):
            raise ValueError(f"scale_factor must be positive and finite, got {scale_factor!r}")
        out = tuple(int(math.floor(float(n) * s)) for n, s in zip(in_hw, scales))
    if any(o < 1 for o in out):
        raise ValueError(f"the output size {out} must be positive (input {in_hw}, size={size}, "
                         f"scale_factor={scale_factor})")
    return out, scales


def nearest_table(size, out, scale, dtype):
    """Source index of each output position: floor(o * scale) in the input's precision,
    scale = 1/scale_factor or size/out (torch's HelperInterpNearest)."""
    t = np.dtype(dtype).type
    o = np.arange(out)
    s = t(1.0 / scale) if scale is not None and scale > 0 else t(size) / t(out)
    src = np.floor(o.astype(dtype) * s).astype(np.int64)
    return np.minimum(src, size - 1)


def bilinear_table(size, out, scale, align_corners, dtype):
    """(i0, i1, l0, l1) per output position: the two source indices and their weights
    (torch's area_pixel_compute_source_index + guard_index_and_lambda, in ``dtype``)."""
    t = np.dtype(dtype).type
    o = np.arange(out)
    if out == size:
        idx = o.astype(np.int64)
        return idx, idx, np.ones(out, dtype), np.zeros(out, dtype)
    if align_corners:
        ratio = t(size - 1) / t(out - 1) if out > 1 else t(0)
        src = ratio * o.astype(dtype)
    else:
        ratio = t(1.0 / scale) if scale is not None and scale > 0 else t(size) / t(out)
        src = ratio * (o.astype(dtype) + t(0.5)) - t(0.5)
        src = np.maximum(src, t(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    l1 = np.clip(src - i0.astype(dtype), 0, 1).astype(dtype)
    i1 = i0 + (i0 < size - 1)
    return i0, i1.astype(np.int64), (t(1) - l1).astype(dtype), l1


def _tables(xp, in_hw, out_hw, scales, mode, align_corners, dtype):
    if mode == "nearest":
        return [xp.asarray(nearest_table(n, o, s, dtype)) for n, o, s in zip(in_hw, out_hw, scales)]
    th = bilinear_table(in_hw[0], out_hw[0], scales[0], align_corners, dtype)
    tw = bilinear_table(in_hw[1], out_hw[1], scales[1], align_corners, dtype)
    return [xp.asarray(a) for a in th + tw]


def _check_mode(mode, align_corners):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "nearest" and align_corners:
        raise ValueError("align_corners can only be set with mode='bilinear'")


def upsample2d(x, size=None, scale_factor=None, *, mode="nearest", align_corners=False,
               backend=None):
    """Resize the last two axes of ``x`` (N, C, H, W) to ``size`` or by ``scale_factor``."""
    x = as_array(x, "x")
    float_dtype(x=x)
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    _check_mode(mode, align_corners)
    in_hw = tuple(x.shape[2:])
    if 0 in in_hw:
        raise ValueError(f"x of shape {tuple(x.shape)} has an empty plane")
    out_hw, scales = output_size(in_hw, size, scale_factor)
    xp = array_module(x)
    y = xp.empty(x.shape[:2] + out_hw, x.dtype)
    if y.size:
        tables = _tables(xp, in_hw, out_hw, scales, mode, align_corners, x.dtype)
        _, kernels = backends.select("resample", same_device(x=x), backend)
        kernel = kernels.upsample_nearest2d if mode == "nearest" else kernels.upsample_bilinear2d
        kernel(contiguous(x), y, *tables)
    return y


def upsample2d_backward(gy, input_shape, scale_factor=None, *, mode="nearest",
                        align_corners=False, backend=None):
    """Gradient of upsample2d with respect to its input (of ``input_shape``); the output
    size is ``gy``'s. ``scale_factor`` must be what the forward was given (or None)."""
    gy = as_array(gy, "gy")
    float_dtype(gy=gy)
    input_shape = tuple(int(s) for s in input_shape)
    if gy.ndim != 4 or len(input_shape) != 4 or gy.shape[:2] != input_shape[:2]:
        raise ValueError(f"gy of shape {tuple(gy.shape)} does not fit input_shape {input_shape}")
    _check_mode(mode, align_corners)
    in_hw, out_hw = input_shape[2:], tuple(gy.shape[2:])
    if scale_factor is None:
        scales = (None, None)
    else:
        expected, scales = output_size(in_hw, None, scale_factor)
        check_shape(gy, input_shape[:2] + expected, "gy",
                    f" (input {input_shape} scaled by {scale_factor})")
    xp = array_module(gy)
    gx = xp.empty(input_shape, gy.dtype)
    if gx.size:
        if gy.size == 0:
            gx[...] = 0
            return gx
        tables = _tables(xp, in_hw, out_hw, scales, mode, align_corners, gy.dtype)
        _, kernels = backends.select("resample", same_device(gy=gy), backend)
        kernel = kernels.upsample_nearest2d_backward if mode == "nearest" \
            else kernels.upsample_bilinear2d_backward
        kernel(contiguous(gy), gx, *tables)
    return gx
