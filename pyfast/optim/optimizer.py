"""Optimizer base: torch.optim's interface over parameters packed into flat buffers.

At construction (and whenever the parameter set changes) the parameters of each group are
packed by dtype and device into one flat data buffer and one flat gradient buffer; every
Parameter's ``.data`` and ``.grad.data`` become views into them (docs/architecture.md rule 10).
The optimizer state (momentum, moments) lives in flat buffers of the same layout. So
``step()`` is one ``pf.ops`` call per bucket (one per group when the group shares a dtype and
device, which is the usual case), ``zero_grad()`` one fill, and a future all-reduce one
collective.

Backward accumulates into the existing ``.grad`` in place, and when ``.grad`` was set to
None it writes into the view parked in ``Tensor.grad_storage``, so the views stay valid.
Code that rebinds a parameter's ``.data`` or ``.grad`` orphans a view; each
``step()``/``zero_grad()`` checks the identity of every view (pointer comparisons, no
kernels) and copies rebound values back into the buffers (a gradient still None at ``step``
is zeroed), re-packing when a dtype, device or ``requires_grad`` changed.

Differences from torch, all forced by the flat layout: gradients are zeroed, never set to
None (``set_to_none`` is accepted and ignored); a parameter whose gradient was None counts as
having a zero gradient (weight decay and momentum still apply, as torch with zeroed grads);
parameters of a bucket share one step count.
"""

from __future__ import annotations

import math
from itertools import chain

import numpy as np

from pyfast._arrays import FLOAT_DTYPES, array_module, describe, is_cupy, to_host
from pyfast._memory import allocates
from pyfast.ops.optim import check_no_aliasing

__all__ = ["Optimizer", "required"]


class _Required:
    def __repr__(self):
        return "<required parameter>"


required = _Required()


def _device_key(x):
    return "cpu" if isinstance(x, np.ndarray) else f"cuda:{x.device.id}"


@allocates   # flat parameter, gradient and state buffers come from pyfast's allocator
def _zeros(like, n, dtype):
    xp = array_module(like)
    if xp is np:
        return np.zeros(n, dtype)
    with like.device:
        return xp.zeros(n, dtype)


def _is_tensor(p):
    return hasattr(p, "data") and hasattr(p, "grad") and hasattr(p, "requires_grad")


def check_number(name, value, *, low=0.0, high=None, high_open=False):
    """``value`` as a float, or ValueError/TypeError as torch's constructors raise them."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < low or (high is not None and (
            value > high or (high_open and value == high))):
        bound = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise ValueError(f"Invalid {name} value: {value} (must be >= {low}{bound})")
    return value


class _Bucket:
    """The parameters of one group sharing a dtype and device, packed into flat buffers."""

    def __init__(self, group_index, params, indices):
        self.group = group_index
        self.params = params
        self.indices = indices
        first = params[0].data
        self.dtype = first.dtype
        self.device = _device_key(first)
        self.shapes = [tuple(p.data.shape) for p in params]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
        self.size = self.offsets[-1]
        self.data = _zeros(first, self.size, self.dtype)
        self.grad = _zeros(first, self.size, self.dtype)
        self.state = {}          # name -> flat buffer laid out as data
        self.step = 0            # steps taken by every parameter of the bucket
        self.data_views = [self.view(self.data, i) for i in range(len(params))]
        self.grad_views = [self.view(self.grad, i) for i in range(len(params))]
        self.triples = list(zip(params, self.data_views, self.grad_views))
        for p, dv, gv in zip(params, self.data_views, self.grad_views):
            dv[...] = p.data
            if p.grad is not None:
                gv[...] = _grad_array(p)
            p.data = dv
            p.grad = gv
            if hasattr(p, "grad_storage"):   # backward writes here when .grad was set to None
                p.grad_storage = gv
            if p.data is not dv or _grad_array(p) is not gv:
                raise RuntimeError(
                    "a Tensor copied the array assigned to its .data or .grad instead of "
                    "rebinding to it; the optimizer's flat buffers need views")

    def view(self, flat, i):
        return flat[self.offsets[i]:self.offsets[i + 1]].reshape(self.shapes[i])

    def intact(self):
        """Every parameter still trainable and still viewing this bucket's buffers."""
        for p, dv, gv in self.triples:
            if p.data is not dv or not p.requires_grad:
                return False
            g = p.grad
            if g is None or g.data is not gv:
                return False
        return True

    def state_buffer(self, name):
        """The flat state buffer ``name``, created as zeros on first use."""
        buf = self.state.get(name)
        if buf is None:
            buf = self.state[name] = _zeros(self.data, self.size, self.dtype)
        return buf


def _grad_array(p):
    """The array behind ``p.grad`` (a Tensor by contract; an array is tolerated)."""
    g = p.grad
    if isinstance(g, np.ndarray) or is_cupy(g):
        return g
    return g.data


class Optimizer:
    """Base class: param groups, packing, state dicts. Subclasses set ``_state_keys``
    (torch's per-parameter state names, in order) and implement ``_update(bucket, group)``
    as one ``pf.ops`` call."""

    _state_keys: tuple = ()
    _has_step_state = True   # torch keeps a per-parameter "step" (SGD does not)

    def __init__(self, params, defaults):
        if _is_tensor(params) or isinstance(params, np.ndarray):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        self.defaults = defaults
        self.param_groups = []
        self._buckets = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self._add_group(group)
        self._pack()

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    # -- groups -------------------------------------------------------------------------

    def add_param_group(self, param_group):
        """Add a group (a dict with "params" and optional options), re-packing the buffers."""
        saved = self._gather_state()
        self._add_group(param_group)
        self._pack(saved)

    def _add_group(self, group):
        if not isinstance(group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(group).__name__}")
        if "params" not in group:
            raise ValueError("param_group must have a 'params' entry")
        params = group["params"]
        if _is_tensor(params):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            params = list(params)
        group = dict(group)
        names = [p[0] for p in params if isinstance(p, tuple)]
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. "
                                 "Some param names are missing")
            group["param_names"] = names
            params = [p[1] for p in params]
        for p in params:
            if not _is_tensor(p):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if p.data.dtype not in FLOAT_DTYPES:
                raise TypeError(f"optimizer can only optimize float32/float64 parameters, got "
                                f"{describe(p.data)}")
        group["params"] = params
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        self._check_group(group)
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("optimizer got a parameter group with duplicate parameters; each "
                             "parameter may appear once (its data is packed once)")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if seen.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        # distinct Tensors over one array (tied weights rebound by hand) would be packed as
        # two copies and silently untied; torch refuses duplicates, and so do we
        check_no_aliasing([(f"parameter {i}", p.data, True) for i, p in enumerate(
            chain((p for g in self.param_groups for p in g["params"]), params))], "optimizer")
        if any(("param_names" in g) != ("param_names" in group) for g in self.param_groups):
            raise ValueError("all optimizer param groups should be with/without names.")
        self.param_groups.append(group)

    def _check_group(self, group):
        """Validate a group's hyper-parameters (subclasses extend)."""
        check_number("learning rate", group["lr"])
        if group.get("differentiable"):
            raise ValueError("differentiable=True is not supported: pyfast optimizers are "
                             "fused kernels outside the autograd tape")

    # -- packing ------------------------------------------------------------------------

    def _pack(self, saved=None):
        """(Re)build the buckets from the groups' trainable parameters, then restore
        ``saved`` per-parameter state ({index: {name: array, "step": n}})."""
        self._buckets = []
        index = 0
        for gi, group in enumerate(self.param_groups):
            by_key = {}
            for p in group["params"]:
                if p.requires_grad:
                    key = (p.data.dtype.str, _device_key(p.data))
                    by_key.setdefault(key, ([], []))
                    by_key[key][0].append(p)
                    by_key[key][1].append(index)
                index += 1
            for params, indices in by_key.values():
                self._buckets.append(_Bucket(gi, params, indices))
        self._frozen = [p for g in self.param_groups for p in g["params"] if not p.requires_grad]
        if saved:
            self._restore_state(saved, strict=False)

    def _repair(self):
        """Re-attach views that code outside the optimizer replaced (see the module doc)."""
        if all(b.intact() for b in self._buckets) and not any(
                p.requires_grad for p in self._frozen):
            return
        repack = any(p.requires_grad for p in self._frozen) or any(
            not p.requires_grad for b in self._buckets for p in b.params)
        for b in self._buckets:
            for p, dv in zip(b.params, b.data_views):
                data = p.data
                if data is not dv and (data.dtype != b.dtype or _device_key(data) != b.device
                                       or tuple(data.shape) != tuple(dv.shape)):
                    repack = True
        if repack:
            saved = self._gather_state()
            for b in self._buckets:   # rebound values win over the packed ones
                for p, dv, gv in zip(b.params, b.data_views, b.grad_views):
                    if p.grad is None:
                        p.grad = array_module(p.data).zeros_like(p.data)
            self._pack(saved)
            return
        for b in self._buckets:
            for p, dv, gv in zip(b.params, b.data_views, b.grad_views):
                if p.data is not dv:
                    dv[...] = p.data
                    p.data = dv
                grad = p.grad
                if grad is None:
                    gv.fill(0)
                    p.grad = gv
                elif _grad_array(p) is not gv:
                    gv[...] = _grad_array(p)
                    p.grad = gv

    # -- the update ---------------------------------------------------------------------

    def zero_grad(self, set_to_none=True):
        """Zero every gradient: one fill per flat buffer. Gradients are views of the flat
        buffer, so they are zeroed even when ``set_to_none`` is True (torch's default)."""
        self._repair()
        for b in self._buckets:
            b.grad.fill(0)

    @allocates
    def step(self, closure=None):
        """One update of every trainable parameter: one kernel call per bucket."""
        loss = closure() if closure is not None else None
        self._repair()
        for b in self._buckets:
            group = self.param_groups[b.group]
            if group.get("maximize"):
                b.grad *= -1          # exact; undone below so p.grad keeps its sign
                try:
                    self._update(b, group)
                finally:
                    b.grad *= -1
            else:
                self._update(b, group)
        return loss

    def _update(self, bucket, group):
        raise NotImplementedError

    # -- state dicts --------------------------------------------------------------------

    def _gather_state(self):
        """Per-parameter state {index: {name: array copy, "step": n}} (torch's layout)."""
        state = {}
        for b in self._buckets:
            if not b.state and b.step == 0:
                continue
            for i, index in enumerate(b.indices):
                entry = {}
                if self._has_step_state:
                    entry["step"] = float(b.step)
                for name in self._state_keys:
                    if name in b.state:
                        entry[name] = b.view(b.state[name], i).copy()
                if entry:
                    state[index] = entry
        return state

    @property
    def state(self):
        """{parameter: {name: live view of its state, "step": n}} as torch's
        ``optimizer.state`` (read it; write through the views)."""
        self._repair()
        out = {}
        for b in self._buckets:
            if not b.state and b.step == 0:
                continue
            for i, p in enumerate(b.params):
                entry = {"step": float(b.step)} if self._has_step_state else {}
                entry.update({name: b.view(b.state[name], i) for name in self._state_keys
                              if name in b.state})
                out[p] = entry
        return out

    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{options..., "params": [indices]}]}
        as torch lays it out; state arrays are copies on the parameters' device."""
        groups, start = [], 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k not in ("params", "param_names")}
            packed["params"] = list(range(start, start + len(group["params"])))
            if "param_names" in group:
                packed["param_names"] = list(group["param_names"])
            start += len(group["params"])
            groups.append(packed)
        return {"state": self._gather_state(), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a ``state_dict()`` (this optimizer's, torch's, or one read back by pf.load):
        group options replace the current ones, state is copied into the flat buffers."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or \
                "param_groups" not in state_dict:
            raise ValueError("optimizer state dict must be a dict with 'state' and "
                             "'param_groups' entries")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)} != {len(self.param_groups)})")
        for i, (g, s) in enumerate(zip(self.param_groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(f"loaded state dict contains a parameter group ({i}) that "
                                 f"doesn't match the size of optimizer's group "
                                 f"({len(s['params'])} != {len(g['params'])})")
        saved_ids = (_index(k) for k in chain.from_iterable(s["params"] for s in saved_groups))
        id_map = dict(zip(saved_ids, range(sum(len(g["params"]) for g in self.param_groups))))
        new_groups = []
        for g, s in zip(self.param_groups, saved_groups):
            new = {k: (tuple(v) if k == "betas" else v) for k, v in s.items()
                   if k not in ("params", "param_names")}
            new["params"] = g["params"]
            if "param_names" in g:
                new["param_names"] = g["param_names"]
            for name, default in self.defaults.items():
                new.setdefault(name, default)
            self._check_group(new)
            new_groups.append(new)
        state = {}
        for key, entry in dict(state_dict["state"]).items():
            key = _index(key)
            if key in id_map:
                state[id_map[key]] = entry
        self._repair()
        self.param_groups[:] = new_groups
        self._restore_state(state, strict=True)

    def _restore_state(self, state, strict):
        for b in self._buckets:
            entries = [state.get(index) for index in b.indices]
            present = [e is not None and len(e) > 0 for e in entries]
            b.state, b.step = {}, 0
            if not any(present):
                continue
            if not all(present):
                missing = [index for index, ok in zip(b.indices, present) if not ok]
                if strict:
                    raise ValueError(f"optimizer state has entries for some parameters of a "
                                     f"group but not for parameters {missing}; pyfast steps a "
                                     f"group's parameters together and needs all or none")
            steps = {int(float(np.asarray(e["step"]))) for e in entries
                     if e is not None and "step" in e}
            if len(steps) > 1:
                raise ValueError(f"optimizer state has different step counts {sorted(steps)} "
                                 f"within one group (parameters {b.indices}); pyfast steps a "
                                 f"group's parameters together")
            b.step = steps.pop() if steps else self._implied_step(entries)
            xp = array_module(b.data)
            for name in self._state_keys:
                if not any(e is not None and name in e for e in entries):
                    continue
                flat = b.state_buffer(name)
                for i, (index, e) in enumerate(zip(b.indices, entries)):
                    if e is None or name not in e or e[name] is None:
                        continue
                    value = _as_host_or_device(e[name], xp)
                    if tuple(value.shape) != b.shapes[i]:
                        raise ValueError(f"optimizer state {name!r} of parameter {index} has "
                                         f"shape {tuple(value.shape)}, the parameter has "
                                         f"shape {b.shapes[i]}")
                    b.view(flat, i)[...] = value

    def _implied_step(self, entries):
        """The step count of state without a "step" entry (SGD's momentum buffer)."""
        return 1


def _index(key):
    if isinstance(key, str) and key.lstrip("-").isdigit():
        return int(key)
    return key


def _as_host_or_device(value, xp):
    """A state value (numpy, cupy, pf.Tensor, torch tensor, number) as an ``xp`` array."""
    if hasattr(value, "data") and type(value).__module__.partition(".")[0] == "pyfast":
        value = value.data
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if xp is np:
        value = to_host(value)
    return xp.asarray(value)
