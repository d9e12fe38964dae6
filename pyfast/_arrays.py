"""Arrays at the boundary: what comes in (numpy, cupy, anything with ``__dlpack__``), on
which device it lives, and the checks every ``pf.ops`` function shares.

Nothing here imports cupy unless a cupy array (or a CUDA DLPack capsule) is actually seen.
"""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_DLPACK_CPU, _DLPACK_CUDA, _DLPACK_CUDA_HOST, _DLPACK_CUDA_MANAGED = 1, 2, 3, 13


def is_cupy(x):
    return type(x).__module__.partition(".")[0] == "cupy"


def array_module(x):
    """numpy for numpy arrays, cupy for cupy arrays."""
    if isinstance(x, np.ndarray):
        return np
    import cupy
    return cupy


def device_of(x):
    return "cpu" if isinstance(x, np.ndarray) else "cuda"


# ---- moving arrays between devices ----------------------------------------------------
# Device names are "cpu", "cuda" (CuPy's current device) and "cuda:N". Tensors, modules,
# loaders, the training loops and the command line all move data with these, so a
# "cuda:1" means the same everywhere.

def normalise_device(device):
    """``device`` as a string after checking it names a device; None stays None."""
    if device is None:
        return None
    name = str(device)
    kind = name.partition(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    return name


def device_name(array):
    """Where ``array`` lives: "cpu" or "cuda:N"."""
    return "cpu" if isinstance(array, np.ndarray) else f"cuda:{array.device.id}"


def on_device(array, device):
    """Whether ``array`` already lives on ``device`` ('cpu', 'cuda' = any GPU, 'cuda:N')."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return isinstance(array, np.ndarray)
    return is_cupy(array) and (not index or array.device.id == int(index))


def to_device(array, device):
    """``array`` (numpy or cupy) on ``device`` ('cpu', 'cuda', 'cuda:N'); the array itself
    when already there. Anything else passes through: batches may carry other objects."""
    if not (isinstance(array, np.ndarray) or is_cupy(array)):
        return array
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return to_host(array)
    try:
        import cupy
    except ImportError as exc:
        raise RuntimeError(f"moving to {device} needs CuPy, which is not installed ({exc})") \
            from None
    dev = cupy.cuda.Device(int(index)) if index else cupy.cuda.Device()
    if is_cupy(array) and array.device.id == dev.id:
        return array
    with dev:
        return cupy.asarray(array)


def to_host(x):
    """``x`` as a numpy array: itself when it is one, a copy when it lives on the GPU, and
    ``np.asarray(x)`` for anything else (a Tensor converts itself)."""
    if is_cupy(x):
        return x.get()
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def describe(x):
    """A short 'what was given' for error messages."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def as_array(x, name):
    """Return ``x`` as a numpy or cupy array without copying.

    numpy and cupy arrays pass through; other objects with ``__dlpack__`` (torch, jax, ...)
    are wrapped zero-copy; anything else is a TypeError naming the argument."""
    if isinstance(x, np.ndarray) or is_cupy(x) and hasattr(x, "__cuda_array_interface__"):
        return x
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        kind = int(x.__dlpack_device__()[0])
        if kind in (_DLPACK_CPU, _DLPACK_CUDA_HOST):
            return np.from_dlpack(x)
        if kind in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED):
            import cupy
            return cupy.from_dlpack(x)
        raise TypeError(f"{name}: DLPack device type {kind} is not supported (cpu and cuda are)")
    raise TypeError(f"{name} must be a numpy or cupy array or an object with __dlpack__, "
                    f"got {describe(x)}")


def float_dtype(**arrays):
    """The one float dtype (float32 or float64) shared by all the non-None ``arrays``."""
    dtype, first = None, None
    for name, x in arrays.items():
        if x is None:
            continue
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {describe(x)}")
        if dtype is None:
            dtype, first = x.dtype, name
        elif x.dtype != dtype:
            raise TypeError(f"{name} is {x.dtype} but {first} is {dtype}; "
                            f"pass both as float32 or both as float64")
    return dtype


def same_device(**arrays):
    """The one device ("cpu" or "cuda") all the non-None ``arrays`` live on."""
    device, first = None, None
    for name, x in arrays.items():
        if x is None:
            continue
        d = device_of(x)
        if device is None:
            device, first = d, name
        elif d != device:
            raise ValueError(f"{name} is on {d} but {first} is on {device}")
        elif d == "cuda" and x.device != arrays[first].device:
            raise ValueError(f"{name} is on {x.device} but {first} is on {arrays[first].device}")
    return device


def pair(value, name, *, minimum=None, number=False):
    """An (h, w) argument: an int, or a tuple or list of two, as a tuple of two ints (floats
    with ``number``). TypeError for anything else, ValueError below ``minimum``."""
    kind = numbers.Real if number else numbers.Integral
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, kind) for v in items):
        what = "a number or a pair of numbers" if number else "an int or a pair of ints"
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if minimum is not None and any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return tuple(float(v) for v in items) if number else (int(items[0]), int(items[1]))


def check_ndim(x, ndim, name):
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")


def check_shape(x, shape, name, why=""):
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}{why}, got {tuple(x.shape)}")


def contiguous(x):
    """``x`` itself when C-contiguous (or None), else a C-contiguous copy."""
    if x is None or x.flags.c_contiguous:
        return x
    return x.copy()


# ---- memory format of 4-D (N, C, H, W) arrays ------------------------------------------
# As in torch, the shape of an image batch is always NCHW; its memory is either C-contiguous
# ("contiguous") or channels-last: an NCHW-shaped view of NHWC memory, i.e. x.transpose(0, 2,
# 3, 1) is C-contiguous. Kernels that have an NHWC path take channels-last arrays as they are
# and return their result in the memory format of their input; others see a contiguous copy.

CONTIGUOUS, CHANNELS_LAST = "contiguous", "channels_last"


def is_channels_last(x):
    """True when ``x`` is a 4-D array whose memory is NHWC (and not also C-contiguous, as a
    1x1 image or a single channel is: such arrays count as contiguous)."""
    if x.ndim != 4 or x.flags.c_contiguous:
        return False
    n, c, h, w = x.shape
    item = x.itemsize
    sn, sc, sh, sw = x.strides
    return ((c == 1 or sc == item) and (w == 1 or sw == c * item)
            and (h == 1 or sh == w * c * item) and (n == 1 or sn == h * w * c * item))


def memory_format(x):
    """``CHANNELS_LAST`` for a channels-last 4-D array, else ``CONTIGUOUS``."""
    return CHANNELS_LAST if is_channels_last(x) else CONTIGUOUS


def to_memory_format(x, fmt):
    """``x`` itself when it already has memory format ``fmt`` and is dense, else a copy that
    has it (NCHW-shaped either way)."""
    if fmt == CHANNELS_LAST:
        if x.ndim != 4:
            raise ValueError(f"channels_last needs a 4-D (N, C, H, W) array, got shape "
                             f"{tuple(x.shape)}")
        if is_channels_last(x) or _nhwc_is_nchw(x):
            return x
        xp = array_module(x)
        return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if fmt == CONTIGUOUS:
        return contiguous(x)
    raise ValueError(f"memory_format must be {CONTIGUOUS!r} or {CHANNELS_LAST!r}, got {fmt!r}")


def empty_like_format(shape, dtype, like):
    """A fresh NCHW-shaped array of ``shape`` in the memory format of ``like``."""
    layout = CHANNELS_LAST if len(shape) == 4 and is_channels_last(like) else None
    return _empty(array_module(like), shape, dtype, layout)


def _empty(xp, shape, dtype, layout):
    if layout == CHANNELS_LAST:
        n, c, h, w = shape
        return xp.empty((n, h, w, c), dtype).transpose(0, 3, 1, 2)
    return xp.empty(shape, dtype)


def _nhwc_is_nchw(x):
    """A C-contiguous 4-D array whose NHWC and NCHW memory coincide (one channel or one
    pixel per image)."""
    return x.ndim == 4 and x.flags.c_contiguous and (x.shape[1] == 1 or x.shape[2] * x.shape[3] == 1)


def unit_stride_2d(x):
    """``x`` if it is row- or column-major with a leading dimension (as BLAS takes it), else
    a C-contiguous copy. Slices such as ``big[:, :100]`` and transposes stay views."""
    s0, s1 = x.strides
    item = x.itemsize
    rows, cols = x.shape
    if (s1 == item or cols == 1) and s0 >= max(cols, 1) * item:
        return x
    if (s0 == item or rows == 1) and s1 >= max(rows, 1) * item:
        return x
    return array_module(x).ascontiguousarray(x)


class Output:
    """Where a kernel writes: the caller's ``out`` when the kernel can write it in place,
    else a fresh buffer (copied into ``out`` by ``result``). The kernel writes C-contiguous
    memory, or NHWC memory of an NCHW-shaped array when ``channels_last``."""

    def __init__(self, out, shape, dtype, like, name="out", inputs=(), channels_last=False):
        xp = array_module(like)
        self.user = out
        layout = CHANNELS_LAST if channels_last and len(shape) == 4 else None
        if out is None:
            self.target = None
            self.buffer = _empty(xp, shape, dtype, layout)
            return
        target = as_array(out, name)
        if device_of(target) != device_of(like):
            raise ValueError(f"{name} is on {device_of(target)} but the inputs are on "
                             f"{device_of(like)}")
        if target.dtype != dtype:
            raise TypeError(f"{name} must be {dtype}, got {describe(target)}")
        check_shape(target, shape, name)
        if isinstance(target, np.ndarray) and not target.flags.writeable:
            raise ValueError(f"{name} is read-only")
        self.target = target
        overlaps = any(x is not None and xp.may_share_memory(target, x) for x in inputs)
        in_layout = (target.flags.c_contiguous if layout is None
                     else is_channels_last(target) or _nhwc_is_nchw(target))
        self.buffer = target if in_layout and not overlaps else _empty(xp, shape, dtype, layout)

    def result(self):
        if self.target is None:
            return self.buffer
        if self.buffer is not self.target:
            self.target[...] = self.buffer
        return self.user
