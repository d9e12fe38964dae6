"""Fuzz: batch norm (train/eval, optional affine and running stats, every needs), max/avg/
adaptive pooling and their gradients (ceil_mode, padding, dilation, count_include_pad,
divisor_override, unbatched), upsampling (nearest/bilinear, size or scale, align_corners)
and the elementwise kernels, against the float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyfast as pf
from pyfast.ops.pool import output_size
from tests.fuzz.common import (DTYPES, assert_close, backends_under_test, f64, fuzz_settings,
                               machine, randn, reference, rng_for, running_on)

pytestmark = pytest.mark.fuzz


def scalar_magnitude(want):
    return np.full(np.shape(want), np.max(np.abs(want), initial=0.0))


@pytest.mark.parametrize("backend", backends_under_test("norm"))
@fuzz_settings
@given(data=st.data())
def test_batch_norm(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    c = draw(st.integers(1, 6))
    spatial = tuple(draw(st.lists(st.integers(1, 7), max_size=2)))
    n = draw(st.integers(1, 5))
    training = draw(st.booleans())
    if training and n * int(np.prod(spatial, dtype=np.int64)) < 2:
        n = 2
    x = randn(rng, (n, c) + spatial, dtype, scale=3.0) + dtype(draw(st.sampled_from([0, 5])))
    weight = randn(rng, c, dtype) if draw(st.booleans()) else None
    bias = randn(rng, c, dtype) if draw(st.booleans()) else None
    stats = not training or draw(st.booleans())
    rm = randn(rng, c, dtype) if stats else None
    rv = rng.uniform(0.5, 2.0, c).astype(dtype) if stats else None
    kw = dict(training=training, momentum=draw(st.sampled_from([0.0, 0.1, 1.0])),
              eps=draw(st.sampled_from([1e-5, 1e-2])))
    rm64, rv64 = f64(rm, rv)
    with running_on(draw(machine(backend))):
        y, mean, invstd = pf.ops.batch_norm(x, weight, bias, rm, rv, backend=backend, **kw)
    want = pf.ops.batch_norm(*f64(x, weight, bias), rm64, rv64, backend="reference", **kw)
    terms = x.size // c
    what = f"batch_norm {x.shape} {kw}"
    # y is computed as x * scale + shift with scale = weight * invstd and shift = bias -
    # mean * scale (as torch does): its rounding scales with |x| * |scale|, not with |y|
    per_channel = (1, c) + (1,) * len(spatial)
    scale = np.abs(f64(weight) if weight is not None else 1.0) * want[2]
    y_mag = (np.abs(f64(x)) + np.abs(want[1]).reshape(per_channel)) * \
        np.reshape(scale, (-1,) + (1,) * len(spatial)) + \
        (0 if bias is None else np.abs(f64(bias)).reshape(per_channel))
    for name, got_, want_ in (("y", y, want[0]), ("mean", mean, want[1]),
                              ("invstd", invstd, want[2]), ("running_mean", rm, rm64),
                              ("running_var", rv, rv64)):
        if got_ is not None:
            mag = y_mag if name == "y" else scalar_magnitude(want_) + 1
            assert_close(got_, want_, dtype, terms=terms, magnitude=mag, what=f"{what} {name}")
    needs = tuple(v for v in ("x", "w", "b") if draw(st.booleans())) or ("x",)
    gy = randn(rng, x.shape, dtype)
    mean_, invstd_ = (m.astype(dtype) for m in want[1:])
    with running_on(draw(machine(backend))):
        grads = pf.ops.batch_norm_backward(gy, x, weight, mean_, invstd_, training=training,
                                           needs=needs, backend=backend)
    want_grads = reference(pf.ops.batch_norm_backward, gy, x, weight, mean_, invstd_,
                           training=training, needs=needs)
    for name, got_, want_ in zip("xwb", grads, want_grads):
        if name in needs:
            mag = scalar_magnitude(want_) + np.max(np.abs(f64(gy))) * float(
                np.max(np.abs(f64(invstd_)))) * (1 if weight is None else
                                                 float(np.max(np.abs(f64(weight))) + 1))
            assert_close(got_, want_, dtype, terms=terms, magnitude=mag,
                         what=f"{what} backward g{name}")
        else:
            assert got_ is None


@st.composite
def pool_geometry(draw, dilation=True):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.sampled_from([None, 1, 2, 3, (1, 2), (3, 1)]))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    s = kernel if stride is None else (stride if isinstance(stride, tuple) else (stride,) * 2)
    size = []
    for a in range(2):
        low = max(1, dil[a] * (kernel[a] - 1) + 1 - 2 * padding[a])
        size.append(low + draw(st.integers(0, 7)))
        assert output_size(size[-1], kernel[a], s[a], padding[a], dil[a], ceil_mode) >= 1
    lead = (draw(st.integers(1, 3)),) + ((draw(st.integers(1, 3)),) if draw(st.booleans()) else ())
    return lead + tuple(size), dict(kernel_size=kernel, stride=stride, padding=padding,
                                    ceil_mode=ceil_mode, **({"dilation": dil} if dilation else {}))


@pytest.mark.parametrize("backend", backends_under_test("pool"))
@fuzz_settings
@given(data=st.data())
def test_max_pool2d(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    shape, kw = draw(pool_geometry())
    x = randn(rng, shape, dtype)
    with running_on(draw(machine(backend))):
        y, idx = pf.ops.max_pool2d(x, backend=backend, **kw)
    want_y, want_idx = reference(pf.ops.max_pool2d, x, **kw)
    np.testing.assert_array_equal(y, want_y.astype(dtype), err_msg=f"max_pool2d {shape} {kw}")
    np.testing.assert_array_equal(idx, want_idx, err_msg=f"max_pool2d indices {shape} {kw}")
    gy = randn(rng, y.shape, dtype)
    with running_on(draw(machine(backend))):
        gx = pf.ops.max_pool2d_backward(gy, idx, shape, backend=backend)
    want = reference(pf.ops.max_pool2d_backward, gy, want_idx, shape)
    k = kw["kernel_size"]
    assert_close(gx, want, dtype, terms=k[0] * k[1], what=f"max_pool2d_backward {shape} {kw}",
                 magnitude=reference(pf.ops.max_pool2d_backward, np.abs(gy), want_idx, shape))


@pytest.mark.parametrize("backend", backends_under_test("pool"))
@fuzz_settings
@given(data=st.data())
def test_avg_pool2d(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    shape, kw = draw(pool_geometry(dilation=False))
    kw["count_include_pad"] = draw(st.booleans())
    kw["divisor_override"] = draw(st.sampled_from([None, None, 1, 3, 7]))
    x = randn(rng, shape, dtype)
    with running_on(draw(machine(backend))):
        y = pf.ops.avg_pool2d(x, backend=backend, **kw)
    k = kw["kernel_size"]
    terms = k[0] * k[1]
    what = f"avg_pool2d {shape} {kw}"
    want = reference(pf.ops.avg_pool2d, x, **kw)
    assert_close(y, want, dtype, terms=terms, what=what,
                 magnitude=reference(pf.ops.avg_pool2d, np.abs(x), **kw))
    gy = randn(rng, y.shape, dtype)
    with running_on(draw(machine(backend))):
        gx = pf.ops.avg_pool2d_backward(gy, shape, backend=backend, **kw)
    want = reference(pf.ops.avg_pool2d_backward, gy, shape, **kw)
    assert_close(gx, want, dtype, terms=terms, what=what + " backward",
                 magnitude=reference(pf.ops.avg_pool2d_backward, np.abs(gy), shape, **kw))


@pytest.mark.parametrize("backend", backends_under_test("pool"))
@fuzz_settings
@given(data=st.data())
def test_adaptive_avg_pool2d(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    lead = (draw(st.integers(1, 3)),) + ((draw(st.integers(1, 3)),) if draw(st.booleans()) else ())
    shape = lead + (draw(st.integers(1, 13)), draw(st.integers(1, 13)))
    out = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    x = randn(rng, shape, dtype)
    with running_on(draw(machine(backend))):
        y = pf.ops.adaptive_avg_pool2d(x, out, backend=backend)
    terms = (shape[-2] // out[0] + 2) * (shape[-1] // out[1] + 2)
    assert_close(y, reference(pf.ops.adaptive_avg_pool2d, x, out), dtype, terms=terms,
                 magnitude=reference(pf.ops.adaptive_avg_pool2d, np.abs(x), out),
                 what=f"adaptive_avg_pool2d {shape} -> {out}")
    gy = randn(rng, y.shape, dtype)
    with running_on(draw(machine(backend))):
        gx = pf.ops.adaptive_avg_pool2d_backward(gy, shape, backend=backend)
    assert_close(gx, reference(pf.ops.adaptive_avg_pool2d_backward, gy, shape), dtype,
                 terms=terms, what=f"adaptive_avg_pool2d_backward {shape} -> {out}",
                 magnitude=reference(pf.ops.adaptive_avg_pool2d_backward, np.abs(gy), shape))


@pytest.mark.parametrize("backend", backends_under_test("resample"))
@fuzz_settings
@given(data=st.data())
def test_upsample2d(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 9)),
             draw(st.integers(1, 9)))
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    align = mode == "bilinear" and draw(st.booleans())
    if draw(st.booleans()):
        size = (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
        sizing, back = dict(size=size), {}
    else:
        scale = (draw(st.sampled_from([1, 2, 3, 4])), draw(st.sampled_from([1, 2, 3])))
        sizing = back = dict(scale_factor=scale)
    x = randn(rng, shape, dtype)
    kw = dict(mode=mode, align_corners=align)
    with running_on(draw(machine(backend))):
        y = pf.ops.upsample2d(x, backend=backend, **sizing, **kw)
    what = f"upsample2d {shape} {sizing} {kw}"
    want = reference(pf.ops.upsample2d, x, **sizing, **kw)
    # bilinear source coordinates are computed in the dtype (as torch does), so they are off
    # by about eps * size, which moves the result by that times the neighbours' difference
    coords = max(shape[2:]) if mode == "bilinear" else 0
    assert_close(y, want, dtype, terms=4, what=what,
                 magnitude=reference(pf.ops.upsample2d, np.abs(x), **sizing, **kw)
                 + coords * np.max(np.abs(f64(x))))
    gy = randn(rng, y.shape, dtype)
    with running_on(draw(machine(backend))):
        gx = pf.ops.upsample2d_backward(gy, shape, backend=backend, **back, **kw)
    want = reference(pf.ops.upsample2d_backward, gy, shape, **back, **kw)
    terms = 4 * (y.shape[2] // shape[2] + 2) * (y.shape[3] // shape[3] + 2)
    mag = reference(pf.ops.upsample2d_backward, np.abs(gy), shape, **back, **kw)
    assert_close(gx, want, dtype, terms=terms, what=what + " backward",
                 magnitude=mag * (1 + coords))


UNARY = ["relu", "leaky_relu", "sigmoid", "tanh"]


@pytest.mark.parametrize("backend", backends_under_test("elementwise"))
@fuzz_settings
@given(data=st.data())
def test_elementwise(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    shape = tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=3)))
    if draw(st.booleans()):   # large enough for the parallel paths
        shape = shape[:1] + (draw(st.integers(2000, 9000)),)
    name = draw(st.sampled_from(UNARY + ["dropout", "add"]))
    x, other = randn(rng, shape, dtype, scale=4.0), randn(rng, shape, dtype)
    with running_on(draw(machine(backend))):
        if name == "dropout":
            p, seed = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])), draw(st.integers(0, 2**64 - 1))
            got = [pf.ops.dropout(x, p, seed, backend=backend)]
            want = [reference(pf.ops.dropout, x, p, seed)]
        elif name == "add":
            got = [pf.ops.add(x, other, backend=backend)]
            want = [reference(pf.ops.add, x, other)]
        else:
            kw = {"negative_slope": draw(st.sampled_from([0.01, 0.2, 1.5]))} \
                if name == "leaky_relu" else {}
            fwd, bwd = getattr(pf.ops, name), getattr(pf.ops, name + "_backward")
            y = fwd(x, backend=backend, **kw)
            saved = x if name == "leaky_relu" else y   # what the backward reads, both sides
            got = [y, bwd(other, saved, backend=backend, **kw)]
            want = [reference(fwd, x, **kw), reference(bwd, other, saved, **kw)]
    for i, (g, w) in enumerate(zip(got, want)):
        # a backward multiplies gy by 1 - y**2 or y * (1 - y): the terms' size, not the
        # (cancelled) result's, bounds its rounding
        mag = np.abs(w) if i == 0 else np.abs(f64(other)) * (1 + np.abs(f64(saved))) ** 2
        assert_close(g, w, dtype, terms=4, magnitude=mag, what=f"{name} {shape} output {i}")
