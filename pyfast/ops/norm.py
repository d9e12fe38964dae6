"""norm family: batch normalisation, forward (training and eval) and backward.

Inputs are (N, C, *) with statistics per channel over every other axis, as
torch.nn.functional.batch_norm. In training the batch mean and biased variance normalise,
and the running statistics (when given) move by ``momentum`` using the *unbiased* variance;
otherwise the running statistics normalise. The forward returns the mean and 1/sqrt(var+eps)
it used, which is what the backward needs (torch's save_mean / save_invstd).

Fused layers (pyfast extensions, the BN-ReLU and BN-add-ReLU of ResNet / DenseNet / U-Net
blocks): ``residual=`` adds an array of x's shape to the normalised values and
``activation="relu"`` applies a ReLU, in the same pass: y = relu(bn(x) + residual). The
backward takes the forward's output ``y`` when it applied the ReLU, and with
``residual=True`` also returns the residual's gradient (gy through the ReLU), as torch's
BatchNorm2d + add + relu would give.
"""

import math

import numpy as np

from pyfast import backends
from pyfast._arrays import (array_module, as_array, check_shape, contiguous, float_dtype,
                            same_device)

NEEDS = ("x", "w", "b")
ACTIVATIONS = (None, "relu")


def _as_3d(x):
    return x.reshape(x.shape[0], x.shape[1], -1)


def _samples_3d(x):
    """``x`` (N, C, *) as (N, C, S) for the kernels, without a copy when each sample is
    C-contiguous but the batch stride is larger (a channel prefix of a bigger buffer, as
    DenseNet's feature stack hands its layers); else contiguous."""
    if x.flags.c_contiguous or not isinstance(x, np.ndarray) or x.shape[0] < 2 \
            or x.strides[0] <= 0 or not x[0].flags.c_contiguous:
        return _as_3d(contiguous(x))
    c = x.shape[1]
    s = x[0].size // c
    if x.strides[0] < c * s * x.itemsize:
        return _as_3d(contiguous(x))
    return np.lib.stride_tricks.as_strided(x, (x.shape[0], c, s),
                                           (x.strides[0], s * x.itemsize, x.itemsize))


def _check_writable_stat(a, name, channels):
    check_shape(a, (channels,), name, " (one value per channel)")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be contiguous: it is updated in place")
    if not getattr(a.flags, "writeable", True):
        raise ValueError(f"{name} is read-only; it is updated in place in training")


def _number(value, name, low=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")
    return float(value)


def _activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation == "relu"


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, *, training,
               momentum=0.1, eps=1e-5, activation=None, residual=None, backend=None):
    """Normalise ``x`` (N, C, *) per channel; returns (y, mean, invstd).

    ``weight``/``bias`` (C,) may be None (1 and 0). In training, ``running_mean`` and
    ``running_var`` (C,) are updated in place when given; in eval they are required.
    ``residual`` (x's shape) is added after the affine map and ``activation="relu"``
    applied last, fused in the same pass: y = relu(bn(x) + residual)."""
    relu = _activation(activation)
    x = as_array(x, "x")
    residual = None if residual is None else as_array(residual, "residual")
    weight = None if weight is None else as_array(weight, "weight")
    bias = None if bias is None else as_array(bias, "bias")
    running_mean = None if running_mean is None else as_array(running_mean, "running_mean")
    running_var = None if running_var is None else as_array(running_var, "running_var")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: x must be (N, C, ...), got shape {tuple(x.shape)}")
    dtype = float_dtype(x=x, weight=weight, bias=bias, running_mean=running_mean,
                        running_var=running_var, residual=residual)
    device = same_device(x=x, weight=weight, bias=bias, running_mean=running_mean,
                         running_var=running_var, residual=residual)
    if residual is not None:
        check_shape(residual, x.shape, "residual", " (the shape of x)")
    channels = x.shape[1]
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None:
            check_shape(a, (channels,), name, f" (x has {channels} channels)")
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        if a is not None:
            _check_writable_stat(a, name, channels)
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    momentum = _number(momentum, "momentum")
    eps = _number(eps, "eps")
    training = bool(training)
    count = x.size // max(channels, 1)
    if training and count <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input "
                         f"size {tuple(x.shape)}")
    if not training and running_mean is None:
        raise ValueError("batch_norm: eval mode (training=False) needs running_mean and "
                         "running_var")
    xp = array_module(x)
    y = xp.empty(x.shape, dtype)
    mean, invstd = xp.empty(channels, dtype), xp.empty(channels, dtype)
    if x.size == 0:
        return y, mean, invstd
    _, kernels = backends.select("norm", device, backend)
    kernels.batch_norm(_samples_3d(x), contiguous(weight), contiguous(bias),
                       running_mean, running_var, _as_3d(y), mean, invstd, training, momentum,
                       eps, None if residual is None else _as_3d(contiguous(residual)), relu)
    return y, mean, invstd


def batch_norm_backward(gy, x, weight, mean, invstd, *, training=True, needs=NEEDS,
                        activation=None, y=None, residual=False, backend=None):
    """Gradients of batch_norm for the output gradient ``gy``: (gx, gweight, gbias), None
    for what ``needs`` leaves out. ``mean``/``invstd`` are those the forward returned;
    ``training`` must match the forward's.

    For a fused forward: ``activation="relu"`` needs the forward's output ``y`` (the ReLU's
    gradient is 0 where y <= 0); ``residual=True`` appends the residual's gradient:
    (gx, gweight, gbias, gresidual)."""
    relu = _activation(activation)
    if relu and y is None:
        raise ValueError("batch_norm_backward: activation='relu' needs y, the forward's output")
    if not relu and y is not None:
        raise ValueError("batch_norm_backward: y is used only with activation='relu'")
    gy, x = as_array(gy, "gy"), as_array(x, "x")
    y = None if y is None else as_array(y, "y")
    weight = None if weight is None else as_array(weight, "weight")
    mean, invstd = as_array(mean, "mean"), as_array(invstd, "invstd")
    needs = tuple(needs)
    bad = [n for n in needs if n not in NEEDS]
    if bad:
        raise ValueError(f"needs may hold only {NEEDS}, got {needs!r}")
    if x.ndim < 2:
        raise ValueError(f"batch_norm_backward: x must be (N, C, ...), got shape {tuple(x.shape)}")
    check_shape(gy, x.shape, "gy", " (the shape of x)")
    if y is not None:
        check_shape(y, x.shape, "y", " (the shape of x)")
    dtype = float_dtype(gy=gy, x=x, weight=weight, mean=mean, invstd=invstd, y=y)
    device = same_device(gy=gy, x=x, weight=weight, mean=mean, invstd=invstd, y=y)
    channels = x.shape[1]
    for name, a in (("weight", weight), ("mean", mean), ("invstd", invstd)):
        if a is not None:
            check_shape(a, (channels,), name, f" (x has {channels} channels)")
    xp = array_module(x)
    gx = xp.empty(x.shape, dtype) if "x" in needs else None
    gw = xp.empty(channels, dtype) if "w" in needs else None
    gb = xp.empty(channels, dtype) if "b" in needs else None
    gr = xp.empty(x.shape, dtype) if residual else None
    result = (gx, gw, gb, gr) if residual else (gx, gw, gb)
    if x.size == 0:
        for a in (gw, gb):
            if a is not None:
                a[...] = 0
        return result
    _, kernels = backends.select("norm", device, backend)
    kernels.batch_norm_backward(_as_3d(contiguous(gy)), _samples_3d(x),
                                contiguous(weight), contiguous(mean), contiguous(invstd),
                                None if gx is None else _as_3d(gx), gw, gb, bool(training),
                                None if y is None else _as_3d(contiguous(y)),
                                None if gr is None else _as_3d(gr))
    return result
