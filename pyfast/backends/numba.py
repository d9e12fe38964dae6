"""Loader of the numba backend: ``pyfast.kernels.cpu`` (@njit, parallel, cached) on the CPU,
``pyfast.kernels.cuda`` (numba-cuda) on the GPU."""

from pyfast.backends import Unavailable, get_num_threads


def load(device):
    try:
        import numba
    except ImportError as exc:
        raise Unavailable(f"numba is not installed ({exc})") from None
    if device == "cpu":
        from pyfast.kernels import cpu
        apply_threads(get_num_threads())
        return cpu
    try:
        from numba import cuda
        if not cuda.is_available():
            raise Unavailable("numba-cuda finds no CUDA device")
    except ImportError as exc:
        raise Unavailable(f"numba-cuda is not installed ({exc})") from None
    from pyfast.kernels import cuda as kernels
    return kernels


def apply_threads(n):
    import numba
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
