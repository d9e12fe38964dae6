"""Reference elementwise kernels: activations and their gradients, dropout, add.

xp-generic (NumPy or CuPy). Every function writes into ``out`` (C-contiguous, of the input's
dtype; it may be the input itself). Dropout's mask is a pure function of (seed, flat index)
through splitmix64, so every backend draws the same mask and the backward pass recomputes
it instead of storing it.
"""

import numpy as np

from pyfast._arrays import array_module

GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def relu(x, out):
    array_module(x).maximum(x, 0, out=out)


def relu_backward(gy, y, out):
    # torch's threshold_backward: 0 where y <= 0 (so at y == 0 too), gy elsewhere
    xp = array_module(gy)
    out[...] = xp.where(y <= 0, gy.dtype.type(0), gy)


def leaky_relu(x, out, negative_slope):
    xp = array_module(x)
    xp.multiply(x, xp.where(x > 0, 1, negative_slope).astype(x.dtype), out=out)


def leaky_relu_backward(gy, x, out, negative_slope):
    xp = array_module(gy)
    xp.multiply(gy, xp.where(x > 0, 1, negative_slope).astype(gy.dtype), out=out)


def sigmoid(x, out):
    xp = array_module(x)
    # exp(-x) overflows to inf for very negative x and 1 / (1 + inf) is the right 0
    with np.errstate(over="ignore"):
        out[...] = 1 / (1 + xp.exp(-x))


def sigmoid_backward(gy, y, out):
    out[...] = gy * y * (1 - y)


def tanh(x, out):
    array_module(x).tanh(x, out=out)


def tanh_backward(gy, y, out):
    out[...] = gy * (1 - y * y)


def dropout_keep(xp, size, seed, threshold):
    """Boolean mask of ``size`` elements: element i is kept when the top 24 bits of
    splitmix64(seed + (i + 1) * golden) are >= threshold (so P(drop) = threshold / 2**24)."""
    i = xp.arange(1, size + 1, dtype=xp.uint64)
    z = xp.uint64(seed) + i * xp.uint64(GOLDEN)
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(MIX1)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(MIX2)
    z = z ^ (z >> xp.uint64(31))
    return (z >> xp.uint64(40)) >= xp.uint64(threshold)


def dropout(x, out, seed, threshold, scale):
    xp = array_module(x)
    keep = dropout_keep(xp, x.size, seed, threshold).reshape(x.shape)
    with np.errstate(invalid="ignore"):  # a dropped inf becomes NaN, as in torch
        xp.multiply(x, keep * x.dtype.type(scale), out=out)


def add(a, b, out):
    array_module(a).add(a, b, out=out)
