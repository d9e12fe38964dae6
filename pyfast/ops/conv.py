"""conv family: 2-D convolution (NCHW) forward, both gradients, and the transposed
convolution, with torch.nn.functional.conv2d / conv_transpose2d semantics.

A transposed convolution is the input-gradient of a convolution, so backends implement
three kernels and this module builds the rest from them:

    conv2d(x, w, bias, out, stride, padding, dilation, groups, relu)
    conv2d_backward(gy, x, w, gx, gw, gb, stride, padding, dilation, groups)
        gx/gw/gb: preallocated outputs to overwrite, or None when not wanted; x may be None
        when gw is; gx's shape is the input's (a transposed convolution passes its output)
    conv_transpose2d(x, w, bias, out, stride, padding, dilation, groups)
        out's shape carries output_padding; equals conv2d_backward's gx for gy = x, plus bias

All arrays C-contiguous, of one float dtype, on one device; stride, padding and dilation
are (h, w) tuples of ints, already validated here. The native CPU kernels take two keywords
more: ``algo`` (a path name or None) and ``channels_last`` (the activations are NHWC memory
of (N, C, H, W)-shaped arrays), and return the path(s) they ran.

Memory format: as torch, a channels-last input (``pyfast._arrays.is_channels_last``) gives a
channels-last result (y of conv2d, gx of conv2d_backward, the transposed convolution's
output). The native CPU implicit GEMM path (forward, input gradient) and direct weight
gradient read and write NHWC as it is, and the planner prefers the implicit path for NHWC
arrays; every other path and backend works on NCHW copies.

Paths (native CPU): each pass of a convolution (forward, input gradient, weight gradient)
runs one of ``CONV_PATHS``, chosen per shape by ``choose_path`` in csrc/cpu/conv/plan.h
(where the measurements behind each rule are). ``algo=`` on a call, or the environment
variable ``PYFAST_CONV_ALGO`` (read per call; "auto" or unset plans), forces one for every
pass the call runs; a path that cannot run a pass raises ValueError saying why, before
anything is computed (``algo=`` names a native CPU path: with another backend it raises;
the variable only steers the native CPU kernels). ``last_conv_path()`` says which ran.
"""

import os
import threading

from pyfast import backends
from pyfast._arrays import (CHANNELS_LAST, Output, as_array, check_ndim, check_shape,
                            contiguous, float_dtype, is_channels_last, pair, same_device,
                            array_module, to_memory_format)

NEEDS = ("x", "w", "b")
CONV_PATHS = ("direct", "implicit_gemm", "im2col", "winograd")
ALGO_ENV = "PYFAST_CONV_ALGO"

_last = threading.local()


def last_conv_path():
    """The paths the calling thread's latest pf.ops conv call ran, per pass: ``{"forward":
    p}`` after conv2d, ``{"input_grad": p, "weight_grad": p}`` (the gradients it computed) after
    conv2d_backward, ``{"input_grad": p}`` after conv_transpose2d (the input gradient of a
    convolution), ``{"forward": p, "weight_grad": p}`` after conv_transpose2d_backward (its gx
    is a convolution of gy, its gw a weight gradient). p is a name of ``CONV_PATHS`` on the
    native CPU backend and None on backends without named paths; ``{}`` when the call ran no
    kernel (empty arrays) or there was none."""
    return dict(getattr(_last, "paths", {}))


def _record(**paths):
    _last.paths = paths


def _algo(algo, name, device):
    """The path to force on backend ``name``: algo=, else PYFAST_CONV_ALGO; None plans it."""
    from_env = algo is None
    if from_env:
        algo = os.environ.get(ALGO_ENV) or None
    if algo is None or algo == "auto":
        return None
    if algo not in CONV_PATHS:
        where = f" (from {ALGO_ENV})" if from_env else ""
        raise ValueError(f"algo must be one of {CONV_PATHS} or 'auto', got {algo!r}{where}")
    if name != "native" or device != "cpu":
        if from_env:
            return None
        raise ValueError(f"algo={algo!r} names a native CPU conv path, but the {name!r} "
                         f"backend runs this call on {device}")
    return algo


def _native_kw(name, device, algo, channels_last):
    """The keywords of a native CPU kernel call, or None for another backend."""
    if name == "native" and device == "cpu":
        return dict(algo=algo, channels_last=channels_last)
    return None


def conv_params(stride, padding, dilation):
    return (pair(stride, "stride", minimum=1), pair(padding, "padding", minimum=0),
            pair(dilation, "dilation", minimum=1))


def check_groups(groups, channels, out_channels, w, what):
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if channels % groups:
        raise ValueError(f"{what}: {channels} input channels are not divisible by "
                         f"groups={groups}")
    if out_channels % groups:
        raise ValueError(f"{what}: {out_channels} output channels are not divisible by "
                         f"groups={groups} (w has shape {tuple(w.shape)})")


def transpose_output_size(size, k, s, p, d, output_padding=0):
    """One spatial size of conv_transpose2d's output (torch's formula); nn.ConvTranspose2d
    inverts it to choose output_padding for a requested size."""
    return (size - 1) * s - 2 * p + d * (k - 1) + output_padding + 1


def _out_size(size, k, s, p, d, axis, x, w):
    span = d * (k - 1) + 1
    if span > size + 2 * p:
        raise ValueError(f"conv2d: the kernel spans {span} {axis} (w has shape {tuple(w.shape)}, "
                         f"dilation {d}) but the padded input has only {size + 2 * p} "
                         f"(x has shape {tuple(x.shape)}, padding {p})")
    return (size + 2 * p - span) // s + 1


def conv_output_shape(x_shape, w_shape, stride, padding, dilation):
    """(N, K, OH, OW) of conv2d for validated shapes and (h, w) parameter pairs."""
    (n, _, h, wd), (k, _, kh, kw) = x_shape, w_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    return (n, k, (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
            (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


def _forward_checks(x, w, bias, stride, padding, dilation, groups):
    x, w = as_array(x, "x"), as_array(w, "w")
    bias = None if bias is None else as_array(bias, "bias")
    check_ndim(x, 4, "x")
    check_ndim(w, 4, "w")
    dtype = float_dtype(x=x, w=w, bias=bias)
    device = same_device(x=x, w=w, bias=bias)
    return x, w, bias, dtype, device, conv_params(stride, padding, dilation)


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
           algo=None, out=None, backend=None):
    """y[n, k] = sum over c in k's group and the kernel window of x * w, plus bias[k];
    ``activation="relu"`` is fused into the same write. x (N, C, H, W), w (K, C/groups,
    kh, kw), bias (K,). Returns (N, K, OH, OW), channels-last when x is, written into
    ``out`` when given. ``algo`` forces a native CPU path (see the module docstring)."""
    x, w, bias, dtype, device, (s, p, d) = _forward_checks(x, w, bias, stride, padding,
                                                           dilation, groups)
    if activation not in (None, "relu"):
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    check_groups(groups, c, k, w, "conv2d")
    if cg != c // groups:
        raise ValueError(f"conv2d: w has shape {tuple(w.shape)}, so it expects {cg * groups} "
                         f"input channels with groups={groups}, but x has shape "
                         f"{tuple(x.shape)} ({c} channels)")
    if bias is not None:
        check_shape(bias, (k,), "bias", " (one value per output channel)")
    oh = _out_size(h, kh, s[0], p[0], d[0], "rows", x, w)
    ow = _out_size(wd, kw, s[1], p[1], d[1], "columns", x, w)
    name, kernels = backends.select("conv", device, backend)
    channels_last = is_channels_last(x)
    native = _native_kw(name, device, _algo(algo, name, device), channels_last)
    dest = Output(out, (n, k, oh, ow), dtype, x, inputs=(x, w, bias),
                  channels_last=channels_last)
    if not dest.buffer.size:
        _record()
        return dest.result()
    args = (contiguous(w), contiguous(bias))
    if native is not None:
        path = kernels.conv2d(x if channels_last else contiguous(x), *args, dest.buffer, s, p,
                              d, groups, activation == "relu", **native)
    else:
        y = array_module(x).empty(dest.buffer.shape, dtype) if channels_last else dest.buffer
        path = kernels.conv2d(contiguous(x), *args, y, s, p, d, groups, activation == "relu")
        if channels_last:
            dest.buffer[...] = y
    _record(forward=path if native is not None else None)
    return dest.result()


def _needs(needs):
    if isinstance(needs, str):
        needs = (needs,)
    needs = tuple(needs)
    unknown = [v for v in needs if v not in NEEDS]
    if unknown:
        raise ValueError(f"needs may hold only {NEEDS}, got {needs!r}")
    return needs


def conv2d_backward(gy, x, w, stride=1, padding=0, dilation=1, groups=1,
                    needs=NEEDS, *, algo=None, out=None, backend=None):
    """Gradients of a conv2d's loss with respect to its input, weight and bias, given the
    gradient ``gy`` of its output. Returns (gx, gw, gb), None for what ``needs`` leaves out;
    gx is channels-last when x is. ``algo`` forces the native CPU path of both gradients.
    ``out``: a triple of arrays (or None entries) to write gx, gw and gb into."""
    needs = _needs(needs)
    x, w, _, dtype, device, (s, p, d) = _forward_checks(x, w, None, stride, padding,
                                                        dilation, groups)
    gy = as_array(gy, "gy")
    check_ndim(gy, 4, "gy")
    float_dtype(x=x, gy=gy)
    same_device(x=x, gy=gy)
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    check_groups(groups, c, k, w, "conv2d_backward")
    if cg != c // groups:
        raise ValueError(f"conv2d_backward: w has shape {tuple(w.shape)}, which does not fit "
                         f"x of shape {tuple(x.shape)} with groups={groups}")
    _out_size(h, kh, s[0], p[0], d[0], "rows", x, w)
    _out_size(wd, kw, s[1], p[1], d[1], "columns", x, w)
    check_shape(gy, conv_output_shape(x.shape, w.shape, s, p, d), "gy",
                " (the shape conv2d gives for these x, w and parameters)")
    if out is None:
        out = (None, None, None)
    elif not isinstance(out, (tuple, list)) or len(out) != 3:
        raise TypeError(f"out must be a triple (gx, gw, gb) of arrays or None, got {out!r}")
    name, kernels = backends.select("conv", device, backend)
    channels_last = is_channels_last(x)
    native = _native_kw(name, device, _algo(algo, name, device), channels_last)
    xp = array_module(x)
    dests = [Output(o, shape, dtype, x, label, inputs=(gy, x, w), channels_last=cl)
             if v in needs else None
             for o, shape, label, v, cl in zip(out, (x.shape, w.shape, (k,)),
                                               ("out[0]", "out[1]", "out[2]"), NEEDS,
                                               (channels_last, False, False))]
    gx, gw, gb = (None if dest is None else dest.buffer for dest in dests)
    paths = (None, None)
    if gy.size == 0 or x.size == 0 or not needs:
        for g in (gx, gw, gb):
            if g is not None:
                g[...] = 0
    elif native is not None:
        gy_in = to_memory_format(gy, CHANNELS_LAST) if channels_last else contiguous(gy)
        x_in = None if gw is None else x if channels_last else contiguous(x)
        paths = kernels.conv2d_backward(gy_in, x_in, contiguous(w), gx, gw, gb, s, p, d,
                                        groups, **native)
    else:
        gx_out = xp.empty(x.shape, dtype) if gx is not None and channels_last else gx
        kernels.conv2d_backward(contiguous(gy), contiguous(x) if gw is not None else None,
                                contiguous(w), gx_out, gw, gb, s, p, d, groups)
        if gx_out is not gx:
            gx[...] = gx_out
    ran = {}
    if gy.size and x.size:
        if gx is not None:
            ran["input_grad"] = paths[0]
        if gw is not None:
            ran["weight_grad"] = paths[1]
    _record(**ran)
    return tuple(None if dest is None else dest.result() for dest in dests)


def _transpose_checks(x, w, bias, stride, padding, output_padding, dilation, groups, what):
    x, w, bias, dtype, device, (s, p, d) = _forward_checks(x, w, bias, stride, padding,
                                                           dilation, groups)
    op = pair(output_padding, "output_padding", minimum=0)
    n, c, h, wd = x.shape
    cin, kg, kh, kw = w.shape
    if cin != c:
        raise ValueError(f"{what}: w has shape {tuple(w.shape)}, so it expects {cin} input "
                         f"channels, but x has shape {tuple(x.shape)} ({c} channels)")
    check_groups(groups, c, kg * groups, w, what)
    for o, st, dl, axis in zip(op, s, d, ("rows", "columns")):
        if o >= max(st, dl):
            raise ValueError(f"{what}: output_padding {o} along {axis} must be smaller than "
                             f"stride or dilation ({st}, {dl})")
    oh = transpose_output_size(h, kh, s[0], p[0], d[0], op[0])
    ow = transpose_output_size(wd, kw, s[1], p[1], d[1], op[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: the output would be {oh}x{ow} for x of shape "
                         f"{tuple(x.shape)}, w of shape {tuple(w.shape)}, stride {s}, "
                         f"padding {p}, output_padding {op}, dilation {d}")
    if bias is not None:
        check_shape(bias, (kg * groups,), "bias", " (one value per output channel)")
    return x, w, bias, dtype, device, (s, p, d), (n, kg * groups, oh, ow)


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, *, algo=None, out=None, backend=None):
    """The transposed convolution (torch.nn.functional.conv_transpose2d): the gradient of a
    conv2d with respect to its input. x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw),
    bias (Cout,). Returns (N, Cout, OH, OW), OH = (H-1)*stride - 2*padding +
    dilation*(kh-1) + output_padding + 1, channels-last when x is; written into ``out``
    when given. ``algo`` forces the native CPU path of that input gradient."""
    x, w, bias, dtype, device, (s, p, d), shape = _transpose_checks(
        x, w, bias, stride, padding, output_padding, dilation, groups, "conv_transpose2d")
    name, kernels = backends.select("conv", device, backend)
    channels_last = is_channels_last(x)
    native = _native_kw(name, device, _algo(algo, name, device), channels_last)
    dest = Output(out, shape, dtype, x, inputs=(x, w, bias), channels_last=channels_last)
    if x.size == 0 or w.size == 0:
        dest.buffer[...] = 0 if bias is None else bias.reshape(1, -1, 1, 1)
        _record()
        return dest.result()
    args = (contiguous(w), contiguous(bias))
    if native is not None:
        path = kernels.conv_transpose2d(x if channels_last else contiguous(x), *args,
                                        dest.buffer, s, p, d, groups, **native)
    else:
        y = array_module(x).empty(shape, dtype) if channels_last else dest.buffer
        kernels.conv_transpose2d(contiguous(x), *args, y, s, p, d, groups)
        path = None
        if channels_last:
            dest.buffer[...] = y
    _record(input_grad=path)
    return dest.result()


def conv_transpose2d_backward(gy, x, w, stride=1, padding=0, output_padding=0, dilation=1,
                              groups=1, needs=NEEDS, *, algo=None, backend=None):
    """Gradients of a conv_transpose2d's loss with respect to x, w and bias, given ``gy``.

    y = conv_transpose2d(x, w) is the input-gradient of the convolution z = conv2d(y, w),
    so: gx = conv2d(gy, w) and gw = the weight-gradient of that convolution with the roles
    of gy (its input) and x (its output gradient) as written below; gb sums gy."""
    needs = _needs(needs)
    x, w, _, dtype, device, (s, p, d), shape = _transpose_checks(
        x, w, None, stride, padding, output_padding, dilation, groups,
        "conv_transpose2d_backward")
    gy = as_array(gy, "gy")
    float_dtype(x=x, gy=gy)
    same_device(x=x, gy=gy)
    check_shape(gy, shape, "gy", " (the shape conv_transpose2d gives for these arguments)")
    # With output_padding >= stride (allowed when dilation is larger) the convolution of gy
    # reaches rows past x's; x contributed nothing there, so those rows are cut off (gx) or
    # taken as zeros (gw).
    h, wd = x.shape[2:]
    conv_h, conv_w = conv_output_shape(gy.shape, w.shape, s, p, d)[2:]
    gx = gw = None
    ran = {}
    if "x" in needs:
        gx = conv2d(gy, w, None, s, p, d, groups, algo=algo, backend=backend)
        ran.update(last_conv_path())
        if (conv_h, conv_w) != (h, wd):
            gx = contiguous(gx[:, :, :h, :wd])
    if "w" in needs:
        if (conv_h, conv_w) != (h, wd):
            padded = array_module(x).zeros(x.shape[:2] + (conv_h, conv_w), dtype)
            padded[:, :, :h, :wd] = x
            x = padded
        gw = conv2d_backward(x, gy, w, s, p, d, groups, needs=("w",), algo=algo,
                             backend=backend)[1]
        ran.update(last_conv_path())
    gb = gy.sum(axis=(0, 2, 3)) if "b" in needs else None
    _record(**ran)
    return gx, gw, gb
