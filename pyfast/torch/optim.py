"""torch.optim's SGD, Adam, AdamW and RMSprop with pyfast's fused update kernels.

Each class subclasses its torch.optim twin and overrides only ``step``: the arguments,
defaults, param groups, state (the same keys, ``step`` a scalar tensor as torch keeps it)
and ``state_dict`` are torch's own, so a state dict saved by either loads into the other and
torch's LR schedulers and step hooks work unchanged.

One step makes one kernel call (``torch.ops.pyfast.<name>_step``) per param group and
(device, dtype) over the list of its parameters: the update runs in one parallel region
over all of them. The parameters stay the user's tensors; no flat buffer is built, since it
would have to alias them (re-pointing ``param.data``), which the user's own references to
the tensors would not follow.
"""

import torch

from . import _ops

__all__ = ["SGD", "Adam", "AdamW", "RMSprop"]

_UNSUPPORTED = ("differentiable", "capturable", "fused")


def _float(v):
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


class _Fused:
    """The step machinery the four optimizers share."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check()
        self._views = _ops.ReusedViews()

    def __setstate__(self, state):  # unpickled or deep-copied: views of the old tensors
        super().__setstate__(state)
        self._views = _ops.ReusedViews()

    # tuple of param ids -> (flat tensor, its 0-d views: those params' state["step"]);
    # each step() replaces it on the instance (see _bump_steps)
    _step_views: dict = {}

    def _check(self):
        for group in self.param_groups:
            for flag in _UNSUPPORTED:
                if group.get(flag):
                    raise ValueError(f"pyfast.torch.optim.{type(self).__name__}: {flag}=True "
                                     f"is not supported by pyfast's fused kernels")

    def _buckets(self, group):
        """(params, grads) with gradients, split by (device, dtype); maximize negates."""
        buckets = {}
        maximize = group.get("maximize")
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if p.is_complex():
                raise TypeError(f"{type(self).__name__}: complex parameters are not supported "
                                f"by pyfast's kernels")
            if maximize:
                g = -g
            ps, gs = buckets.setdefault((p.device, p.dtype), ([], []))
            ps.append(p)
            gs.append(g)
        return list(buckets.values())

    def _keeps_state(self, group):
        return True

    @staticmethod
    def _state_buffers(params, states, key):
        """state[key] of each param (zeros where missing), made C-contiguous: the kernels
        update them in place."""
        bufs = []
        for p, state in zip(params, states):
            buf = state.get(key)
            if buf is None:
                buf = state[key] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            elif not buf.is_contiguous():
                buf = state[key] = buf.contiguous()
            bufs.append(buf)
        return bufs

    def _bump_steps(self, params, states):
        """Add one to state['step'] of every param (a float32 scalar tensor, as torch keeps
        it) and return the indices of the params grouped by their step count.

        The counters of one list of params are 0-d views of one flat tensor, so a step adds
        to all of them and reads them back in two calls: torch._foreach_add_ over 100 scalar
        tensors cost 0.1-0.15 ms, more than the rest of the step's Python. Where a counter
        is not the view this optimizer made (new params, a loaded state dict, a different
        list of params with gradients), that list's counters are rebuilt from their values."""
        key = tuple(map(id, params))
        flat, views = self._step_views.get(key, (None, ()))
        if len(views) != len(params) or any(s.get("step") is not v
                                            for s, v in zip(states, views)):
            flat = torch.tensor([float(s["step"]) if "step" in s else 0.0 for s in states],
                                dtype=torch.float32)
            views = flat.unbind()
            for s, v in zip(states, views):
                s["step"] = v
        self._step_views_next[key] = flat, views
        flat.add_(1)
        by_step = {}
        for i, s in enumerate(flat.tolist()):
            by_step.setdefault(int(s), []).append(i)
        return by_step

    def step(self, closure=None):
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check()
        self._step_views_next = {}
        with torch.no_grad():
            for group in self.param_groups:
                for params, grads in self._buckets(group):
                    work = [p if p.is_contiguous() else p.contiguous() for p in params]
                    # one lookup per param: state is keyed by tensors, whose hash is Python
                    states = [self.state[p] for p in params] if self._keeps_state(group) \
                        else None
                    self._update(group, params, states, work, grads)
                    for p, w in zip(params, work):
                        if w is not p:
                            p.copy_(w)
        self._step_views = self._step_views_next  # only the lists this step used
        self._views.next_step()
        return loss


def _pick(values, idx):
    return [] if values is None else [values[i] for i in idx]


class SGD(_Fused, torch.optim.SGD):
    """torch.optim.SGD (momentum, dampening, Nesterov, weight decay, maximize)."""

    def _keeps_state(self, group):
        return group["momentum"] != 0  # as torch.optim.SGD: no state without momentum

    def _update(self, group, params, states, work, grads):
        momentum = group["momentum"]
        hyper = dict(lr=_float(group["lr"]), momentum=float(momentum),
                     dampening=float(group["dampening"]), nesterov=bool(group["nesterov"]),
                     weight_decay=_float(group["weight_decay"]))
        if momentum == 0:
            _ops.sgd_step(work, grads, [], step=2, reuse=self._views, **hyper)
            return
        first, later = [], []
        for i, state in enumerate(states):
            (later if state.get("momentum_buffer") is not None else first).append(i)
        for idx, step in ((first, 1), (later, 2)):
            if not idx:
                continue
            if step == 1:
                for i in idx:
                    states[i]["momentum_buffer"] = torch.empty_like(
                        work[i], memory_format=torch.contiguous_format)
            bufs = self._state_buffers(_pick(params, idx), _pick(states, idx), "momentum_buffer")
            _ops.sgd_step(_pick(work, idx), _pick(grads, idx), bufs, step=step, reuse=self._views,
                          **hyper)


class Adam(_Fused, torch.optim.Adam):
    """torch.optim.Adam (AMSGrad, weight decay, decoupled_weight_decay, maximize)."""

    def _decoupled(self, group):
        return bool(group.get("decoupled_weight_decay", False))

    def _update(self, group, params, states, work, grads):
        beta1, beta2 = group["betas"]
        amsgrad = bool(group["amsgrad"])
        exp_avg = self._state_buffers(params, states, "exp_avg")
        exp_avg_sq = self._state_buffers(params, states, "exp_avg_sq")
        vmax = self._state_buffers(params, states, "max_exp_avg_sq") if amsgrad else None
        for step, idx in self._bump_steps(params, states).items():
            _ops.adam_step(_pick(work, idx), _pick(grads, idx), _pick(exp_avg, idx),
                           _pick(exp_avg_sq, idx), _pick(vmax, idx), step=step,
                           lr=_float(group["lr"]), beta1=_float(beta1), beta2=_float(beta2),
                           eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                           decoupled=self._decoupled(group), amsgrad=amsgrad, reuse=self._views)


class AdamW(Adam, torch.optim.AdamW):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2)."""

    def _decoupled(self, group):
        return True


class RMSprop(_Fused, torch.optim.RMSprop):
    """torch.optim.RMSprop (centered, momentum, weight decay, maximize)."""

    def _update(self, group, params, states, work, grads):
        momentum, centered = float(group["momentum"]), bool(group["centered"])
        self._bump_steps(params, states)
        square_avg = self._state_buffers(params, states, "square_avg")
        bufs = self._state_buffers(params, states, "momentum_buffer") if momentum else None
        gavg = self._state_buffers(params, states, "grad_avg") if centered else None
        _ops.rmsprop_step(work, grads, square_avg, bufs or [], gavg or [], lr=_float(group["lr"]),
                          alpha=float(group["alpha"]), eps=float(group["eps"]),
                          weight_decay=float(group["weight_decay"]), momentum=momentum,
                          centered=centered, reuse=self._views)
