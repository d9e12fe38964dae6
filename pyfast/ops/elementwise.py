"""elementwise family: activations and their gradients, dropout, same-shape add.

Every function takes arrays of any shape (float32 or float64, one device) and returns a new
C-contiguous array of the input's shape, or writes into ``out`` (which may be an input:
these kernels read each element before writing it). Gradients of relu, sigmoid and tanh
are computed from the forward *output* (what autograd keeps anyway); leaky_relu's from the
input, as torch.

Dropout draws no mask to keep: element i of a tensor is dropped when a hash of
(``seed``, i) falls below ``p``, so the backward pass is the same call on the gradient with
the same seed, and every backend produces the same mask for the same seed.
"""

import math

from pyfast import backends
from pyfast._arrays import (array_module, as_array, check_shape, contiguous, describe, device_of,
                            float_dtype, same_device)

DROPOUT_BITS = 24  # resolution of the keep probability


def _prepare(out, like, **inputs):
    """Validate ``inputs`` (same shape as ``like``, one float dtype, one device); return the
    contiguous inputs, the buffer to write and the kernels."""
    arrays = {}
    shape = None
    for name, x in inputs.items():
        x = as_array(x, name)
        if shape is None:
            shape = x.shape
        else:
            check_shape(x, shape, name, f" (the shape of {like})")
        arrays[name] = x
    dtype = float_dtype(**arrays)
    device = same_device(**arrays)
    first = next(iter(arrays.values()))
    if out is None:
        buffer = array_module(first).empty(shape, dtype)
    else:
        buffer = as_array(out, "out")
        if device_of(buffer) != device:
            raise ValueError(f"out is on {device_of(buffer)} but the inputs are on {device}")
        if buffer.dtype != dtype:
            raise TypeError(f"out must be {dtype}, got {describe(buffer)}")
        check_shape(buffer, shape, "out")
        if not buffer.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        if not getattr(buffer.flags, "writeable", True):
            raise ValueError("out is read-only")
    return [contiguous(x) for x in arrays.values()], buffer, device


def _run(op, device, backend, *args):
    _, kernels = backends.select("elementwise", device, backend)
    getattr(kernels, op)(*args)


def _forward(op, x, out, backend, *options):
    (x,), y, device = _prepare(out, "x", x=x)
    _run(op, device, backend, x, y, *options)
    return y


def _backward(op, gy, saved, out, backend, *options):
    """``op``'s gradient from gy and the one array the forward kept, ``saved`` = {name: array}
    (the output y, or the input x for leaky_relu)."""
    (gy, kept), gx, device = _prepare(out, "gy", gy=gy, **saved)
    _run(op, device, backend, gy, kept, gx, *options)
    return gx


def relu(x, *, out=None, backend=None):
    """max(x, 0)."""
    return _forward("relu", x, out, backend)


def relu_backward(gy, y, *, out=None, backend=None):
    """gy where the relu output y > 0, else 0."""
    return _backward("relu_backward", gy, {"y": y}, out, backend)


def _slope(negative_slope):
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) \
            or not math.isfinite(negative_slope):
        raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
    return float(negative_slope)


def leaky_relu(x, negative_slope=0.01, *, out=None, backend=None):
    """x where x > 0, else negative_slope * x."""
    slope = _slope(negative_slope)
    return _forward("leaky_relu", x, out, backend, slope)


def leaky_relu_backward(gy, x, negative_slope=0.01, *, out=None, backend=None):
    """gy where the input x > 0, else negative_slope * gy."""
    slope = _slope(negative_slope)
    return _backward("leaky_relu_backward", gy, {"x": x}, out, backend, slope)


def sigmoid(x, *, out=None, backend=None):
    """1 / (1 + exp(-x))."""
    return _forward("sigmoid", x, out, backend)


def sigmoid_backward(gy, y, *, out=None, backend=None):
    """gy * y * (1 - y) from the sigmoid output y."""
    return _backward("sigmoid_backward", gy, {"y": y}, out, backend)


def tanh(x, *, out=None, backend=None):
    return _forward("tanh", x, out, backend)


def tanh_backward(gy, y, *, out=None, backend=None):
    """gy * (1 - y**2) from the tanh output y."""
    return _backward("tanh_backward", gy, {"y": y}, out, backend)


def dropout(x, p, seed, *, out=None, backend=None):
    """x * keep / (1 - p), keep drawn per element from ``seed`` with P(drop) = p (to 2**-24).

    The backward pass of dropout is ``dropout(gy, p, seed)`` with the forward's seed.
    p = 1 drops everything (zeros, no division by zero)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1], got {p!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    threshold = min(int(round(p * (1 << DROPOUT_BITS))), 1 << DROPOUT_BITS)
    scale = 0.0 if threshold == 1 << DROPOUT_BITS else 1.0 / (1.0 - p)
    return _forward("dropout", x, out, backend, seed, threshold, scale)


def add(a, b, *, out=None, backend=None):
    """a + b for arrays of one shape (no broadcasting). ``out=a`` accumulates in place."""
    (a, b), y, device = _prepare(out, "a", a=a, b=b)
    _run("add", device, backend, a, b, y)
    return y
