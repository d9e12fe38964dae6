"""pf.ops: the kernel contract. Array in, array out, no autograd.

Every function validates its arguments (ValueError/TypeError naming the argument and the
shapes seen), picks a backend (``backend=`` > ``pf.use_backend`` > ``PYFAST_BACKEND`` >
native, numba, reference) and calls it. Nothing else in pyfast talks to a backend.
"""

from .conv import (CONV_PATHS, conv2d, conv2d_backward, conv_transpose2d,
                   conv_transpose2d_backward, last_conv_path)
from .gemm import matmul
from .linear_xent import linear_cross_entropy
from .optim import adam_step, rmsprop_step, sgd_step
from .softmax_xent import (binary_cross_entropy_with_logits, log_softmax, mse_loss, softmax,
                           softmax_cross_entropy)

__all__ = ["matmul", "conv2d", "conv2d_backward", "conv_transpose2d",
           "conv_transpose2d_backward", "last_conv_path", "CONV_PATHS", "softmax",
           "log_softmax", "softmax_cross_entropy", "linear_cross_entropy",
           "binary_cross_entropy_with_logits", "mse_loss", "sgd_step", "rmsprop_step",
           "adam_step"]

from .elementwise import (add, dropout, leaky_relu, leaky_relu_backward, relu,  # noqa: E402
                          relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward)
__all__ += ["relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "sigmoid",
            "sigmoid_backward", "tanh", "tanh_backward", "dropout", "add"]
from .norm import batch_norm, batch_norm_backward  # noqa: E402
from .pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d,  # noqa: E402
                   avg_pool2d_backward, max_pool2d, max_pool2d_backward)
from .resample import upsample2d, upsample2d_backward  # noqa: E402
__all__ += ["batch_norm", "batch_norm_backward", "max_pool2d", "max_pool2d_backward",
            "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d",
            "adaptive_avg_pool2d_backward", "upsample2d", "upsample2d_backward"]


def _allocate_in_scope():
    """Every front allocates its outputs from pyfast's caching allocator (pyfast/_memory.py),
    here and in its own module (so calls between fronts and pickling by name see the same
    function). Runs last, so fronts added above are covered too."""
    import sys
    from pyfast._memory import allocates
    for name in __all__:
        fn = globals()[name]
        if not callable(fn):    # constants such as CONV_PATHS
            continue
        scoped = allocates(fn)
        globals()[name] = scoped
        home = sys.modules.get(getattr(fn, "__module__", ""), None)
        if home is not None and getattr(home, name, None) is fn:
            setattr(home, name, scoped)


_allocate_in_scope()
