"""pyfast's kernels as JAX functions: ``import pyfast.jax as pfj`` (this imports jax;
``import pyfast`` alone never does).

Each function takes and returns jax arrays, is differentiable (``jax.custom_vjp``, the
backward written with pyfast's own kernels) and works under ``jax.jit`` and ``jax.vmap``
(sequentially). The kernels run as host callbacks (``jax.pure_callback``): XLA hands the
callback its operands as NumPy views of its CPU buffers, pf.ops computes into fresh NumPy
arrays, and XLA copies those into its result buffers. Shapes and dtypes are checked when
the function is traced; values (labels out of range) when the kernel runs.

The cross-entropies compute their gradient with the loss (one fused pass) and keep it for
the backward pass. linear_cross_entropy with reduction="none" gets a cotangent per row,
which the fused kernel (gradient of the plain sum) cannot take, so its backward redoes the
blocks with pf.ops.matmul and softmax_cross_entropy, still never holding the whole logits.

The OpenMP kernels use pf.get_num_threads() threads; XLA's own CPU threads wait while a
callback runs (benchmarks/bench_jax.py measures both inside jitted programs). Why host
callbacks and not an XLA FFI custom call: the callbacks need no build against jaxlib's
headers; their cost is a copy of every result into XLA's buffer and ~0.25 ms per call.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import pyfast as pf
from pyfast.ops import conv as _conv
from pyfast.ops import linear_xent as _lx

__all__ = ["matmul", "conv2d", "softmax_cross_entropy", "linear_cross_entropy"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _host(fn, shapes, *args):
    return jax.pure_callback(fn, shapes, *args, vmap_method="sequential")


def _float(name, x):
    if np.dtype(x.dtype) not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype} of shape {x.shape}")
    return np.dtype(x.dtype)


def _same_float(**arrays):
    dtypes = {name: _float(name, x) for name, x in arrays.items() if x is not None}
    if len(set(dtypes.values())) > 1:
        raise TypeError("all float operands must share one dtype, got "
                        + ", ".join(f"{k} {v}" for k, v in dtypes.items()))
    return next(iter(dtypes.values()))


def _labels(labels, want_shape):
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be an integer array, got {labels.dtype}")
    if tuple(labels.shape) != tuple(want_shape):
        raise ValueError(f"labels must have shape {tuple(want_shape)}, got {tuple(labels.shape)}")
    return labels


# ---------------------------------------------------------------------------- matmul

@functools.lru_cache(maxsize=None)
def _matmul_op(trans_a, trans_b, activation, has_bias):
    def host(a, b, *bias):
        return pf.ops.matmul(np.asarray(a), np.asarray(b), trans_a=trans_a, trans_b=trans_b,
                             bias=np.asarray(bias[0]) if has_bias else None,
                             activation=activation)

    def primal(a, b, *bias):
        m = a.shape[1] if trans_a else a.shape[0]
        n = b.shape[0] if trans_b else b.shape[1]
        return _host(host, jax.ShapeDtypeStruct((m, n), a.dtype), a, b, *bias)

    op = jax.custom_vjp(primal)

    def fwd(a, b, *bias):
        out = primal(a, b, *bias)
        return out, (a, b, out)

    def bwd(res, g):
        a, b, out = res
        if activation == "relu":
            g = jnp.where(out > 0, g, jnp.zeros_like(g))
        plain = _plain_matmul
        # out = A @ B with A = a.T if trans_a else a, B likewise
        da = plain(g, b, False, not trans_b) if not trans_a else plain(b, g, trans_b, True)
        db = plain(a, g, not trans_a, False) if not trans_b else plain(g, a, True, trans_a)
        return (da, db) + ((g.sum(axis=0),) if has_bias else ())

    op.defvjp(fwd, bwd)
    return op


def _plain_matmul(a, b, trans_a, trans_b):
    return _matmul_op(trans_a, trans_b, None, False)(a, b)


def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, activation=None):
    """relu?(op(a) @ op(b) + bias) as pf.ops.matmul, on jax arrays, differentiable."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    bias = None if bias is None else jnp.asarray(bias)
    _same_float(a=a, b=b, bias=bias)
    if activation not in (None, "relu"):
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul takes 2-D a and b, got shapes {a.shape} and {b.shape}")
    k = a.shape[0] if trans_a else a.shape[1]
    k2 = b.shape[1] if trans_b else b.shape[0]
    if k != k2:
        raise ValueError(f"matmul: inner dimensions differ: {k} vs {k2} (a {a.shape}, "
                         f"b {b.shape}, trans_a={trans_a}, trans_b={trans_b})")
    n = b.shape[0] if trans_b else b.shape[1]
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"bias must have shape ({n},), got {bias.shape}")
    op = _matmul_op(bool(trans_a), bool(trans_b), activation, bias is not None)
    return op(a, b, bias) if bias is not None else op(a, b)


# ---------------------------------------------------------------------------- conv2d

@functools.lru_cache(maxsize=None)
def _conv_op(stride, padding, dilation, groups, has_bias):
    def host(x, w, *bias):
        return pf.ops.conv2d(np.asarray(x), np.asarray(w),
                             np.asarray(bias[0]) if has_bias else None,
                             stride, padding, dilation, groups)

    def host_backward(gy, x, w):
        needs = ("x", "w", "b") if has_bias else ("x", "w")
        gx, gw, gb = pf.ops.conv2d_backward(np.asarray(gy), np.asarray(x), np.asarray(w),
                                            stride, padding, dilation, groups, needs=needs)
        return (gx, gw, gb) if has_bias else (gx, gw)

    def primal(x, w, *bias):
        shape = _conv.conv_output_shape(x.shape, w.shape, stride, padding, dilation)
        return _host(host, jax.ShapeDtypeStruct(shape, x.dtype), x, w, *bias)

    op = jax.custom_vjp(primal)

    def fwd(x, w, *bias):
        return primal(x, w, *bias), (x, w, bias)

    def bwd(res, gy):
        x, w, bias = res
        shapes = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(w.shape, w.dtype))
        if has_bias:
            shapes += (jax.ShapeDtypeStruct(bias[0].shape, x.dtype),)
        return tuple(_host(host_backward, shapes, gy, x, w))

    op.defvjp(fwd, bwd)
    return op


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """pf.ops.conv2d (NCHW input, OIHW weight, torch semantics) on jax arrays,
    differentiable in x, w and bias."""
    x, w = jnp.asarray(x), jnp.asarray(w)
    bias = None if bias is None else jnp.asarray(bias)
    _same_float(x=x, w=w, bias=bias)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d takes x (N, C, H, W) and w (K, C/groups, kh, kw), got shapes "
                         f"{x.shape} and {w.shape}")
    s, p, d = _conv.conv_params(stride, padding, dilation)
    _conv.check_groups(groups, x.shape[1], w.shape[0], w, "conv2d")
    if w.shape[1] * groups != x.shape[1]:
        raise ValueError(f"conv2d: w has shape {w.shape}, so it expects {w.shape[1] * groups} "
                         f"input channels with groups={groups}, but x has shape {x.shape}")
    if bias is not None and tuple(bias.shape) != (w.shape[0],):
        raise ValueError(f"bias must have shape ({w.shape[0]},), got {bias.shape}")
    op = _conv_op(s, p, d, int(groups), bias is not None)
    return op(x, w, bias) if bias is not None else op(x, w)


# ---------------------------------------------------------------------------- cross-entropy

def _check_options(ignore_index, label_smoothing, reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return int(ignore_index), float(label_smoothing), reduction


@functools.lru_cache(maxsize=None)
def _xent_op(ignore_index, smoothing, reduction):
    def host(logits, labels):
        loss, grad = pf.ops.softmax_cross_entropy(
            np.asarray(logits), np.asarray(labels), ignore_index=ignore_index,
            label_smoothing=smoothing, reduction=reduction)
        return np.asarray(loss), grad

    def both(logits, labels):
        loss_shape = () if reduction != "none" or logits.ndim == 1 else labels.shape
        shapes = (jax.ShapeDtypeStruct(loss_shape, logits.dtype),
                  jax.ShapeDtypeStruct(logits.shape, logits.dtype))
        return _host(host, shapes, logits, labels)

    op = jax.custom_vjp(lambda logits, labels: both(logits, labels)[0])

    def fwd(logits, labels):
        loss, grad = both(logits, labels)
        return loss, grad

    def bwd(grad, g):
        if jnp.ndim(g) and grad.ndim >= 2:
            g = jnp.expand_dims(g, 1)  # a cotangent per position; the class axis is 1
        return g * grad, None

    op.defvjp(fwd, bwd)
    return op


def softmax_cross_entropy(logits, labels, *, ignore_index=-100, label_smoothing=0.0,
                          reduction="mean"):
    """torch.nn.functional.cross_entropy(logits, labels) on jax arrays (logits (N, C) or
    (N, C, d1, ...), class axis 1, or (C,)); returns the loss, differentiable in logits."""
    logits = jnp.asarray(logits)
    _float("logits", logits)
    options = _check_options(ignore_index, label_smoothing, reduction)
    if logits.ndim == 0 or (logits.ndim >= 2 and logits.shape[1] == 0):
        raise ValueError(f"logits must be (N, C, ...) or (C,) with C >= 1, got {logits.shape}")
    want = () if logits.ndim == 1 else (logits.shape[0],) + tuple(logits.shape[2:])
    return _xent_op(*options)(logits, _labels(labels, want))


@functools.lru_cache(maxsize=None)
def _linear_xent_op(ignore_index, smoothing, reduction, has_bias):
    def host(h, w, labels, *bias):
        loss, dh, dw, db = pf.ops.linear_cross_entropy(
            np.asarray(h), np.asarray(w), np.asarray(labels),
            np.asarray(bias[0]) if has_bias else None, ignore_index=ignore_index,
            label_smoothing=smoothing, reduction=reduction)
        return (np.asarray(loss), dh, dw) + ((db,) if has_bias else ())

    def host_rows(g, h, w, labels, *bias):
        """Gradients of sum_i g_i loss_i, a block of rows at a time."""
        g, h, w, labels = (np.asarray(a) for a in (g, h, w, labels))
        b = np.asarray(bias[0]) if has_bias else None
        n, v = h.shape[0], w.shape[0]
        dh = np.empty_like(h)
        dw = np.zeros_like(w)
        db = np.zeros(v, h.dtype)
        rows = _lx.block_rows(n, v, h.dtype.itemsize)
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            z = pf.ops.matmul(h[r0:r1], w, trans_b=True, bias=b)
            _, dz = pf.ops.softmax_cross_entropy(z, labels[r0:r1], ignore_index=ignore_index,
                                                 label_smoothing=smoothing, reduction="none",
                                                 inplace=True)
            dz *= g[r0:r1, None]
            pf.ops.matmul(dz, w, out=dh[r0:r1])
            dw += pf.ops.matmul(dz, h[r0:r1], trans_a=True)
            db += dz.sum(axis=0)
        return (dh, dw) + ((db,) if has_bias else ())

    def grad_shapes(h, w):
        shapes = (jax.ShapeDtypeStruct(h.shape, h.dtype), jax.ShapeDtypeStruct(w.shape, w.dtype))
        return shapes + ((jax.ShapeDtypeStruct((w.shape[0],), h.dtype),) if has_bias else ())

    def all_of(h, w, labels, *bias):
        loss_shape = (h.shape[0],) if reduction == "none" else ()
        shapes = (jax.ShapeDtypeStruct(loss_shape, h.dtype),) + grad_shapes(h, w)
        return _host(host, shapes, h, w, labels, *bias)

    op = jax.custom_vjp(lambda h, w, labels, *bias: all_of(h, w, labels, *bias)[0])

    def fwd(h, w, labels, *bias):
        out = all_of(h, w, labels, *bias)
        if reduction == "none":  # the backward needs the inputs, not the sum's gradients
            return out[0], (h, w, labels, bias)
        return out[0], tuple(out[1:])

    def bwd(res, g):
        if reduction == "none":
            h, w, labels, bias = res
            grads = tuple(_host(host_rows, grad_shapes(h, w), g, h, w, labels, *bias))
        else:
            grads = tuple(g * x for x in res)
        return grads[:2] + (None,) + grads[2:]

    op.defvjp(fwd, bwd)
    return op


def linear_cross_entropy(h, w, labels, bias=None, *, ignore_index=-100, label_smoothing=0.0,
                         reduction="mean"):
    """cross_entropy(h @ w.T + bias, labels) with the fused pf.ops.linear_cross_entropy
    (the (N, V) logits never whole in memory); differentiable in h, w and bias."""
    h, w = jnp.asarray(h), jnp.asarray(w)
    bias = None if bias is None else jnp.asarray(bias)
    _same_float(h=h, w=w, bias=bias)
    options = _check_options(ignore_index, label_smoothing, reduction)
    if h.ndim != 2 or w.ndim != 2 or w.shape[1] != h.shape[1] or w.shape[0] == 0:
        raise ValueError(f"h must be (N, D) and w (V, D) with V >= 1, got shapes {h.shape} "
                         f"and {w.shape}")
    if bias is not None and tuple(bias.shape) != (w.shape[0],):
        raise ValueError(f"bias must have shape ({w.shape[0]},), got {bias.shape}")
    labels = _labels(labels, (h.shape[0],))
    op = _linear_xent_op(*options, bias is not None)
    return op(h, w, labels, bias) if bias is not None else op(h, w, labels)
