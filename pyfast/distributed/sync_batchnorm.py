"""Synchronised batch normalisation: training-mode batch norm over the global batch.

Forward all-reduces each channel's count, sum and sum of squares (float64) and normalises
with the global mean and biased variance; the running statistics move with the global mean
and unbiased variance, identically on every rank. Backward all-reduces the channel sums of
dy and dy * xhat, so that

    dx = weight * invstd * (dy - sum(dy) / n - xhat * sum(dy * xhat) / n)     (global sums)

which is the rank's share of the global batch's gradient times the world size; the gradient
all-reduce of DataParallel (a mean over ranks) then gives exactly the single-process
gradients of the global batch (torch's SyncBatchNorm does the same). weight and bias get
their local sums, which DataParallel averages like any gradient.

``enable_sync_batchnorm`` reroutes the ``forward`` of a module's batch-norm layers (an
instance attribute) instead of swapping their classes, so the module's structure and state
dict do not change. Eval mode uses the running statistics, as always, with no communication.
"""

from __future__ import annotations

import numpy as np

from pyfast import ops
from pyfast._arrays import array_module
from pyfast.nn.batchnorm import BatchNormBase
from pyfast.tensor import Function

__all__ = ["enable_sync_batchnorm"]


def enable_sync_batchnorm(module, group):
    for m in module.modules():
        if isinstance(m, BatchNormBase):
            object.__setattr__(m, "forward", _SyncForward(m, group))


class _SyncForward:
    def __init__(self, bn, group):
        self.bn, self.group = bn, group

    def __call__(self, input, *, activation=None, residual=None):
        bn = self.bn
        if not bn.training:
            return type(bn).forward(bn, input, activation=activation, residual=residual)
        bn._check_input(input)
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.track_running_stats:
            bn.num_batches_tracked.data += 1
            if bn.momentum is None:
                factor = 1.0 / float(bn.num_batches_tracked.data)
        rm = None if bn.running_mean is None else bn.running_mean.data
        rv = None if bn.running_var is None else bn.running_var.data
        out = _SyncBatchNorm.apply(input, bn.weight, bn.bias, running_mean=rm,
                                   running_var=rv, momentum=factor, eps=bn.eps,
                                   group=self.group)
        # the fused options of BatchNorm.forward, unfused here (the models pass them)
        if residual is not None:
            out = out + residual
        return out.relu() if activation == "relu" else out


def _channel_sums(a3, b3=None):
    """Per-channel float64 sums over axes 0 and 2 of a (N, C, L) array (of a3 * b3)."""
    prod = a3 if b3 is None else a3 * b3
    return prod.sum(axis=(0, 2), dtype=np.float64)


class _SyncBatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, group):
        xp = array_module(x)
        n_local, c = x.shape[0], x.shape[1]
        x3 = x.reshape(n_local, c, -1)
        stats = xp.empty(2 * c + 1, np.float64)
        stats[:c] = _channel_sums(x3)
        stats[c:2 * c] = _channel_sums(x3, x3)
        stats[2 * c] = x3.shape[0] * x3.shape[2]
        group.all_reduce(stats, "sum")
        count = float(stats[2 * c])
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got "
                             f"{count:.0f} over all ranks (input size {tuple(x.shape)})")
        mean = stats[:c] / count
        var = xp.maximum(stats[c:2 * c] / count - mean * mean, 0.0)
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += (momentum * mean).astype(running_mean.dtype)
            running_var *= 1.0 - momentum
            running_var += (momentum * var * (count / (count - 1))).astype(running_var.dtype)
        mean_x, var_x = mean.astype(x.dtype), var.astype(x.dtype)
        y, _, invstd = ops.batch_norm(x, weight, bias, mean_x, var_x, training=False, eps=eps)
        ctx.x, ctx.weight, ctx.mean, ctx.invstd = x, weight, mean_x, invstd
        ctx.count, ctx.group = count, group
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight, mean, invstd = ctx.x, ctx.weight, ctx.mean, ctx.invstd
        xp = array_module(gy)
        n, c = x.shape[0], x.shape[1]
        per_channel = (1, c, 1)
        gy3 = gy.reshape(n, c, -1)
        xhat3 = (x.reshape(n, c, -1) - mean.reshape(per_channel)) * invstd.reshape(per_channel)
        sums = xp.empty(2 * c, np.float64)
        sums[:c] = _channel_sums(gy3)
        sums[c:] = _channel_sums(gy3, xhat3)
        gbias = sums[:c].astype(gy.dtype)
        gweight = sums[c:].astype(gy.dtype)
        gx = None
        if ctx.needs_input_grad[0]:
            ctx.group.all_reduce(sums, "sum")
            mean_dy = (sums[:c] / ctx.count).astype(gy.dtype).reshape(per_channel)
            mean_dy_xhat = (sums[c:] / ctx.count).astype(gy.dtype).reshape(per_channel)
            scale = invstd if weight is None else weight * invstd
            gx = ((gy3 - mean_dy - xhat3 * mean_dy_xhat) * scale.reshape(per_channel)) \
                .reshape(x.shape)
        return gx, gweight, gbias
