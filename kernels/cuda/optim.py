"""Numba CUDA optimizer steps: SGD (momentum, dampening, Nesterov), RMSprop (centered,
momentum) and Adam/AdamW (AMSGrad), torch.optim's rules in torch's order of operations,
updating parameters and state in place in one grid-stride pass over memory.

The hyper-parameters arrive as a small array of the parameters' dtype, so float32 steps
compute in float32 as torch's do. A list of tensors is one launch per tensor, all on
CuPy's current stream with no synchronisation between them; numba-cuda has no pointer
arithmetic in kernels to walk a table of tensors as csrc/cuda/optim.cu does, and pf.optim
steps one flat buffer per dtype anyway (one launch). Kernels take cupy arrays (numpy
arrays under NUMBA_ENABLE_CUDASIM=1, staged through device copies).
"""

import math

import numpy as np
from numba import cuda

from .. import _optim_scalars as scalars

THREADS = 256
MAX_BLOCKS = 1 << 16


@cuda.jit(cache=True)
def sgd_kernel(p, g, buf, k, decay, has_momentum, nesterov, first):
    lr, momentum, one_minus_dampening, weight_decay = k[0], k[1], k[2], k[3]
    i = cuda.grid(1)
    while i < p.size:
        gi = g[i] + weight_decay * p[i] if decay else g[i]
        if has_momentum:
            b = gi if first else buf[i] * momentum + one_minus_dampening * gi
            buf[i] = b
            gi = gi + momentum * b if nesterov else b
        p[i] = p[i] - lr * gi
        i += cuda.gridsize(1)


@cuda.jit(device=True, inline=True)
def _lerp(start, end, w, one_minus_w, from_start):
    """torch.lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w)."""
    return start + w * (end - start) if from_start else end - (end - start) * one_minus_w


@cuda.jit(cache=True)
def rmsprop_kernel(p, g, sq, buf, gavg, k, decay, has_momentum, centered, lerp_from_start):
    lr, alpha, one_minus_alpha, eps, weight_decay, momentum = k[0], k[1], k[2], k[3], k[4], k[5]
    i = cuda.grid(1)
    while i < p.size:
        gi = g[i] + weight_decay * p[i] if decay else g[i]
        s = sq[i] * alpha + one_minus_alpha * gi * gi
        sq[i] = s
        if centered:
            ga = _lerp(gavg[i], gi, one_minus_alpha, alpha, lerp_from_start)
            gavg[i] = ga
            avg = math.sqrt(s - ga * ga) + eps
        else:
            avg = math.sqrt(s) + eps
        if has_momentum:
            b = buf[i] * momentum + gi / avg
            buf[i] = b
            p[i] = p[i] - lr * b
        else:
            p[i] = p[i] - lr * (gi / avg)
        i += cuda.gridsize(1)


@cuda.jit(cache=True)
def adam_kernel(p, g, m, v, vmax, k, decay, decoupled, amsgrad, lerp_from_start):
    beta1, one_minus_beta1, beta2, one_minus_beta2 = k[0], k[1], k[2], k[3]
    eps, weight_decay, decay_factor, step_size, bias_correction2_sqrt = k[4], k[5], k[6], k[7], k[8]
    i = cuda.grid(1)
    while i < p.size:
        pi, gi = p[i], g[i]
        if decay:
            if decoupled:
                pi = pi * decay_factor
            else:
                gi = gi + weight_decay * pi
        mi = _lerp(m[i], gi, one_minus_beta1, beta1, lerp_from_start)
        m[i] = mi
        vi = v[i] * beta2 + one_minus_beta2 * gi * gi
        v[i] = vi
        if amsgrad:
            vm = vmax[i]
            vi = vm if vm > vi else vi
            vmax[i] = vi
        p[i] = pi - step_size * (mi / (math.sqrt(vi) / bias_correction2_sqrt + eps))
        i += cuda.gridsize(1)


def _launch_each(kernel, params, grads, states, k, flags):
    """One launch per tensor: param, grad and the states that are not None (written back)."""
    host = isinstance(params[0], np.ndarray)
    if host:
        k_dev = cuda.to_device(np.asarray(k, params[0].dtype))
    else:
        import cupy
        stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
        k_dev = cuda.as_cuda_array(cupy.asarray(k, params[0].dtype), sync=False)
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.size == 0:
            continue
        p, g = p.reshape(-1), g.reshape(-1)
        bufs = [p[:1] if s is None else s[i].reshape(-1) for s in states]  # placeholders unused
        grid = max(1, min(MAX_BLOCKS, -(-p.size // THREADS)))
        if host:
            written = [cuda.to_device(p)] + [cuda.to_device(b) for b in bufs]
            kernel[grid, THREADS](written[0], cuda.to_device(g), *written[1:], k_dev, *flags)
            for d, (a, state) in zip(written, [(p, True)] + [(b, s is not None)
                                                              for b, s in zip(bufs, states)]):
                if state:
                    d.copy_to_host(a)
        else:
            view = lambda a: cuda.as_cuda_array(a, sync=False)  # noqa: E731
            kernel[grid, THREADS, stream](view(p), view(g), *[view(b) for b in bufs], k_dev,
                                          *flags)


def sgd_step(params, grads, momentum_bufs, lr, momentum, dampening, nesterov, weight_decay,
             first):
    """torch.optim.SGD's step in place over lists of arrays."""
    _launch_each(sgd_kernel, params, grads, [momentum_bufs if momentum else None],
                 *scalars.sgd(lr, momentum, dampening, nesterov, weight_decay, first))


def rmsprop_step(params, grads, square_avgs, momentum_bufs, grad_avgs, lr, alpha, eps,
                 weight_decay, momentum, centered):
    """torch.optim.RMSprop's step in place over lists of arrays."""
    _launch_each(rmsprop_kernel, params, grads,
                 [square_avgs, momentum_bufs if momentum > 0 else None,
                  grad_avgs if centered else None],
                 *scalars.rmsprop(lr, alpha, eps, weight_decay, momentum, centered))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2,
              eps, weight_decay, decoupled, amsgrad):
    """torch.optim.Adam's (decoupled: AdamW's) step in place over lists of arrays."""
    _launch_each(adam_kernel, params, grads,
                 [exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None],
                 *scalars.adam(step, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad))
