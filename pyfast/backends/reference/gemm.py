"""Reference matrix multiply: out = relu?(a @ b + bias), for NumPy and CuPy arrays alike."""

from pyfast._arrays import array_module


def matmul(a, b, out, bias, relu):
    # a (M, K), b (K, N) with any strides; out (M, N) C-contiguous; bias (N,) or None
    xp = array_module(a)
    xp.matmul(a, b, out=out)
    if bias is not None:
        out += bias
    if relu:
        xp.maximum(out, 0, out=out)
