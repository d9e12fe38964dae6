"""Reference convolution (NumPy or CuPy): im2col by strided slicing, then one batched
matmul per group; the input-gradient is the matmul's transpose scattered back (col2im).

Shapes: x (N, C, H, W), w (K, C/G, kh, kw), y (N, K, OH, OW). With G groups, columns are
(N, G, C/G * kh * kw, OH * OW) and the weights (G, K/G, C/G * kh * kw).
"""

from pyfast._arrays import array_module


def _window(xp_pad, i, j, out_hw, stride, dilation):
    """x_pad's values under kernel tap (i, j) for every output position: (N, C, OH, OW)."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return xp_pad[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]


def _pad(x, padding):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return array_module(x).pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _columns(x, kh, kw, out_hw, stride, padding, dilation, groups):
    xp = array_module(x)
    n, c = x.shape[:2]
    x_pad = _pad(x, padding)
    taps = [_window(x_pad, i, j, out_hw, stride, dilation) for i in range(kh) for j in range(kw)]
    cols = xp.stack(taps, axis=2)  # (N, C, kh*kw, OH, OW)
    return cols.reshape(n, groups, c // groups * kh * kw, out_hw[0] * out_hw[1])


def _grouped_weights(w, groups):
    k = w.shape[0]
    return w.reshape(groups, k // groups, -1)


def conv2d(x, w, bias, out, stride, padding, dilation, groups, relu):
    xp = array_module(x)
    n, k, oh, ow = out.shape
    cols = _columns(x, w.shape[2], w.shape[3], (oh, ow), stride, padding, dilation, groups)
    y = xp.matmul(_grouped_weights(w, groups)[None], cols)  # (N, G, K/G, OH*OW)
    out[...] = y.reshape(n, k, oh, ow)
    if bias is not None:
        out += bias.reshape(1, k, 1, 1)
    if relu:
        xp.maximum(out, 0, out=out)


def _input_gradient(gy, w, gx, stride, padding, dilation, groups):
    """gx (N, C, H, W) = the gradient of conv2d(x, w) with respect to x, given gy."""
    xp = array_module(gy)
    n, k, oh, ow = gy.shape
    c, (h, wd) = gx.shape[1], gx.shape[2:]
    kh, kw = w.shape[2:]
    wg = _grouped_weights(w, groups)  # (G, K/G, C/G*kh*kw)
    dcols = xp.matmul(wg.transpose(0, 2, 1)[None], gy.reshape(n, groups, k // groups, oh * ow))
    dcols = dcols.reshape(n, c, kh * kw, oh, ow)
    (ph, pw) = padding
    gx_pad = xp.zeros((n, c, h + 2 * ph, wd + 2 * pw), gx.dtype)
    for i in range(kh):
        for j in range(kw):
            _window(gx_pad, i, j, (oh, ow), stride, dilation)[...] += dcols[:, :, i * kw + j]
    gx[...] = gx_pad[:, :, ph:ph + h, pw:pw + wd]


def conv2d_backward(gy, x, w, gx, gw, gb, stride, padding, dilation, groups):
    xp = array_module(gy)
    n, k, oh, ow = gy.shape
    if gb is not None:
        gb[...] = gy.sum(axis=(0, 2, 3))
    if gw is not None:
        cols = _columns(x, w.shape[2], w.shape[3], (oh, ow), stride, padding, dilation, groups)
        gyg = gy.reshape(n, groups, k // groups, oh * ow)
        gw[...] = xp.matmul(gyg, cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(w.shape)
    if gx is not None:
        _input_gradient(gy, w, gx, stride, padding, dilation, groups)


def conv_transpose2d(x, w, bias, out, stride, padding, dilation, groups):
    # x plays the convolution's output gradient; w (Cin, Cout/G, kh, kw) is the
    # convolution's weight with Cin = its output channels.
    _input_gradient(x, w, out, stride, padding, dilation, groups)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
