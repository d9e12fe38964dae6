"""Argument checks shared by the model constructors: a wrong size fails at construction,
naming the argument, not deep inside a forward pass."""

from __future__ import annotations

import numbers

__all__ = ["check_int", "check_power_of_two_multiple"]


def check_int(value, name, minimum=1, owner="model"):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_power_of_two_multiple(size, times, name, owner):
    """``size`` must be divisible by 2**times (each stride-2 stage halves it exactly)."""
    size = check_int(size, name, 1, owner)
    if size % (1 << times):
        raise ValueError(f"{owner}: {name} must be divisible by 2**{times} = {1 << times}, "
                         f"got {size}")
    return size
