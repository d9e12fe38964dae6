"""softmax_xent family: softmax, log-softmax and the fused losses that return their
gradient with the loss (softmax cross-entropy, binary cross-entropy with logits, mean
squared error), with torch.nn.functional semantics.

The losses are computed forward and backward in one pass over the inputs: the caller gets
``(loss, d loss / d input)`` and never needs the probabilities. Reductions are split
between this module and the kernels: a kernel writes per-row (or per-element) losses, or
returns their sum, and scales its gradient by ``grad_scale``; the mean's denominator
(rows, or the summed class weights of the rows not ignored) depends only on the labels, so
it is found here first, with no pass over the logits.

Backend kernels (arrays C-contiguous, validated):
    softmax(x, out, log)          x, out (A, C, B): softmax over axis 1
    softmax_xent(logits, labels, weight, ignore_index, smoothing, grad_scale, dlogits, losses)
        logits, dlogits (N, C, S) (dlogits may be logits itself); labels (N, S) int64,
        all in [0, C) or equal to ignore_index; weight (C,) or None; losses (N, S)
    bce_with_logits(x, y, weight, pos_weight, grad_scale, grad, losses) -> sum or None
        x, y, grad flat (M,); weight and pos_weight None or flat (P,), P dividing M, element
        i taking [i % P]; losses flat (M,) to write, or None to return the sum instead
    mse(x, y, grad_scale, grad, losses) -> sum or None     same conventions
"""

import math

import numpy as np

from pyfast import backends
from pyfast._arrays import (Output, array_module, as_array, check_shape, contiguous,
                            describe, float_dtype, same_device)

REDUCTIONS = ("mean", "sum", "none")


def _kernels(device, backend):
    return backends.select("softmax_xent", device, backend)[1]


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _softmax(x, axis, log, backend):
    x = as_array(x, "x")
    float_dtype(x=x)
    device = same_device(x=x)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) \
            or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis!r} is out of range for x of shape {tuple(x.shape)}")
    axis = int(axis) % x.ndim
    x = contiguous(x)
    out = array_module(x).empty_like(x)
    if x.size:
        shape3 = (math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:]))
        _kernels(device, backend).softmax(x.reshape(shape3), out.reshape(shape3), log)
    return out


def softmax(x, axis=-1, *, backend=None):
    """exp(x) / sum(exp(x)) along ``axis``, computed with the row maximum subtracted."""
    return _softmax(x, axis, False, backend)


def log_softmax(x, axis=-1, *, backend=None):
    """x - logsumexp(x) along ``axis``."""
    return _softmax(x, axis, True, backend)


def finite_in(value, name, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _labels(labels, logits, ignore_index):
    """labels as a C-contiguous int64 array, checked against the logits' classes."""
    labels = as_array(labels, "labels")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got {describe(labels)}")
    n, c = logits.shape[:2]
    want = (n,) + tuple(logits.shape[2:])
    if tuple(labels.shape) != want:
        raise ValueError(f"labels must have shape {want} for logits of shape "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
    xp = array_module(labels)
    labels = xp.ascontiguousarray(labels, dtype=np.int64)
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= c))
    if bool(bad.any()):
        where = tuple(int(i) for i in xp.argwhere(bad)[0])
        raise ValueError(f"labels must be in [0, {c}) or ignore_index={ignore_index}; "
                         f"labels{list(where)} is {int(labels[where])} (logits have shape "
                         f"{tuple(logits.shape)})")
    return labels


def softmax_cross_entropy(logits, labels, *, weight=None, ignore_index=-100,
                          label_smoothing=0.0, reduction="mean", inplace=False, out=None,
                          backend=None):
    """Cross-entropy of softmax(logits) against integer ``labels`` and its gradient, in one
    pass: returns ``(loss, dlogits)`` with the loss as torch.nn.functional.cross_entropy.

    logits (N, C) or (N, C, d1, ...) (class axis 1, as torch) or (C,); labels of the shape
    without C, any integer dtype. ``weight`` (C,) rescales each class; ``label_smoothing``
    mixes the one-hot target with the uniform distribution. For "mean" the loss is divided
    by the summed weights of the rows not ignored (a mean over no rows is NaN, with zero
    gradient); for "none" the per-row losses come back with dlogits for their sum.
    ``inplace=True`` writes dlogits over ``logits`` (a C-contiguous array) to save memory;
    ``out=(loss, dlogits)`` (either may be None) gives arrays to write the results into."""
    logits = as_array(logits, "logits")
    weight = None if weight is None else as_array(weight, "weight")
    dtype = float_dtype(logits=logits, weight=weight)
    device = same_device(logits=logits, weight=weight)
    check_reduction(reduction)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    smoothing = finite_in(label_smoothing, "label_smoothing", 0.0, 1.0)
    unbatched = logits.ndim == 1
    if unbatched:
        if isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
            labels = array_module(logits).asarray(labels)
        logits, labels = logits[None], as_array(labels, "labels").reshape(1)
    if logits.ndim < 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must be (N, C) or (N, C, d1, ...) with C >= 1, got shape "
                         f"{tuple(logits.shape)}")
    n, c = logits.shape[:2]
    if out is None:
        out = (None, None)
    elif not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"out must be a pair (loss, dlogits) of arrays or None, got {out!r}")
    if inplace and out[1] is not None:
        raise ValueError("inplace=True writes dlogits over logits; out[1] must be None")
    if unbatched and out[1] is not None:
        out = (out[0], as_array(out[1], "out[1]")[None])
    if weight is not None:
        check_shape(weight, (c,), "weight", " (one weight per class)")
        weight = contiguous(weight)
    labels = _labels(labels, logits, int(ignore_index))
    xp = array_module(logits)
    if inplace:
        if not logits.flags.c_contiguous or (isinstance(logits, np.ndarray)
                                             and not logits.flags.writeable):
            raise ValueError("inplace=True needs C-contiguous, writeable logits")
        dlogits = logits
        grad_dest = None
    else:
        logits = contiguous(logits)
        grad_dest = Output(out[1], logits.shape, dtype, logits,
                           "out[1]", inputs=(logits, weight))
        dlogits = grad_dest.buffer
    rows = labels.size
    s = rows // n if n else 0
    losses = xp.empty((n, s), dtype)

    valid = labels != ignore_index
    if reduction == "mean":
        if weight is None:
            denom = float(valid.sum())
        else:
            denom = float(weight[labels[valid]].sum(dtype=np.float64))
        grad_scale = 1.0 / denom if denom != 0 else 0.0
    else:
        grad_scale = 1.0
    if rows:
        _kernels(device, backend).softmax_xent(
            logits.reshape(n, c, s), labels.reshape(n, s), weight, int(ignore_index),
            smoothing, grad_scale, dlogits.reshape(n, c, s), losses)
    if grad_dest is not None:
        dlogits = grad_dest.result()
    if unbatched:
        dlogits = dlogits[0]
    if reduction == "none":
        loss = losses.reshape(labels.shape[1:] if unbatched else labels.shape)
    else:
        total = losses.sum(dtype=np.float64)
        if reduction == "mean":
            total = total / denom if denom != 0 else xp.asarray(np.nan)
        loss = xp.asarray(total, dtype=dtype)
    if out[0] is not None:
        loss_dest = Output(out[0], loss.shape, dtype, logits, "out[0]")
        loss_dest.buffer[...] = loss
        loss = loss_dest.result()
    return loss, dlogits


def _suffix_operand(arg, name, x, dtype):
    """``arg`` broadcast against x as a flat array whose element i % P belongs to x's flat
    element i: its own data when its shape (leading 1s dropped) is a suffix of x's, else
    the full broadcast."""
    arg = as_array(arg, name)
    float_dtype(**{name: arg, "logits": x})
    same_device(**{name: arg, "logits": x})
    try:
        np.broadcast_shapes(arg.shape, x.shape)
    except ValueError:
        raise ValueError(f"{name} of shape {tuple(arg.shape)} does not broadcast to shape "
                         f"{tuple(x.shape)}") from None
    if np.broadcast_shapes(arg.shape, x.shape) != tuple(x.shape):
        raise ValueError(f"{name} of shape {tuple(arg.shape)} would broadcast the loss "
                         f"beyond shape {tuple(x.shape)}")
    core = tuple(arg.shape)
    while core and core[0] == 1:
        core = core[1:]
    if core == tuple(x.shape[len(x.shape) - len(core):]):
        return contiguous(arg.reshape(core)).reshape(-1) if core else arg.reshape(1)
    xp = array_module(x)
    return xp.ascontiguousarray(xp.broadcast_to(arg, x.shape)).reshape(-1)


def _pointwise_inputs(input_, target, names):
    x, y = as_array(input_, names[0]), as_array(target, names[1])
    dtype = float_dtype(**{names[0]: x, names[1]: y})
    device = same_device(**{names[0]: x, names[1]: y})
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"{names[1]} must have the shape of {names[0]}, {tuple(x.shape)}, "
                         f"got {tuple(y.shape)}")
    return contiguous(x), contiguous(y), dtype, device


def _reduce(kernel, x, reduction, dtype, args):
    """Run a pointwise loss kernel and reduce as torch does: mean over all elements."""
    xp = array_module(x)
    grad = xp.empty_like(x)
    m = x.size
    grad_scale = 1.0 / m if reduction == "mean" and m else 1.0
    if reduction == "none":
        losses = xp.empty_like(x)
        if m:
            kernel(*args, grad_scale, grad.reshape(-1), losses.reshape(-1))
        return losses, grad
    total = kernel(*args, grad_scale, grad.reshape(-1), None) if m else 0.0
    if reduction == "mean":
        total = total / m if m else float("nan")
    return xp.asarray(total, dtype=dtype), grad


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean", backend=None):
    """-[pos_weight * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))] * weight, as
    torch.nn.functional.binary_cross_entropy_with_logits, with its gradient: returns
    ``(loss, dlogits)``. ``weight`` and ``pos_weight`` broadcast against the logits."""
    x, y, dtype, device = _pointwise_inputs(logits, target, ("logits", "target"))
    check_reduction(reduction)
    w = None if weight is None else _suffix_operand(weight, "weight", x, dtype)
    pw = None if pos_weight is None else _suffix_operand(pos_weight, "pos_weight", x, dtype)
    kernel = _kernels(device, backend).bce_with_logits
    return _reduce(kernel, x, reduction, dtype, (x.reshape(-1), y.reshape(-1), w, pw))


def mse_loss(input, target, *, reduction="mean", backend=None):
    """(input - target)**2, reduced as torch.nn.functional.mse_loss, with its gradient:
    returns ``(loss, dinput)``."""
    x, y, dtype, device = _pointwise_inputs(input, target, ("input", "target"))
    check_reduction(reduction)
    kernel = _kernels(device, backend).mse
    return _reduce(kernel, x, reduction, dtype, (x.reshape(-1), y.reshape(-1)))
