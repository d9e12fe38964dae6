"""pf.ops: the kernel contract. Array in, array out, no autograd.

Every function validates its arguments (ValueError/TypeError naming the argument and the
shapes seen), picks a backend (``backend=`` > ``pf.use_backend`` > ``PYFAST_BACKEND`` >
native, numba, reference) and calls it. Nothing else in pyfast talks to a backend.
"""

from .gemm import matmul

__all__ = ["matmul"]
