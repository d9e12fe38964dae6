"""pf.memory: the caching allocator pyfast's arrays come from (see pyfast/_memory.py).

Freed arrays of pyfast's steps stay in the allocator's cache and serve the next step, so a
steady-state training step takes no memory from the system (no page faults). The cache
grows to the step's peak and stays there until ``empty_cache()``.

    pf.memory.stats()        # {"held": bytes, "in_use": bytes, "peak": bytes}
    pf.memory.empty_cache()  # gives the cached (free) blocks back to the system

``held`` counts every block the allocator holds (in use or cached), ``in_use`` the blocks
live arrays own now, ``peak`` the most ``in_use`` has been. Block sizes are the requests
rounded up to their size class (64-byte multiples up to 1 KiB, then four classes per power
of two). With ``PYFAST_ALLOCATOR=0`` or without the native extension, NumPy's allocator is
used and all three are 0.
"""

from __future__ import annotations

from pyfast import _memory

__all__ = ["stats", "empty_cache", "enabled"]


def enabled():
    """True when pyfast's arrays come from the caching allocator."""
    return _memory.native is not None


def stats():
    """{"held", "in_use", "peak"}: bytes held from the system, in use by arrays, and the
    most ever in use."""
    if _memory.native is None:
        return {"held": 0, "in_use": 0, "peak": 0}
    return _memory.native.stats()


def empty_cache():
    """Give every cached block back to the system (arrays alive keep theirs). Returns None,
    as torch.cuda.empty_cache does; ``stats()["held"]`` shows what remains."""
    if _memory.native is not None:
        _memory.native.empty_cache()
