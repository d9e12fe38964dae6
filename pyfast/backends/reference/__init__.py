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
