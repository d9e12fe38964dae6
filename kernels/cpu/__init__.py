"""Numba CPU kernels of the numba backend (``pf.backends`` loads this namespace on "cpu").

Each family module holds @njit(cache=True) kernels; they compile on first use per dtype."""

from .gemm import matmul

FAMILIES = ("gemm",)

__all__ = ["FAMILIES", "matmul"]
