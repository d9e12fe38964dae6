"""The reference backend: NumPy on the CPU, CuPy on the GPU; short, float64-capable and
obviously right. It is the living specification every other backend is tested against."""

from pyfast.backends import Unavailable

from .conv import conv2d, conv2d_backward, conv_transpose2d
from .gemm import matmul
from .optim import adam_step, rmsprop_step, sgd_step
from .softmax_xent import bce_with_logits, mse, softmax, softmax_xent

FAMILIES = ("gemm", "conv", "softmax_xent", "optim")

from .elementwise import (add, dropout, leaky_relu, leaky_relu_backward, relu,  # noqa: E402
                          relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward)
FAMILIES += ("elementwise",)
from .norm import batch_norm, batch_norm_backward  # noqa: E402
from .pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d,  # noqa: E402
                   avg_pool2d_backward, max_pool2d, max_pool2d_backward)
from .resample import (upsample_bilinear2d, upsample_bilinear2d_backward,  # noqa: E402
                       upsample_nearest2d, upsample_nearest2d_backward)
FAMILIES += ("norm", "pool", "resample")
from .linear_xent import linear_xent  # noqa: E402
FAMILIES += ("linear_xent",)


def load(device):
    if device == "cuda":
        try:
            import cupy
        except ImportError as exc:
            raise Unavailable(f"cupy is not installed ({exc})") from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver, no device
            raise Unavailable(f"no CUDA device ({exc})") from None
        if count == 0:
            raise Unavailable("no CUDA device")
    import sys
    return sys.modules[__name__]


def apply_threads(n):
    """NumPy's BLAS threads are the user's to set (threadpoolctl); nothing to do."""
