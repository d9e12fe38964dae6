"""Reference batch normalisation over (N, C, S) arrays (S = product of the spatial axes).

xp-generic. Statistics are per channel over axes 0 and 2; ``weight``/``bias`` may be None
(1 and 0); ``running_mean``/``running_var`` are updated in place in training (unbiased
variance, as torch) and used for normalising otherwise. The fused options: the forward
writes y = relu(bn(x) + residual) (``residual`` may be None, the ReLU only with ``relu``);
the backward masks gy where the forward's output ``y`` (given when it applied a ReLU) is
<= 0 and writes that masked gradient, the residual's, into ``gresidual`` when given.
"""

from pyfast._arrays import array_module


def batch_norm(x, weight, bias, running_mean, running_var, y, mean, invstd, training,
               momentum, eps, residual=None, relu=False):
    xp = array_module(x)
    if training:
        count = x.shape[0] * x.shape[2]
        mu = x.mean(axis=(0, 2))
        var = ((x - mu[:, None]) ** 2).mean(axis=(0, 2))
        mean[...] = mu
        invstd[...] = 1 / xp.sqrt(var + eps)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mu
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * var * (count / (count - 1))
    else:
        mean[...] = running_mean
        invstd[...] = 1 / xp.sqrt(running_var + eps)
    scale = invstd if weight is None else invstd * weight
    out = (x - mean[:, None]) * scale[:, None]
    if bias is not None:
        out += bias[:, None]
    if residual is not None:
        out += residual
    if relu:
        out = xp.where(out < 0, out.dtype.type(0), out)  # NaN stays NaN
    y[...] = out


def batch_norm_backward(gy, x, weight, mean, invstd, gx, gweight, gbias, training, y=None,
                        gresidual=None):
    if y is not None:  # the forward applied a ReLU: its gradient is 0 where y <= 0
        gy = array_module(gy).where(y <= 0, gy.dtype.type(0), gy)
    if gresidual is not None:
        gresidual[...] = gy
    xhat = (x - mean[:, None]) * invstd[:, None]
    sum_gy = gy.sum(axis=(0, 2))
    sum_gy_xhat = (gy * xhat).sum(axis=(0, 2))
    if gweight is not None:
        gweight[...] = sum_gy_xhat
    if gbias is not None:
        gbias[...] = sum_gy
    if gx is not None:
        scale = invstd if weight is None else invstd * weight
        if training:
            count = x.shape[0] * x.shape[2]
            gx[...] = scale[:, None] * (gy - (sum_gy / count)[:, None]
                                        - xhat * (sum_gy_xhat / count)[:, None])
        else:
            gx[...] = gy * scale[:, None]
