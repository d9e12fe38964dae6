"""Fuzz: matmul (every transpose, bias, activation, out=) and conv2d forward/backward and
conv_transpose2d forward/backward over random geometry (groups, dilation, rectangular
kernels, strides, padding, 1-pixel images) against the float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyfast as pf
from tests.fuzz.common import (DTYPES, assert_close, backends_under_test, f64, fuzz_settings,
                               machine, randn, reference, rng_for, running_on)

pytestmark = pytest.mark.fuzz


@pytest.mark.parametrize("backend", backends_under_test("gemm"))
@fuzz_settings
@given(data=st.data())
def test_matmul(backend, data):
    draw = data.draw
    dtype = draw(DTYPES)
    m, n, k = (draw(st.integers(1, 80)) for _ in range(3))
    trans_a, trans_b = draw(st.booleans()), draw(st.booleans())
    use_bias, activation = draw(st.booleans()), draw(st.sampled_from([None, "relu"]))
    use_out = draw(st.booleans())
    rng = rng_for(draw)
    a = randn(rng, (k, m) if trans_a else (m, k), dtype)
    b = randn(rng, (n, k) if trans_b else (k, n), dtype)
    bias = randn(rng, n, dtype) if use_bias else None
    out = np.full((m, n), np.nan, dtype) if use_out else None
    kw = dict(trans_a=trans_a, trans_b=trans_b, bias=bias, activation=activation)
    with running_on(draw(machine(backend))):
        got = pf.ops.matmul(a, b, out=out, backend=backend, **kw)
    if use_out:
        assert got is out
    want = reference(pf.ops.matmul, a, b, **kw)
    opa, opb = f64(a.T if trans_a else a, b.T if trans_b else b)
    mag = np.abs(opa) @ np.abs(opb) + (0 if bias is None else np.abs(f64(bias)))
    assert_close(got, want, dtype, terms=k, magnitude=mag, what="matmul")


@pytest.mark.parametrize("backend", [p for p in backends_under_test("conv")
                                     if p.values[0] == "native"])
@fuzz_settings
@given(data=st.data())
def test_winograd_every_pass(backend, data):
    """The Winograd path forced on random 3x3 stride-1 layers (ragged tiles, padding 0-2,
    channel counts that fill no vector, blocks of tiles that end mid-vector), every pass,
    within its per-layer bound (tests/kernels/test_winograd.py)."""
    from tests.kernels.test_winograd import KAPPA
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    n, c, k = draw(st.integers(1, 3)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
    p = draw(st.integers(0, 2))
    h, w_ = (draw(st.integers(max(1, 3 - 2 * p), 40)) for _ in range(2))
    x = randn(rng, (n, c, h, w_), dtype)
    w = randn(rng, (k, c, 3, 3), dtype)
    b = randn(rng, k, dtype) if draw(st.booleans()) else None
    gy = randn(rng, (n, k, h + 2 * p - 2, w_ + 2 * p - 2), dtype)
    with running_on(draw(machine(backend))):
        y = pf.ops.conv2d(x, w, b, padding=p, algo="winograd", backend=backend)
        grads = pf.ops.conv2d_backward(gy, x, w, padding=p, needs=("x", "w"), algo="winograd",
                                       backend=backend)
    eps = np.finfo(dtype).eps
    checks = [(y, reference(pf.ops.conv2d, x, w, b, padding=p),
               reference(pf.ops.conv2d, np.abs(x), np.abs(w), None if b is None else np.abs(b),
                         padding=p), "forward")]
    want = reference(pf.ops.conv2d_backward, gy, x, w, padding=p, needs=("x", "w"))
    mag = reference(pf.ops.conv2d_backward, np.abs(gy), np.abs(x), np.abs(w), padding=p,
                    needs=("x", "w"))
    checks += [(grads[i], want[i], mag[i], what) for i, what in enumerate(("gx", "gw"))]
    for got, want_, mag_, what in checks:
        err = np.abs(got.astype(np.float64) - want_).max()
        bound = KAPPA * eps * mag_.max() + np.finfo(dtype).tiny
        assert err <= bound, f"winograd {what} {(n, c, k, h, w_, p)}: {err:.3g} > {bound:.3g}"


@st.composite
def conv_geometry(draw, max_channels=4):
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = [draw(st.integers(0, 3)), draw(st.integers(0, 3))]
    one_pixel = draw(st.booleans())
    size = []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        if one_pixel:   # pad enough for a 1x1 image to give an output
            padding[axis] = max(padding[axis], (span - 1 + 1) // 2)
            size.append(1)
        else:
            size.append(max(1, span - 2 * padding[axis]) + draw(st.integers(0, 8)))
    return dict(n=draw(st.integers(1, 3)), groups=groups, cg=cg, kg=kg, kernel=kernel,
                stride=stride, dilation=dilation, padding=tuple(padding), size=tuple(size))


def conv_terms(g):
    return g["cg"] * g["kernel"][0] * g["kernel"][1]


@pytest.mark.parametrize("backend", backends_under_test("conv"))
@fuzz_settings
@given(data=st.data())
def test_conv2d_forward(backend, data):
    draw = data.draw
    g, dtype, rng = draw(conv_geometry()), draw(DTYPES), rng_for(draw)
    use_bias, activation = draw(st.booleans()), draw(st.sampled_from([None, "relu"]))
    x = randn(rng, (g["n"], g["cg"] * g["groups"]) + g["size"], dtype)
    w = randn(rng, (g["kg"] * g["groups"], g["cg"]) + g["kernel"], dtype)
    b = randn(rng, g["kg"] * g["groups"], dtype) if use_bias else None
    kw = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"],
              groups=g["groups"])
    with running_on(draw(machine(backend))):
        got = pf.ops.conv2d(x, w, b, activation=activation, backend=backend, **kw)
    want = reference(pf.ops.conv2d, x, w, b, activation=activation, **kw)
    mag = reference(pf.ops.conv2d, np.abs(x), np.abs(w), None if b is None else np.abs(b), **kw)
    assert_close(got, want, dtype, terms=conv_terms(g), magnitude=mag, what=f"conv2d {g}")


@pytest.mark.parametrize("backend", backends_under_test("conv"))
@fuzz_settings
@given(data=st.data())
def test_conv2d_backward(backend, data):
    draw = data.draw
    g, dtype, rng = draw(conv_geometry()), draw(DTYPES), rng_for(draw)
    needs = tuple(v for v in ("x", "w", "b") if draw(st.booleans())) or ("x",)
    x = randn(rng, (g["n"], g["cg"] * g["groups"]) + g["size"], dtype)
    w = randn(rng, (g["kg"] * g["groups"], g["cg"]) + g["kernel"], dtype)
    kw = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"],
              groups=g["groups"])
    gy = randn(rng, pf.ops.conv2d(x, w, backend="reference", **kw).shape, dtype)
    with running_on(draw(machine(backend))):
        got = pf.ops.conv2d_backward(gy, x, w, needs=needs, backend=backend, **kw)
    want = reference(pf.ops.conv2d_backward, gy, x, w, needs=needs, **kw)
    mag = reference(pf.ops.conv2d_backward, np.abs(gy), np.abs(x), np.abs(w), needs=needs, **kw)
    terms = max(conv_terms(g), g["kg"] * g["kernel"][0] * g["kernel"][1], gy[:, 0].size)
    for name, got_, want_, mag_ in zip("xwb", got, want, mag):
        if name in needs:
            assert_close(got_, want_, dtype, terms=terms, magnitude=mag_,
                         what=f"conv2d_backward g{name} {g}")
        else:
            assert got_ is None


@st.composite
def transposed_geometry(draw):
    g = draw(conv_geometry())
    # output_padding must be below stride or dilation along its axis
    g["output_padding"] = tuple(draw(st.integers(0, max(s, d) - 1))
                                for s, d in zip(g["stride"], g["dilation"]))
    # the transposed output must be at least 1x1
    for axis in range(2):
        span = g["dilation"][axis] * (g["kernel"][axis] - 1) + g["output_padding"][axis] + 1
        size = g["size"][axis]
        if (size - 1) * g["stride"][axis] + span - 2 * g["padding"][axis] < 1:
            g["padding"] = tuple(0 if a == axis else p for a, p in enumerate(g["padding"]))
    return g


@pytest.mark.parametrize("backend", backends_under_test("conv"))
@fuzz_settings
@given(data=st.data())
def test_conv_transpose2d(backend, data):
    draw = data.draw
    g, dtype, rng = draw(transposed_geometry()), draw(DTYPES), rng_for(draw)
    use_bias = draw(st.booleans())
    needs = tuple(v for v in ("x", "w", "b") if draw(st.booleans())) or ("w",)
    cin, cout = g["cg"] * g["groups"], g["kg"] * g["groups"]
    x = randn(rng, (g["n"], cin) + g["size"], dtype)
    w = randn(rng, (cin, g["kg"]) + g["kernel"], dtype)
    b = randn(rng, cout, dtype) if use_bias else None
    kw = dict(stride=g["stride"], padding=g["padding"], output_padding=g["output_padding"],
              dilation=g["dilation"], groups=g["groups"])
    want = reference(pf.ops.conv_transpose2d, x, w, b, **kw)
    gy = randn(rng, want.shape, dtype)
    with running_on(draw(machine(backend))):
        got = pf.ops.conv_transpose2d(x, w, b, backend=backend, **kw)
        grads = pf.ops.conv_transpose2d_backward(gy, x, w, needs=needs, backend=backend, **kw)
    mag = reference(pf.ops.conv_transpose2d, np.abs(x), np.abs(w),
                    None if b is None else np.abs(b), **kw)
    terms = g["cg"] * g["kernel"][0] * g["kernel"][1]
    assert_close(got, want, dtype, terms=terms, magnitude=mag, what=f"conv_transpose2d {g}")
    want_grads = reference(pf.ops.conv_transpose2d_backward, gy, x, w, needs=needs, **kw)
    mags = reference(pf.ops.conv_transpose2d_backward, np.abs(gy), np.abs(x), np.abs(w),
                     needs=needs, **kw)
    terms = max(terms, g["kg"] * g["kernel"][0] * g["kernel"][1], x[:, 0].size, gy[:, 0].size)
    for name, got_, want_, mag_ in zip("xwb", grads, want_grads, mags):
        if name in needs:
            assert_close(got_, want_, dtype, terms=terms, magnitude=mag_,
                         what=f"conv_transpose2d_backward g{name} {g}")
        else:
            assert got_ is None
