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
are (h, w) tuples of ints, already validated here.
"""

from pyfast import backends
from pyfast._arrays import (Output, as_array, check_ndim, check_shape, contiguous, float_dtype,
                            same_device, array_module)

NEEDS = ("x", "w", "b")


def _pair(value, name, minimum):
    if isinstance(value, (tuple, list)):
        pair = tuple(value)
    else:
        pair = (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def _params(stride, padding, dilation):
    return _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)


def _check_groups(groups, channels, out_channels, w, what):
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if channels % groups:
        raise ValueError(f"{what}: {channels} input channels are not divisible by "
                         f"groups={groups}")
    if out_channels % groups:
        raise ValueError(f"{what}: {out_channels} output channels are not divisible by "
                         f"groups={groups} (w has shape {tuple(w.shape)})")


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
    return x, w, bias, dtype, device, _params(stride, padding, dilation)


def _kernels(device, backend):
    return backends.select("conv", device, backend)[1]


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
           out=None, backend=None):
    """y[n, k] = sum over c in k's group and the kernel window of x * w, plus bias[k];
    ``activation="relu"`` is fused into the same write. x (N, C, H, W), w (K, C/groups,
    kh, kw), bias (K,). Returns (N, K, OH, OW), written into ``out`` when given."""
    x, w, bias, dtype, device, (s, p, d) = _forward_checks(x, w, bias, stride, padding,
                                                           dilation, groups)
    if activation not in (None, "relu"):
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    _check_groups(groups, c, k, w, "conv2d")
    if cg != c // groups:
        raise ValueError(f"conv2d: w has shape {tuple(w.shape)}, so it expects {cg * groups} "
                         f"input channels with groups={groups}, but x has shape "
                         f"{tuple(x.shape)} ({c} channels)")
    if bias is not None:
        check_shape(bias, (k,), "bias", " (one value per output channel)")
    oh = _out_size(h, kh, s[0], p[0], d[0], "rows", x, w)
    ow = _out_size(wd, kw, s[1], p[1], d[1], "columns", x, w)
    dest = Output(out, (n, k, oh, ow), dtype, x, inputs=(x, w, bias))
    if dest.buffer.size:
        _kernels(device, backend).conv2d(contiguous(x), contiguous(w), contiguous(bias),
                                         dest.buffer, s, p, d, groups, activation == "relu")
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
                    needs=NEEDS, *, out=None, backend=None):
    """Gradients of a conv2d's loss with respect to its input, weight and bias, given the
    gradient ``gy`` of its output. Returns (gx, gw, gb), None for what ``needs`` leaves out.
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
    _check_groups(groups, c, k, w, "conv2d_backward")
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
    dests = [Output(o, shape, dtype, x, name, inputs=(gy, x, w)) if v in needs else None
             for o, shape, name, v in zip(out, (x.shape, w.shape, (k,)),
                                          ("out[0]", "out[1]", "out[2]"), NEEDS)]
    gx, gw, gb = (None if dest is None else dest.buffer for dest in dests)
    if gy.size == 0 or x.size == 0:
        for g in (gx, gw, gb):
            if g is not None:
                g[...] = 0
    elif needs:
        _kernels(device, backend).conv2d_backward(
            contiguous(gy), contiguous(x) if gw is not None else None, contiguous(w),
            gx, gw, gb, s, p, d, groups)
    return tuple(None if dest is None else dest.result() for dest in dests)


def _transpose_checks(x, w, bias, stride, padding, output_padding, dilation, groups, what):
    x, w, bias, dtype, device, (s, p, d) = _forward_checks(x, w, bias, stride, padding,
                                                           dilation, groups)
    op = _pair(output_padding, "output_padding", 0)
    n, c, h, wd = x.shape
    cin, kg, kh, kw = w.shape
    if cin != c:
        raise ValueError(f"{what}: w has shape {tuple(w.shape)}, so it expects {cin} input "
                         f"channels, but x has shape {tuple(x.shape)} ({c} channels)")
    _check_groups(groups, c, kg * groups, w, what)
    for o, st, dl, axis in zip(op, s, d, ("rows", "columns")):
        if o >= max(st, dl):
            raise ValueError(f"{what}: output_padding {o} along {axis} must be smaller than "
                             f"stride or dilation ({st}, {dl})")
    oh = (h - 1) * s[0] - 2 * p[0] + d[0] * (kh - 1) + op[0] + 1
    ow = (wd - 1) * s[1] - 2 * p[1] + d[1] * (kw - 1) + op[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: the output would be {oh}x{ow} for x of shape "
                         f"{tuple(x.shape)}, w of shape {tuple(w.shape)}, stride {s}, "
                         f"padding {p}, output_padding {op}, dilation {d}")
    if bias is not None:
        check_shape(bias, (kg * groups,), "bias", " (one value per output channel)")
    return x, w, bias, dtype, device, (s, p, d), (n, kg * groups, oh, ow)


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, *, out=None, backend=None):
    """The transposed convolution (torch.nn.functional.conv_transpose2d): the gradient of a
    conv2d with respect to its input. x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw),
    bias (Cout,). Returns (N, Cout, OH, OW), OH = (H-1)*stride - 2*padding +
    dilation*(kh-1) + output_padding + 1; written into ``out`` when given."""
    x, w, bias, dtype, device, (s, p, d), shape = _transpose_checks(
        x, w, bias, stride, padding, output_padding, dilation, groups, "conv_transpose2d")
    dest = Output(out, shape, dtype, x, inputs=(x, w, bias))
    if x.size == 0 or w.size == 0:
        dest.buffer[...] = 0 if bias is None else bias.reshape(1, -1, 1, 1)
    else:
        _kernels(device, backend).conv_transpose2d(contiguous(x), contiguous(w),
                                                   contiguous(bias), dest.buffer, s, p, d,
                                                   groups)
    return dest.result()


def conv_transpose2d_backward(gy, x, w, stride=1, padding=0, output_padding=0, dilation=1,
                              groups=1, needs=NEEDS, *, backend=None):
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
    if "x" in needs:
        gx = conv2d(gy, w, None, s, p, d, groups, backend=backend)
        if (conv_h, conv_w) != (h, wd):
            gx = contiguous(gx[:, :, :h, :wd])
    if "w" in needs:
        if (conv_h, conv_w) != (h, wd):
            padded = array_module(x).zeros(x.shape[:2] + (conv_h, conv_w), dtype)
            padded[:, :, :h, :wd] = x
            x = padded
        gw = conv2d_backward(x, gy, w, s, p, d, groups, needs=("w",), backend=backend)[1]
    gb = gy.sum(axis=(0, 2, 3)) if "b" in needs else None
    return gx, gw, gb
