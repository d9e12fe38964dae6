"""Numba CUDA kernels of the numba backend (``pf.backends`` loads this namespace on "cuda").

Kernels take cupy arrays (numpy arrays under NUMBA_ENABLE_CUDASIM=1) and launch on CuPy's
current stream; cupy itself is imported only when a kernel runs on cupy arrays."""

from .gemm import matmul

FAMILIES = ("gemm",)

__all__ = ["FAMILIES", "matmul"]
