"""Reference 2-D resampling of (N, C, H, W) arrays, nearest and bilinear, forward and
backward. xp-generic.

Where each output row and column reads from is decided once, in pf.ops (with torch's
float arithmetic), and arrives here as small tables: for nearest a source index per output
row (``src_h``) and column (``src_w``); for bilinear two source indices and two weights
per output row and column. Kernels only gather (forward) and scatter-add (backward).
"""

from pyfast._arrays import array_module


def upsample_nearest2d(x, y, src_h, src_w):
    y[...] = x[:, :, src_h[:, None], src_w[None, :]]


def upsample_nearest2d_backward(gy, gx, src_h, src_w):
    xp = array_module(gy)
    n, c, h, w = gx.shape
    gx[...] = 0
    flat = (src_h[:, None] * w + src_w[None, :]).reshape(-1)
    planes = gx.reshape(n * c, h * w)
    xp.add.at(planes, (xp.arange(n * c)[:, None], flat[None, :]), gy.reshape(n * c, -1))


def upsample_bilinear2d(x, y, h0, h1, lh0, lh1, w0, w1, lw0, lw1):
    top = x[:, :, h0, :] * lh0[:, None] + x[:, :, h1, :] * lh1[:, None]
    y[...] = top[:, :, :, w0] * lw0 + top[:, :, :, w1] * lw1


def upsample_bilinear2d_backward(gy, gx, h0, h1, lh0, lh1, w0, w1, lw0, lw1):
    xp = array_module(gy)
    n, c, h, w = gx.shape
    oh = gy.shape[2]
    cols = xp.zeros((n, c, oh, w), gy.dtype)          # gradient after the column step
    idx = (slice(None), slice(None), slice(None))
    xp.add.at(cols, idx + (w0,), gy * lw0)
    xp.add.at(cols, idx + (w1,), gy * lw1)
    gx[...] = 0
    xp.add.at(gx, (slice(None), slice(None), h0), cols * lh0[:, None])
    xp.add.at(gx, (slice(None), slice(None), h1), cols * lh1[:, None])
