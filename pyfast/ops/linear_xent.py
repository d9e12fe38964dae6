"""linear_xent family: the classifier matmul and the softmax cross-entropy fused, so the
(N, V) logits never exist whole in memory.

``linear_cross_entropy(h, w, labels, bias)`` equals ``softmax_cross_entropy(h @ w.T + bias,
labels)`` and returns the gradients of the inputs instead of the logits'. The backends run
over blocks of rows: a block's logits (rows x V) go into a workspace, the cross-entropy
turns them into their gradient in place, and three products give dh for those rows and add
their share to dw (and db). Each block computes its logits once and uses them at once, so
this is the three GEMMs of the unfused pair with no recomputation; the workspace is
``WORKSPACE_FRACTION`` of the logits (or a block of ``MIN_BLOCK_ROWS`` rows, never more
than half the rows or ``MAX_WORKSPACE_BYTES``), chosen here and handed to the backend.

Backend kernel (arrays C-contiguous, validated):
    linear_xent(h, w, bias, labels, ignore_index, smoothing, grad_scale, losses, dh, dw, db,
                workspace)
        h (N, D), w (V, D), bias (V,) or None, labels (N,) int64 in [0, V) or ignore_index;
        losses (N,) per-row losses; dh (N, D), dw (V, D), db (V,) or None written with
        grad_scale * the gradient of the summed losses; workspace (R, V) scratch whose R
        is the block of rows.
"""

import numpy as np

from pyfast import backends
from pyfast._arrays import (Output, array_module, as_array, check_shape, contiguous, describe,
                            float_dtype, same_device)

from .softmax_xent import finite_in, check_reduction

WORKSPACE_FRACTION = 0.045
MIN_BLOCK_ROWS = 96
MAX_WORKSPACE_BYTES = 64 << 20


def block_rows(n, v, itemsize):
    """Rows of h per block: WORKSPACE_FRACTION of n, but at least MIN_BLOCK_ROWS (each
    block reads w twice and dw once whatever its size, so small blocks are slow) unless
    that is more than half the rows; at most MAX_WORKSPACE_BYTES of logits."""
    rows = max(int(n * WORKSPACE_FRACTION), min(MIN_BLOCK_ROWS, (n + 1) // 2))
    rows = min(rows, MAX_WORKSPACE_BYTES // max(1, v * itemsize))
    return max(1, min(n, rows))


def linear_cross_entropy(h, w, labels, bias=None, *, ignore_index=-100, label_smoothing=0.0,
                         reduction="mean", out=None, backend=None):
    """Cross-entropy of softmax(h @ w.T + bias) against ``labels`` with its gradients, in
    blocks of rows: returns ``(loss, dh, dw, db)`` (``db`` None without bias).

    h (N, D), w (V, D) (a linear layer's weight), bias (V,) or None, labels (N,) of any
    integer dtype in [0, V) or equal to ``ignore_index``. The loss, ``ignore_index``,
    ``label_smoothing`` and ``reduction`` are torch.nn.functional.cross_entropy's; the
    gradients are those of the returned loss (for "none": of the sum of the per-row
    losses). A mean over rows that are all ignored is NaN with zero gradients.
    ``out=(dh, dw, db)`` (entries may be None) gives arrays to write the gradients into."""
    h = as_array(h, "h")
    w = as_array(w, "w")
    bias = None if bias is None else as_array(bias, "bias")
    dtype = float_dtype(h=h, w=w, bias=bias)
    device = same_device(h=h, w=w, bias=bias)
    check_reduction(reduction)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    ignore_index = int(ignore_index)
    smoothing = finite_in(label_smoothing, "label_smoothing", 0.0, 1.0)
    if h.ndim != 2:
        raise ValueError(f"h must be 2-D (N, D), got shape {tuple(h.shape)}")
    if w.ndim != 2 or w.shape[1] != h.shape[1] or w.shape[0] == 0:
        raise ValueError(f"w must be (V, D) with V >= 1 and D = h.shape[1]; got h of shape "
                         f"{tuple(h.shape)} and w of shape {tuple(w.shape)}")
    n, d = h.shape
    v = w.shape[0]
    if bias is not None:
        check_shape(bias, (v,), "bias", " (one per row of w)")
        bias = contiguous(bias)
    labels = as_array(labels, "labels")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got {describe(labels)}")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},) for h of shape {tuple(h.shape)}, "
                         f"got {tuple(labels.shape)}")
    same_device(h=h, labels=labels)
    xp = array_module(h)
    labels = xp.ascontiguousarray(labels, dtype=np.int64)
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= v))
    if bool(bad.any()):
        i = int(xp.argwhere(bad)[0, 0])
        raise ValueError(f"labels must be in [0, {v}) or ignore_index={ignore_index}; "
                         f"labels[{i}] is {int(labels[i])} (w has shape {tuple(w.shape)})")
    h, w = contiguous(h), contiguous(w)

    valid = labels != ignore_index
    denom = float(valid.sum())
    grad_scale = 1.0 / denom if reduction == "mean" and denom else (
        0.0 if reduction == "mean" else 1.0)
    alloc = xp.empty if n else xp.zeros  # the kernel writes every element
    losses = alloc((n,), dtype)
    if out is None:
        out = (None, None, None)
    elif not isinstance(out, (tuple, list)) or len(out) != 3:
        raise TypeError(f"out must be a triple (dh, dw, db) of arrays or None, got {out!r}")
    dests = [None if shape is None else Output(o, shape, dtype, h, name, inputs=(h, w, bias))
             for o, shape, name in zip(out, ((n, d), (v, d), None if bias is None else (v,)),
                                       ("out[0]", "out[1]", "out[2]"))]
    dh, dw, db = (None if dest is None else dest.buffer for dest in dests)
    if not n:
        for g in (dh, dw, db):
            if g is not None:
                g[...] = 0
    if n:
        rows = block_rows(n, v, np.dtype(dtype).itemsize)
        workspace = xp.empty((rows, v), dtype)
        backends.select("linear_xent", device, backend)[1].linear_xent(
            h, w, bias, labels, ignore_index, smoothing, grad_scale, losses, dh, dw, db,
            workspace)
        del workspace
    dh, dw, db = (None if dest is None else dest.result() for dest in dests)
    if reduction == "none":
        return losses, dh, dw, db
    total = losses.sum(dtype=np.float64)
    if reduction == "mean":
        total = total / denom if denom else xp.asarray(np.nan)
    return xp.asarray(total, dtype=dtype), dh, dw, db
