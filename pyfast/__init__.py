"""pyfast: hand-written C++/CUDA and Numba kernels for training neural networks.

``import pyfast`` runs this file and nothing else: every submodule and every name below
loads on first use (PEP 562 ``__getattr__``), so a script pays for ``pf.nn`` or ``pf.data``
only when it touches them. NumPy comes in with the first submodule; numba, cupy, torch and
the native extensions load the first time a kernel needs them. ``pyfast.torch`` and
``pyfast.jax`` are never loaded through an attribute: they import their framework, so they
are reached only by ``import pyfast.torch`` / ``import pyfast.jax``.
"""

import os as _os
import sys as _sys
import types as _types

from ._version import __version__

# Submodules reached as ``pf.<name>``. Optional ones (added later or elsewhere) are listed
# only when their file exists, so that dir(pf) and __all__ name nothing that fails to load.
_SUBMODULES = ("backends", "ops", "nn", "optim", "train", "data", "models", "io",
               "distributed", "memory", "amp")

# Public names defined in a submodule: name -> the submodule that defines it.
_NAMES = {
    "use_backend": "backends", "set_num_threads": "backends", "get_num_threads": "backends",
    "manual_seed": "_random",
    "Tensor": "tensor", "tensor": "tensor", "from_dlpack": "tensor", "cat": "tensor",
    "stack": "tensor", "no_grad": "tensor", "enable_grad": "tensor",
    "set_grad_enabled": "tensor",
    "save": "io", "load": "io",
}


def _present(name):
    here = _os.path.dirname(__file__)
    return _os.path.exists(_os.path.join(here, name + ".py")) or \
        _os.path.exists(_os.path.join(here, name, "__init__.py"))


_SUBMODULES = tuple(name for name in _SUBMODULES if _present(name))

__all__ = ["__version__", *_SUBMODULES, *_NAMES]


def __getattr__(name):
    import importlib

    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value   # later lookups are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """The package's module type. ``pf.tensor`` is the tensor constructor (docs/api.md section 3),
    yet ``pyfast.tensor`` is also the submodule defining it, and the import system sets the
    submodule as a package attribute whenever it first loads (``from pyfast.tensor import
    Tensor`` in pf.nn does). That assignment is turned into the constructor here."""

    def __setattr__(self, name, value):
        if name == "tensor" and isinstance(value, _types.ModuleType):
            value = value.tensor
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
