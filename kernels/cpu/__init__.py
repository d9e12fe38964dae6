"""Numba CPU kernels of the numba backend (``pf.backends`` loads this namespace on "cpu").

Each family module holds @njit(cache=True) kernels; they compile on first use per dtype."""

from .gemm import matmul
from .conv import conv2d, conv2d_backward, conv_transpose2d

FAMILIES = ("gemm", "conv")

__all__ = ["FAMILIES", "matmul", "conv2d", "conv2d_backward", "conv_transpose2d"]
