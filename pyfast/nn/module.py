"""Module: the base of every layer. It records parameters, buffers and submodules in
registration order (torch's order, so state dicts and parameter lists line up with torch's),
and routes calls to ``forward``.

Parameters and buffers also live in the instance ``__dict__`` (besides the ordered
registries), so ``self.weight`` in a forward is a plain attribute read.

Storage is never replaced behind an optimizer's back: ``load_state_dict`` copies into the
existing arrays (``param.data[...] = value``), so views into an optimizer's flat buffer stay
valid. ``to(device)`` / ``double()`` cannot work in place (the array changes type or size);
they rebind each parameter's ``.data`` (and drop a gradient parked in ``grad_storage``), so
build the optimizer after moving or casting the model, as with torch.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from pyfast._arrays import (as_array, describe, device_name, is_cupy, normalise_device, on_device,
                            to_device)
from pyfast._memory import allocates
from pyfast.tensor import DeviceShortcuts, Tensor

from .parameter import Parameter

__all__ = ["Module", "state_dict_array"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def state_dict_array(value, key):
    """An array from whatever a state dict may hold: arrays, Tensors, torch tensors (via
    DLPack, detached first), objects with .numpy(), numbers; anything else is a TypeError
    naming ``state_dict[key]``. The array stays where the value lives (pf.models.convert
    moves it to the host)."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray) or is_cupy(value):
        return value
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "__dlpack__"):
        try:
            return as_array(value, key)
        except (TypeError, BufferError, RuntimeError):
            pass
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    try:
        return np.asarray(value)
    except Exception:
        raise TypeError(f"state_dict[{key!r}] is not an array: {describe(value)}") from None


class Module(DeviceShortcuts):
    """Base class of layers and models (torch.nn.Module's contract)."""

    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---------------------------------------------------------------- registration
    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() was called")
        if isinstance(value, Parameter):
            self._discard(name)
            params[name] = value
        elif isinstance(value, Module):
            self._discard(name)
            self._modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {describe(value)} as parameter {name!r} "
                                "(a pf.nn.Parameter or None expected)")
            params[name] = None
        elif name in self._buffers:
            if value is not None:
                value = value if isinstance(value, Tensor) else Tensor(as_array(value, name))
            self._buffers[name] = value
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {describe(value)} as child module {name!r} "
                                "(a Module or None expected)")
            self._modules[name] = None
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._discard(name)
        object.__delattr__(self, name)

    def _discard(self, name):
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)
        self._modules.pop(name, None)

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {describe(param)} as parameter {name!r} "
                            "(a pf.nn.Parameter or None expected)")
        self._discard(name)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """A non-trainable state array (running statistics): in state_dict when
        ``persistent``, moved by ``to()``, never given to an optimizer."""
        if tensor is not None and not isinstance(tensor, Tensor):
            tensor = Tensor(as_array(tensor, name))
        self._discard(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{describe(module)} is not a Module")
        self._discard(name)
        self._modules[name] = module
        object.__setattr__(self, name, module)

    register_module = add_module

    # ---------------------------------------------------------------- traversal
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                            remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and module not in seen:
                seen.add(module)
                yield name, module

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, prefix, recurse, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(name, Parameter) in torch's order: each module's own parameters in registration
        order, modules depth-first; a parameter shared by two modules comes once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ---------------------------------------------------------------- state
    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Ordered name -> array (the live storage, not copies; Tensors with keep_vars),
        with torch's keys: each module's parameters, then its persistent buffers, then its
        children's entries."""
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.data
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = b if keep_vars else b.data
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict=True):
        """Copy ``state_dict``'s values into this module's existing parameter and buffer
        arrays (in place, casting to their dtype and device).

        Raises RuntimeError listing every missing and unexpected key (when ``strict``) and
        every shape mismatch (always), before anything is copied. Returns
        (missing_keys, unexpected_keys)."""
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in own]
        mismatched, values = [], {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict_array(state_dict[key], key)
            if tuple(value.shape) != tuple(target.shape):
                mismatched.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{tuple(value.shape)} from checkpoint, the shape in current "
                                  f"model is {tuple(target.shape)}.")
            else:
                values[key] = value
        errors = []
        if strict and missing:
            errors.append("Missing key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in missing) + ".")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in unexpected) + ".")
        errors += mismatched
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for key, value in values.items():
            target = own[key].data
            if type(value) is not type(target):
                value = to_device(value, device_name(target))
            target[...] = value
        return IncompatibleKeys(missing, unexpected)

    # ---------------------------------------------------------------- modes, devices
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Drop (or zero in place) every parameter's gradient. Dropping is safe with an
        optimizer's flat buffer: backward writes into ``grad_storage`` when it is set."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def to(self, device=None, dtype=None):
        """Move and/or cast every parameter and buffer (floating ones only for ``dtype``).

        Rebinds ``.data`` (and ``.grad``) of each tensor that changes: build optimizers after
        calling this. Tensors already on ``device`` with ``dtype`` are left untouched."""
        device = normalise_device(device)
        dtype = None if dtype is None else np.dtype(dtype)
        if dtype is not None and dtype.kind != "f":
            raise TypeError(f"Module.to only casts to floating dtypes, got {dtype}")
        seen = set()
        for m in self.modules():
            for registry in (m._parameters, m._buffers):
                for t in registry.values():
                    if t is None or id(t) in seen:
                        continue
                    seen.add(id(t))
                    t._data = _moved(t._data, device, dtype)
                    if t._grad is not None:
                        t._grad._data = _moved(t._grad._data, device, dtype)
                    if t.grad_storage is not None and not (
                            t._grad is not None and t._grad._data is t.grad_storage):
                        t.grad_storage = None
        return self

    # ---------------------------------------------------------------- calling
    @allocates   # a layer's own NumPy work (running statistics, masks) uses the cache too
    def __call__(self, *args, **kwargs):
        args = [_as_input(a) for a in args]
        out = self.forward(*args, **kwargs)
        if isinstance(out, Tensor) or out is None or isinstance(out, (tuple, list, dict)):
            return out
        return Tensor(as_array(out, "output"))

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    # ---------------------------------------------------------------- printing
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, module in self._modules.items():
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _moved(array, device, dtype):
    if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
        array = array.astype(dtype)
    if device is not None and not on_device(array, device):
        array = to_device(array, device)
    return array


def _as_input(x):
    """Plain arrays (numpy, cupy, DLPack) enter a module as Tensors without a copy."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray) or is_cupy(x) or hasattr(x, "__dlpack__"):
        return Tensor(as_array(x, "input"))
    return x
