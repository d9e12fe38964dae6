"""The per-element rules of the fused optimizer steps (torch.optim's SGD, RMSprop and
Adam/AdamW, in torch's order of operations), written once for the Numba CPU and CUDA
kernels, as csrc/common/optim_rules.h is for the native ones.

Each rule updates element ``i`` of the parameter ``p`` and of its three state arrays in
place, given the gradient ``g`` and the step's scalars ``k`` and switches ``f``, tuples in
the order kernels/_optim_scalars.py returns them. A state the switches leave off is neither
read nor written, so the caller may pass a placeholder array there. The CPU loops pass the
switches that decide which states are stored as constants, so each loop's stores are
unconditional (a conditional store stops LLVM from vectorising); the CUDA kernels branch.

With "contract" (FMA) allowed, which product of an a*b + c*d the compiler fuses follows
the shape of the code around it, not the formula: results may differ from another kernel's
(or another build's) by the rounding of one product, within what the tests allow.

Plain Python: ``compiled(jit)`` turns the rules into one target's functions. Every cached
kernel that inlines them must be keyed on SOURCE_HASH as well (see kernels/cpu/optim.py):
Numba invalidates a cached kernel only when its own file changes.
"""

import hashlib
import math
import types


def torch_lerp(start, end, w, one_minus_w, from_start):
    """torch.lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w)."""
    return start + w * (end - start) if from_start else end - (end - start) * one_minus_w


def sgd(p, g, buf, unused1, unused2, i, k, f):
    """States (momentum_buf, -, -)."""
    lr, momentum, one_minus_dampening, weight_decay = k
    decay, has_momentum, nesterov, first = f
    gi = g[i] + weight_decay * p[i] if decay else g[i]
    if has_momentum:
        b = gi if first else buf[i] * momentum + one_minus_dampening * gi
        buf[i] = b
        p[i] = p[i] - lr * (gi + momentum * b if nesterov else b)
    else:
        p[i] = p[i] - lr * gi


def rmsprop(p, g, sq, buf, gavg, i, k, f):
    """States (square_avg, momentum_buf, grad_avg)."""
    lr, alpha, one_minus_alpha, eps, weight_decay, momentum = k
    decay, has_momentum, centered, lerp_from_start = f
    gi = g[i] + weight_decay * p[i] if decay else g[i]
    s = sq[i] * alpha + one_minus_alpha * gi * gi
    sq[i] = s
    if centered:
        ga = torch_lerp(gavg[i], gi, one_minus_alpha, alpha, lerp_from_start)
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


def adam(p, g, m, v, vmax, i, k, f):
    """States (exp_avg, exp_avg_sq, max_exp_avg_sq); AdamW when decoupled."""
    beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay_factor, \
        step_size, bias_correction2_sqrt = k
    decay, decoupled, amsgrad, lerp_from_start = f
    # & rather than "and", which would branch inside the CPU loops
    pi = p[i] * decay_factor if decay & decoupled else p[i]
    gi = g[i] + weight_decay * pi if decay & (not decoupled) else g[i]
    mi = torch_lerp(m[i], gi, one_minus_beta1, beta1, lerp_from_start)
    m[i] = mi
    vi = v[i] * beta2 + one_minus_beta2 * gi * gi
    v[i] = vi
    if amsgrad:
        vm = vmax[i]
        vi = vm if vm > vi else vi
        vmax[i] = vi
    p[i] = pi - step_size * (mi / (math.sqrt(vi) / bias_correction2_sqrt + eps))


def compiled(jit):
    """The rules as ``jit`` compiles them (``numba.njit(inline="always")`` on the CPU,
    ``numba.cuda.jit(device=True, inline="always")`` on the GPU) as (sgd, rmsprop, adam),
    for the caller to bind to module globals, where jitted code can reach them. Each is
    rebuilt over this module's globals with torch_lerp compiled by the same ``jit``: Numba
    resolves a call through the value its global name has."""
    scope = dict(globals(), torch_lerp=jit(torch_lerp))

    def rebuild(rule):
        return jit(types.FunctionType(rule.__code__, scope, rule.__name__))

    return rebuild(sgd), rebuild(rmsprop), rebuild(adam)


# 56 bits of this file's SHA-256: an int, so that a kernel of either target can hold it.
with open(__file__, "rb") as _source:
    SOURCE_HASH = int.from_bytes(hashlib.sha256(_source.read()).digest()[:7], "little")
