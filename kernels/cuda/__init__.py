"""Numba CUDA kernels of the numba backend (``pf.backends`` loads this namespace on "cuda").

Kernels take cupy arrays (numpy arrays under NUMBA_ENABLE_CUDASIM=1) and launch on CuPy's
current stream; cupy itself is imported only when a kernel runs on cupy arrays."""

from .gemm import matmul
from .conv import conv2d, conv2d_backward, conv_transpose2d

FAMILIES = ("gemm", "conv")

__all__ = ["FAMILIES", "matmul", "conv2d", "conv2d_backward", "conv_transpose2d"]
