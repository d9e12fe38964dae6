"""Numba CPU kernels of the numba backend (``pf.backends`` loads this namespace on "cpu").

Each family module holds @njit(cache=True) kernels; they compile on first use per dtype."""

from .gemm import matmul
from .conv import conv2d, conv2d_backward, conv_transpose2d
from .optim import adam_step, rmsprop_step, sgd_step
from .softmax_xent import bce_with_logits, mse, softmax, softmax_xent

FAMILIES = ("gemm", "conv", "softmax_xent", "optim")

__all__ = ["FAMILIES", "matmul", "conv2d", "conv2d_backward", "conv_transpose2d",
           "softmax", "softmax_xent", "bce_with_logits", "mse",
           "sgd_step", "rmsprop_step", "adam_step"]
