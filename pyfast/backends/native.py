"""Loader of the native backend: ``pyfast._C`` (C++/OpenMP) on the CPU, ``pyfast._cuda``
(CUDA C++) on the GPU. CUDA kernels run on CuPy's current stream."""

import functools

from pyfast.backends import Unavailable, get_num_threads


def load(device):
    if device == "cpu":
        try:
            from pyfast import _C
        except ImportError as exc:
            raise Unavailable(f"the extension pyfast._C is not built ({exc})") from None
        _C.set_num_threads(get_num_threads())
        return _C
    try:
        from pyfast import _cuda
    except ImportError as exc:
        raise Unavailable(f"the extension pyfast._cuda is not built ({exc})") from None
    if _cuda.device_count() == 0:
        raise Unavailable(f"no CUDA device ({_cuda.device_status()})")
    try:
        import cupy
    except ImportError as exc:
        raise Unavailable(f"cupy is not installed ({exc})") from None
    return _OnCurrentStream(_cuda, lambda: cupy.cuda.get_current_stream().ptr)


class _OnCurrentStream:
    """The CUDA extension's kernels, each called with ``stream=`` CuPy's current stream."""

    def __init__(self, module, stream):
        self.FAMILIES = tuple(module.FAMILIES)
        self._module, self._stream = module, stream

    def __getattr__(self, name):
        fn = getattr(self._module, name)

        @functools.wraps(fn)
        def on_stream(*args, **kwargs):
            return fn(*args, stream=self._stream(), **kwargs)

        setattr(self, name, on_stream)
        return on_stream


def apply_threads(n):
    from pyfast import _C
    _C.set_num_threads(n)
