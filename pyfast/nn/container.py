"""Containers: Sequential, ModuleList, ModuleDict (torch's key layout: children named
"0", "1", ... or by the given keys)."""

from collections import OrderedDict

from .module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: children named "0", "1", ... in order,
    indexed like a list (a slice gives a new container of the subclass's kind)."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._sliced(list(self._modules.items())[index])
        return list(self._modules.values())[_index(index, len(self))]

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self


class Sequential(_ModuleSequence):
    """Modules applied in order. ``Sequential(m0, m1, ...)`` or ``Sequential(OrderedDict)``."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (OrderedDict, dict)):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def forward(self, input):
        # A Conv2d or Linear followed by a ReLU runs as one kernel with the ReLU fused into
        # its epilogue (same numbers, one pass over the output fewer, one tape node fewer).
        modules = list(self._modules.values())
        i, n = 0, len(modules)
        while i < n:
            module = modules[i]
            if i + 1 < n and type(modules[i + 1]) is _relu_type() and \
                    type(module) in _fusable_types():
                input = module(input, activation="relu")
                i += 2
            else:
                input = module(input)
                i += 1
        return input

    def _sliced(self, items):
        return Sequential(OrderedDict(items))


def _relu_type():
    from .activation import ReLU
    return ReLU


def _fusable_types():
    from .conv import Conv2d
    from .linear import Linear
    return (Conv2d, Linear)


def _index(i, n):
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of range for {n} modules")
    return i % n


class ModuleList(_ModuleSequence):
    def __init__(self, modules=None):
        super().__init__()
        for module in modules or ():
            self.append(module)

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def _sliced(self, items):
        return ModuleList(module for _, module in items)

    def __setitem__(self, index, module):
        self.add_module(str(_index(index, len(self))), module)


class ModuleDict(Module):
    def __init__(self, modules=None):
        super().__init__()
        for name, module in (modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __contains__(self, key):
        return key in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()
