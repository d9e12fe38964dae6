"""Reference softmax, softmax cross-entropy, BCE-with-logits and MSE (NumPy or CuPy): the
formulas written out whole, temporaries and all.

Cross-entropy of row i with label y, class weights w (ones when not given), W = sum(w),
smoothing e over C classes and log-probabilities l = z - logsumexp(z):
    loss_i = (1 - e) * w[y] * -l[y] + e / C * sum_c w[c] * -l[c]
    dloss_i/dz = (1 - e) * w[y] * (p - onehot(y)) + e / C * (W * p - w)
"""

import numpy as np

from pyfast._arrays import array_module


def softmax(x, out, log):
    xp = array_module(x)
    shifted = x - x.max(axis=1, keepdims=True)
    if log:
        out[...] = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    else:
        e = xp.exp(shifted)
        out[...] = e / e.sum(axis=1, keepdims=True)


def softmax_xent(logits, labels, weight, ignore_index, smoothing, grad_scale, dlogits, losses):
    xp = array_module(logits)
    n, c, s = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # (N, C, S)
    p = xp.exp(logp)
    valid = labels != ignore_index                                    # (N, S)
    safe = xp.where(valid, labels, 0)
    w = xp.ones(c, logits.dtype) if weight is None else weight
    wy = w[safe] * valid                                              # (N, S), 0 if ignored
    logp_y = xp.take_along_axis(logp, safe[:, None, :], axis=1)[:, 0]
    smooth = -(logp * w[None, :, None]).sum(axis=1)                   # (N, S)
    loss = (1 - smoothing) * wy * -logp_y
    if smoothing:  # without smoothing a masked (-inf) class must not add 0 * inf
        loss = loss + smoothing / c * smooth
    losses[...] = xp.where(valid, loss, 0)  # ignored: 0 even for NaN logits, as torch
    onehot = xp.arange(c)[None, :, None] == safe[:, None, :]
    grad = (1 - smoothing) * wy[:, None] * (p - onehot)
    if smoothing:
        grad += smoothing / c * (w.sum() * p - w[None, :, None])
    # ignored positions get exactly zero gradient (torch's backward leaks NaN there from
    # 0 * NaN when their logits hold NaN or inf; an ignored position must not poison a step)
    dlogits[...] = xp.where(valid[:, None], grad * grad_scale, 0)


def _per_index(arg, m):
    """arg (P,) repeated to cover m elements (element i takes arg[i % P])."""
    if arg is None:
        return None
    return array_module(arg).tile(arg, m // arg.size)


def bce_with_logits(x, y, weight, pos_weight, grad_scale, grad, losses):
    xp = array_module(x)
    w, pw = _per_index(weight, x.size), _per_index(pos_weight, x.size)
    lw = 1.0 if pw is None else 1 + (pw - 1) * y
    softplus_neg = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)  # log(1 + exp(-x))
    loss = (1 - y) * x + lw * softplus_neg
    g = (1 - y) - lw / (1 + xp.exp(x))                               # sigmoid(-x) = 1/(1+e^x)
    if w is not None:
        loss, g = loss * w, g * w
    grad[...] = g * grad_scale
    if losses is None:
        return float(loss.sum(dtype=np.float64))
    losses[...] = loss
    return None


def mse(x, y, grad_scale, grad, losses):
    d = x - y
    grad[...] = 2 * d * grad_scale
    if losses is None:
        return float((d * d).sum(dtype=np.float64))
    losses[...] = d * d
    return None
