"""pyfast: hand-written C++/CUDA and Numba kernels for training neural networks.

``import pyfast`` loads NumPy and pyfast's own Python modules only; numba, cupy, torch and
the native extensions load the first time a kernel needs them.
"""

from . import backends, ops
from ._random import manual_seed
from ._version import __version__
from .backends import get_num_threads, set_num_threads, use_backend

__all__ = ["__version__", "backends", "ops", "use_backend", "set_num_threads",
           "get_num_threads", "manual_seed"]

from . import nn  # noqa: E402
from .tensor import (Tensor, cat, enable_grad, from_dlpack, no_grad, set_grad_enabled,  # noqa: E402
                     stack, tensor)

__all__ += ["Tensor", "tensor", "from_dlpack", "cat", "stack", "no_grad", "enable_grad",
            "set_grad_enabled", "nn"]

from . import optim, train  # noqa: E402
from .io import load, save  # noqa: E402

__all__ += ["optim", "train", "save", "load"]

from . import data  # noqa: E402  (NumPy only; scikit-learn and CuPy load on first use)
__all__ += ["data"]

from . import models  # noqa: E402  (pf.nn layers only)
__all__ += ["models"]

from . import distributed  # noqa: E402  (mpi4py loads in distributed.init())
__all__ += ["distributed"]

from . import memory  # noqa: E402  (pf.memory.stats / empty_cache: the caching allocator)
__all__ += ["memory"]
