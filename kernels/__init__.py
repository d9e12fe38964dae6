"""Numba kernels of the numba backend: cpu/ (@njit) and cuda/ (numba-cuda).

Helpers shared by both live here; the kernels themselves are in the family modules."""


def flat_operand(x, xp):
    """2-D ``x`` (one unit stride, as pf.ops passes operands) as a flat 1-D view from its first
    element, plus its two element strides. A stride along an extent-1 axis is reported as 1,
    so that axis takes the unit-stride path. Passing operands flat keeps each kernel to one
    compiled specialisation per dtype, whatever the layout. ``xp`` is numpy or cupy."""
    item = x.itemsize
    rows, cols = x.shape
    s0 = 1 if rows == 1 else x.strides[0] // item
    s1 = 1 if cols == 1 else x.strides[1] // item
    if (s0 != 1 and s1 != 1) or x.strides[0] % item or x.strides[1] % item:
        x = xp.ascontiguousarray(x)  # not reached through pf.ops, which passes BLAS layouts
        s0, s1 = (cols, 1) if rows > 1 else (1, 1)
    span = (rows - 1) * s0 + (cols - 1) * s1 + 1
    return xp.lib.stride_tricks.as_strided(x, shape=(span,), strides=(item,)), s0, s1
