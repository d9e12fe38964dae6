"""Numba CPU optimizer steps: SGD (momentum, dampening, Nesterov), RMSprop (centered,
momentum) and Adam/AdamW (AMSGrad), torch.optim's single-tensor rules in torch's order of
operations, updating parameters and state in place in one pass over memory.

A list of tensors is one parallel region, as in csrc/cpu/optim.cpp: the tensors are laid end
to end in one index space cut into equal ranges, one per thread. Each tensor is reached
through its address (a pointer cast and numba.carray), so one compiled kernel per dtype
serves lists of any length; a tuple or typed list of arrays would compile per length or cost
more to build than a small step takes. The wrapper takes the addresses from arrays that
pf.ops has checked (same shapes, C-contiguous, writable), so every view is in bounds.

The per-element rules are kernels/_optim_rules.py's, shared with the CUDA kernels. Only
"contract" (FMA) is allowed of fastmath: reassociation, approximate reciprocals or square
roots would move the results away from torch's.
"""

import contextlib

import numpy as np
from numba import carray, get_num_threads, njit, prange, set_num_threads, types
from numba.extending import intrinsic

from .. import _optim_rules, _optim_scalars as scalars

_JIT = dict(cache=True, nogil=True, error_model="numpy")  # IEEE division: no zero check per element
_LOOP = dict(fastmath={"contract"}, nogil=True, error_model="numpy")
SPLIT_QUANTUM = 16        # thread ranges start on multiples of this many elements
PARALLEL_MIN = 1 << 16    # below this many elements one thread is faster
SGD, RMSPROP, ADAM = 0, 1, 2

sgd_update, rmsprop_update, adam_update = _optim_rules.compiled(njit(inline="always"))


@intrinsic
def _as_pointer(typingctx, address, like):
    """The integer ``address`` as a pointer to ``like``'s element type."""
    if not isinstance(address, types.Integer) or not isinstance(like, types.Array):
        return None
    ptr = types.CPointer(like.dtype)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(address, like), codegen


@njit(**_JIT)
def _view(address, size, like):
    return carray(_as_pointer(address, like), (size,))


# One loop per set of stored states, with the switches that pick them passed as constants:
# the rule's stores of the states a loop does not keep fold away, and what is left is stored
# unconditionally (a conditional store stops LLVM from vectorising); the other switches stay
# selects. Not cached themselves: they compile only into run_lists, whose cache key covers
# the rules (see there).

@njit(**_LOOP)
def sgd_loop(p, g, buf, unused1, unused2, k_array, f):
    k = (k_array[0], k_array[1], k_array[2], k_array[3])
    decay, has_momentum, nesterov, first = f[0], f[1], f[2], f[3]
    if has_momentum:
        for i in range(p.size):
            sgd_update(p, g, buf, unused1, unused2, i, k, (decay, True, nesterov, first))
    else:
        for i in range(p.size):
            sgd_update(p, g, buf, unused1, unused2, i, k, (decay, False, nesterov, first))


@njit(**_LOOP)
def rmsprop_loop(p, g, sq, buf, gavg, k_array, f):
    k = (k_array[0], k_array[1], k_array[2], k_array[3], k_array[4], k_array[5])
    decay, has_momentum, centered, lerp_from_start = f[0], f[1], f[2], f[3]
    if centered and has_momentum:
        for i in range(p.size):
            rmsprop_update(p, g, sq, buf, gavg, i, k, (decay, True, True, lerp_from_start))
    elif centered:
        for i in range(p.size):
            rmsprop_update(p, g, sq, buf, gavg, i, k, (decay, False, True, lerp_from_start))
    elif has_momentum:
        for i in range(p.size):
            rmsprop_update(p, g, sq, buf, gavg, i, k, (decay, True, False, lerp_from_start))
    else:
        for i in range(p.size):
            rmsprop_update(p, g, sq, buf, gavg, i, k, (decay, False, False, lerp_from_start))


@njit(**_LOOP)
def adam_loop(p, g, m, v, vmax, k_array, f):
    k = (k_array[0], k_array[1], k_array[2], k_array[3], k_array[4], k_array[5], k_array[6],
         k_array[7], k_array[8])
    decay, decoupled, amsgrad, lerp_from_start = f[0], f[1], f[2], f[3]
    if amsgrad:
        for i in range(p.size):
            adam_update(p, g, m, v, vmax, i, k, (decay, decoupled, True, lerp_from_start))
    else:
        for i in range(p.size):
            adam_update(p, g, m, v, vmax, i, k, (decay, decoupled, False, lerp_from_start))


def _keyed_on_rules(rules_hash):
    """run_lists, cached under the rules' source hash too. Numba keys a cached kernel on its
    own file's time stamp, its bytecode and the values of its closure cells, never on the
    code it inlines from other modules: without the hash a change to kernels/_optim_rules.py
    would keep running the machine code cached before it."""

    @njit(parallel=True, **_JIT)
    def run_lists(rule, addresses, prefix, like, k, f, chunks):
        """Apply optimizer ``rule`` (SGD, RMSPROP, ADAM) to the tensors whose (param, grad,
        state0, state1, state2) addresses are the rows of ``addresses`` (0: absent) and whose
        sizes are the steps of ``prefix``."""
        rules_hash  # noqa: B018 -- read, so that it is a closure cell and in the cache key
        total = prefix[-1]
        for ch in prange(chunks):
            lo = total * ch // chunks // SPLIT_QUANTUM * SPLIT_QUANTUM
            hi = total if ch + 1 == chunks else \
                total * (ch + 1) // chunks // SPLIT_QUANTUM * SPLIT_QUANTUM
            t = np.searchsorted(prefix, lo, side="right") - 1
            while lo < hi:
                end = min(hi, prefix[t + 1])
                if end > lo:
                    n, a, b = prefix[t + 1] - prefix[t], lo - prefix[t], end - prefix[t]
                    row = addresses[t]
                    p = _view(row[0], n, like)[a:b]
                    g = _view(row[1], n, like)[a:b]
                    s0 = _view(row[2], n, like)[a:b] if row[2] else like
                    s1 = _view(row[3], n, like)[a:b] if row[3] else like
                    s2 = _view(row[4], n, like)[a:b] if row[4] else like
                    if rule == SGD:
                        sgd_loop(p, g, s0, s1, s2, k, f)
                    elif rule == RMSPROP:
                        rmsprop_loop(p, g, s0, s1, s2, k, f)
                    else:
                        adam_loop(p, g, s0, s1, s2, k, f)
                lo = max(lo, end)
                t += 1

    return run_lists


run_lists = _keyed_on_rules(_optim_rules.SOURCE_HASH)


def _run(rule, params, grads, states, k, flags):
    """Lists -> the address table, and one call of run_lists for all of them."""
    addresses = np.zeros((len(params), 5), np.int64)
    prefix = np.zeros(len(params) + 1, np.int64)
    for i, (p, g) in enumerate(zip(params, grads)):
        addresses[i, 0] = p.ctypes.data
        addresses[i, 1] = g.ctypes.data
        for j, state in enumerate(states):
            if state is not None:
                addresses[i, 2 + j] = state[i].ctypes.data
        prefix[i + 1] = prefix[i] + p.size
    total = int(prefix[-1])
    if total == 0:
        return
    like = params[0][:0].reshape(-1)
    with threads_for(total) as chunks:
        run_lists(rule, addresses, prefix, like, np.asarray(k, like.dtype),
                  np.asarray(flags, np.bool_), chunks)


@contextlib.contextmanager
def threads_for(elements):
    """The thread count for `elements` of work, applied to numba's parallel regions for the
    block: one below PARALLEL_MIN. A prange starts the whole pool however few iterations
    it has, and waking it costs more than small work takes (on a busy machine a woken
    thread may wait a whole time slice: milliseconds)."""
    if elements >= PARALLEL_MIN:
        yield get_num_threads()
        return
    before = get_num_threads()
    set_num_threads(1)
    try:
        yield 1
    finally:
        set_num_threads(before)


def sgd_step(params, grads, momentum_bufs, lr, momentum, dampening, nesterov, weight_decay,
             first):
    """torch.optim.SGD's step in place over lists of arrays (first: step 1, the momentum
    buffers take the gradients)."""
    _run(SGD, params, grads, (momentum_bufs if momentum else None, None, None),
         *scalars.sgd(lr, momentum, dampening, nesterov, weight_decay, first))


def rmsprop_step(params, grads, square_avgs, momentum_bufs, grad_avgs, lr, alpha, eps,
                 weight_decay, momentum, centered):
    """torch.optim.RMSprop's step in place over lists of arrays."""
    _run(RMSPROP, params, grads,
         (square_avgs, momentum_bufs if momentum > 0 else None, grad_avgs if centered else None),
         *scalars.rmsprop(lr, alpha, eps, weight_decay, momentum, centered))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2,
              eps, weight_decay, decoupled, amsgrad):
    """torch.optim.Adam's (decoupled: AdamW's) step in place over lists of arrays."""
    _run(ADAM, params, grads, (exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None),
         *scalars.adam(step, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad))
