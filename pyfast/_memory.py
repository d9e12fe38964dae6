"""Process-level memory tuning for pyfast's own commands (demo, train, bench).

A training step allocates the same large activation and gradient arrays every step. With
glibc's defaults, arrays above its dynamic mmap threshold (at most 32 MB) get fresh pages
from the kernel each time, and freed heap memory above the trim threshold goes back to it,
so every step pays page faults again: about 1 ms per 4 MB touched, a fifth of a DenseNet
step on 2 cores. Raising both thresholds keeps freed memory in the process for reuse (the
resident size stays at the run's peak, as with a caching allocator). Library code never
calls this: it changes the whole process, which is the application's choice.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_applied = False


def keep_freed_memory(mmap_threshold=1 << 30):
    """Ask glibc to serve arrays up to ``mmap_threshold`` bytes from the heap and to keep
    freed memory. Returns True when applied (glibc only; elsewhere nothing changes)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, leave the defaults
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and \
        bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
