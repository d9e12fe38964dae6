"""Memory reuse: the caching allocator's scope, and glibc tuning for pyfast's commands.

A training step allocates the same large activation and gradient arrays every step. With
glibc's defaults, arrays above its dynamic mmap threshold get fresh pages from the kernel
each time and freed memory above the trim threshold goes back to it, so every step pays the
page faults again (about 1 ms per 4 MB touched: a fifth to a third of a DenseNet step on
2 cores).

pyfast therefore allocates its arrays from its own caching allocator (``pyfast._alloc``, a
NumPy memory handler): the pf.ops fronts, autograd ops and backward, ``Module.__call__``,
the optimizers and the DataLoader's batches run inside ``allocates``/``scope_enter`` and
every array NumPy creates there comes from (and goes back to) the cache. NumPy records the
handler in each array, so arrays leave the scope freely; code outside it keeps NumPy's
default, so the user's process is not changed. ``PYFAST_ALLOCATOR=0`` (read at import)
turns the scope into a no-op, for A/B measurements.

``keep_freed_memory`` is the older process-wide fix: it changes glibc's thresholds for the
whole process, which is the application's choice. pyfast's commands (demo, train, bench)
still apply it, so torch and whatever else runs there get the same warm pages in a
benchmark; library code never calls it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

__all__ = ["keep_freed_memory", "allocates", "scope", "scope_enter", "scope_exit", "ENABLED",
           "native"]

ENABLED = os.environ.get("PYFAST_ALLOCATOR", "1").strip().lower() not in ("0", "false", "no",
                                                                          "off")

native = None  # pyfast._alloc when the allocator is built and enabled
if ENABLED:
    try:
        from pyfast import _alloc as native
    except ImportError:  # not built (a source checkout): NumPy's default allocator
        native = None

if native is not None:
    scope_enter = native.enter     # -> token (None when the scope was already entered)
    scope_exit = native.exit       # (token) restores what scope_enter replaced

    def allocates(fn):
        """``fn`` run with pyfast's allocator installed (a vectorcall wrapper: ~0.1 us)."""
        return functools.update_wrapper(native.allocates(fn), fn)
else:
    def scope_enter():
        return None

    def scope_exit(token):
        return None

    def allocates(fn):
        return fn


@contextlib.contextmanager
def scope():
    """``with scope():`` the arrays NumPy allocates come from pyfast's allocator."""
    token = scope_enter()
    try:
        yield
    finally:
        scope_exit(token)


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
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, leave the defaults
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and \
        bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
