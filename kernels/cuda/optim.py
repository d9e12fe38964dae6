"""Numba CUDA optimizer steps: SGD (momentum, dampening, Nesterov), RMSprop (centered,
momentum) and Adam/AdamW (AMSGrad), torch.optim's rules in torch's order of operations,
updating parameters and state in place in one grid-stride pass over memory.

The hyper-parameters arrive as a small array of the parameters' dtype, so float32 steps
compute in float32 as torch's do. A list of tensors is one launch per tensor, all on
CuPy's current stream with no synchronisation between them; numba-cuda has no pointer
arithmetic in kernels to walk a table of tensors as csrc/cuda/optim.cu does, and pf.optim
steps one flat buffer per dtype anyway (one launch). Kernels take cupy arrays (numpy
arrays under NUMBA_ENABLE_CUDASIM=1, staged through device copies). The per-element rules
are kernels/_optim_rules.py's, shared with the CPU kernels.
"""

import numpy as np
from numba import cuda

from .. import _optim_rules, _optim_scalars as scalars

THREADS = 256
MAX_BLOCKS = 1 << 16


sgd_update, rmsprop_update, adam_update = _optim_rules.compiled(
    cuda.jit(device=True, inline="always"))


def _keyed_on_rules(rules_hash):
    """The kernels, cached under the rules' source hash too, as kernels/cpu/optim.py's
    run_lists is (see there): they inline kernels/_optim_rules.py, which Numba's cache does
    not watch. Each takes the rule's switches as scalars and an unused state as a
    placeholder the rule does not touch."""

    @cuda.jit(cache=True)
    def sgd_kernel(p, g, buf, k_array, decay, has_momentum, nesterov, first):
        rules_hash  # noqa: B018 -- read, so that it is a closure cell and in the cache key
        k = (k_array[0], k_array[1], k_array[2], k_array[3])
        i = cuda.grid(1)
        while i < p.size:
            sgd_update(p, g, buf, buf, buf, i, k, (decay, has_momentum, nesterov, first))
            i += cuda.gridsize(1)

    @cuda.jit(cache=True)
    def rmsprop_kernel(p, g, sq, buf, gavg, k_array, decay, has_momentum, centered,
                       lerp_from_start):
        rules_hash  # noqa: B018
        k = (k_array[0], k_array[1], k_array[2], k_array[3], k_array[4], k_array[5])
        i = cuda.grid(1)
        while i < p.size:
            rmsprop_update(p, g, sq, buf, gavg, i, k,
                           (decay, has_momentum, centered, lerp_from_start))
            i += cuda.gridsize(1)

    @cuda.jit(cache=True)
    def adam_kernel(p, g, m, v, vmax, k_array, decay, decoupled, amsgrad, lerp_from_start):
        rules_hash  # noqa: B018
        k = (k_array[0], k_array[1], k_array[2], k_array[3], k_array[4], k_array[5],
             k_array[6], k_array[7], k_array[8])
        i = cuda.grid(1)
        while i < p.size:
            adam_update(p, g, m, v, vmax, i, k, (decay, decoupled, amsgrad, lerp_from_start))
            i += cuda.gridsize(1)

    return sgd_kernel, rmsprop_kernel, adam_kernel


sgd_kernel, rmsprop_kernel, adam_kernel = _keyed_on_rules(_optim_rules.SOURCE_HASH)


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
