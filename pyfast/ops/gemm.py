"""gemm family: out = act(op(a) @ op(b) + bias)."""

from pyfast import backends
from pyfast._arrays import (Output, as_array, check_ndim, check_shape, contiguous, float_dtype,
                            same_device, unit_stride_2d)

ACTIVATIONS = (None, "relu")


def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, activation=None, out=None,
           backend=None):
    """Matrix product of 2-D ``a`` and ``b`` (each optionally transposed), plus ``bias`` of
    shape (N,) added to every row, then ``activation`` ("relu" or None), fused in one pass
    over the output. Writes into and returns ``out`` when given."""
    a, b = as_array(a, "a"), as_array(b, "b")
    bias = None if bias is None else as_array(bias, "bias")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    check_ndim(a, 2, "a")
    check_ndim(b, 2, "b")
    dtype = float_dtype(a=a, b=b, bias=bias)
    device = same_device(a=a, b=b, bias=bias)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    (m, k), (k2, n) = op_a.shape, op_b.shape
    if k != k2:
        raise ValueError(
            f"matmul: inner dimensions differ: a{'.T' if trans_a else ''} is {m}x{k} "
            f"(a has shape {a.shape}), b{'.T' if trans_b else ''} is {k2}x{n} "
            f"(b has shape {b.shape})")
    if bias is not None:
        check_shape(bias, (n,), "bias", " (one value per output column)")
    dest = Output(out, (m, n), dtype, a, inputs=(a, b, bias))
    _, kernels = backends.select("gemm", device, backend)
    if 0 in (m, n, k):  # kernels need M, N, K >= 1; the reference covers the empty products
        kernels = backends.select("gemm", device, "reference")[1]
    kernels.matmul(unit_stride_2d(op_a), unit_stride_2d(op_b), dest.buffer, contiguous(bias),
                   activation == "relu")
    return dest.result()
