"""conv family: every backend against the float64 reference (with a rounding-error bound, so
a dropped term fails while summation order does not), every native CPU path forced on the
shapes it takes (and the path each shape takes by default asserted where a test means to
cover it), channels-last arrays, the reference against torch, finite differences, and the
argument checks of pf.ops.conv2d / conv2d_backward / conv_transpose2d."""

import os

import numpy as np
import pytest

import pyfast as pf
from pyfast._arrays import CHANNELS_LAST, is_channels_last, to_memory_format
from tests.conftest import backend_params

# (name, N, C, H, W, K, kh, kw, stride, padding, dilation, groups)
CASES = [
    ("1x1", 2, 8, 7, 9, 5, 1, 1, 1, 0, 1, 1),
    ("3x3", 2, 3, 11, 10, 4, 3, 3, 1, 1, 1, 1),
    ("3x3/2-odd", 1, 5, 13, 9, 7, 3, 3, 2, 1, 1, 1),
    ("5x5", 2, 4, 12, 12, 3, 5, 5, 1, 2, 1, 1),
    ("7x7/2-stem", 1, 3, 23, 21, 8, 7, 7, 2, 3, 1, 1),
    ("3x5-rect", 2, 3, 9, 14, 4, 3, 5, 1, (1, 2), 1, 1),
    ("groups2", 2, 4, 8, 8, 6, 3, 3, 1, 1, 1, 2),
    ("groups4/2", 1, 8, 10, 11, 8, 3, 3, 2, 1, 1, 4),
    ("depthwise", 2, 6, 9, 9, 6, 3, 3, 1, 1, 1, 6),
    ("dilation2", 2, 3, 12, 11, 4, 3, 3, 1, 2, 2, 1),
    ("stride3-nopad", 1, 2, 17, 16, 3, 4, 2, 3, 0, 1, 1),
    ("batch1-wide", 1, 16, 6, 6, 32, 3, 3, 1, 1, 1, 1),
]
CASE_IDS = [c[0] for c in CASES]

# (name, N, Cin, H, W, Cout, kh, kw, stride, padding, output_padding, dilation, groups)
TRANSPOSED = [
    ("2x2/2-unet", 2, 6, 5, 7, 4, 2, 2, 2, 0, 0, 1, 1),
    ("4x4/2-dcgan", 2, 5, 4, 4, 3, 4, 4, 2, 1, 0, 1, 1),
    ("3x3/2-outpad", 1, 4, 6, 5, 3, 3, 3, 2, 1, 1, 1, 1),
    ("groups2", 2, 4, 5, 5, 6, 3, 3, 2, 1, 1, 1, 2),
    ("dilation2-outpad", 1, 3, 6, 6, 2, 3, 3, 1, 1, 1, 2, 1),
    ("1x1", 2, 3, 4, 5, 2, 1, 1, 1, 0, 0, 1, 1),
]
TRANSPOSED_IDS = [c[0] for c in TRANSPOSED]


def conv_case(case, dtype, seed):
    _, n, c, h, w, k, kh, kw, s, p, d, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    return x, wt, b, dict(stride=s, padding=p, dilation=d, groups=g)


def transposed_case(case, dtype, seed):
    _, n, cin, h, w, cout, kh, kw, s, p, op, d, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    wt = rng.standard_normal((cin, cout // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    return x, wt, b, dict(stride=s, padding=p, output_padding=op, dilation=d, groups=g)


def f64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def assert_within(got, want, bound, what):
    """|got - want| <= bound elementwise; bound is a rounding-error bound."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    bad = np.abs(got - want) > bound
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} elements off; worst "
                           f"{np.abs(got - want).max():.3g} (bound there "
                           f"{bound.flat[np.argmax(np.abs(got - want))]:.3g})")


def rounding_bound(dtype, terms, magnitude):
    """A sum of `terms` products in any order is within (terms + 2) * eps * sum |products|."""
    return (terms + 2) * np.finfo(dtype).eps * magnitude + np.finfo(dtype).tiny


def path_bound(path, dtype, terms, magnitude):
    """rounding_bound, or on the Winograd path its bound per layer: KAPPA eps times the layer's
    largest magnitude (its transforms mix a whole tile; see test_winograd.py)."""
    bound = rounding_bound(dtype, terms, magnitude)
    if path != "winograd":
        return bound
    from tests.kernels.test_winograd import KAPPA
    return np.maximum(bound, KAPPA * np.finfo(dtype).eps * magnitude.max())


def reference(fn, *args, **kw):
    return fn(*args, backend="reference", **kw)


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_matches_float64_reference(backend, dtype, case):
    x, w, b, kw = conv_case(case, dtype, 1)
    terms = w[0].size + 1
    for bias, act in [(None, None), (b, "relu")]:
        got = pf.ops.conv2d(x, w, bias, activation=act, backend=backend, **kw)
        x64, w64, b64 = f64(x, w, bias)
        want = reference(pf.ops.conv2d, x64, w64, b64, activation=act, **kw)
        mag = reference(pf.ops.conv2d, np.abs(x64), np.abs(w64),
                        None if b64 is None else np.abs(b64), **kw)
        assert got.dtype == dtype
        assert_within(got, want, rounding_bound(dtype, terms, mag), f"conv2d bias={bias is not None}")


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backward_matches_float64_reference(backend, dtype, case):
    x, w, _, kw = conv_case(case, dtype, 2)
    y_shape = pf.ops.conv2d(x, w, backend="reference", **kw).shape
    gy = np.random.default_rng(3).standard_normal(y_shape).astype(dtype)
    gx, gw, gb = pf.ops.conv2d_backward(gy, x, w, backend=backend, **kw)
    gy64, x64, w64 = f64(gy, x, w)
    want = reference(pf.ops.conv2d_backward, gy64, x64, w64, **kw)
    mag = reference(pf.ops.conv2d_backward, np.abs(gy64), np.abs(x64), np.abs(w64), **kw)
    k = w.shape[0]
    n, _, oh, ow = y_shape
    terms_x = k // kw["groups"] * w.shape[2] * w.shape[3]
    assert_within(gx, want[0], rounding_bound(dtype, terms_x, mag[0]), "gx")
    assert_within(gw, want[1], rounding_bound(dtype, n * oh * ow, mag[1]), "gw")
    assert_within(gb, want[2], rounding_bound(dtype, n * oh * ow, mag[2]), "gb")
    # each gradient alone gives the same numbers, and the others are not computed
    for i, need in enumerate("xwb"):
        only = pf.ops.conv2d_backward(gy, x, w, needs=(need,), backend=backend, **kw)
        assert [g is None for g in only] == [j != i for j in range(3)]
        np.testing.assert_allclose(only[i], (gx, gw, gb)[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TRANSPOSED, ids=TRANSPOSED_IDS)
def test_transposed_matches_float64_reference(backend, dtype, case):
    x, w, b, kw = transposed_case(case, dtype, 4)
    got = pf.ops.conv_transpose2d(x, w, b, backend=backend, **kw)
    x64, w64, b64 = f64(x, w, b)
    want = reference(pf.ops.conv_transpose2d, x64, w64, b64, **kw)
    mag = reference(pf.ops.conv_transpose2d, np.abs(x64), np.abs(w64), np.abs(b64), **kw)
    assert_within(got, want, rounding_bound(dtype, x.shape[1] * w.shape[2] * w.shape[3] + 1, mag),
                  "conv_transpose2d")
    gy = np.random.default_rng(5).standard_normal(got.shape).astype(dtype)
    grads = pf.ops.conv_transpose2d_backward(gy, x, w, backend=backend, **kw)
    want = reference(pf.ops.conv_transpose2d_backward, *f64(gy, x, w), **kw)
    for name, g, wg in zip("xwb", grads, want):
        np.testing.assert_allclose(g, wg, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-3 if dtype == np.float32 else 1e-10, err_msg=name)


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
def test_larger_layer_shape(backend):
    """A ResNet-like layer, big enough to cross any blocking or tiling boundary."""
    x, w, b, kw = conv_case(("big", 2, 64, 17, 19, 96, 3, 3, 1, 1, 1, 1), np.float32, 6)
    got = pf.ops.conv2d(x, w, b, activation="relu", backend=backend, **kw)
    want = reference(pf.ops.conv2d, *f64(x, w, b), activation="relu", **kw)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    gy = np.random.default_rng(7).standard_normal(got.shape).astype(np.float32)
    for g, wg in zip(pf.ops.conv2d_backward(gy, x, w, backend=backend, **kw),
                     reference(pf.ops.conv2d_backward, *f64(gy, x, w), **kw)):
        np.testing.assert_allclose(g, wg, rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
def test_threads_agree(backend):
    x, w, b, kw = conv_case(("t", 3, 16, 15, 15, 24, 3, 3, 1, 1, 1, 1), np.float32, 8)
    before = pf.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            pf.set_num_threads(n)
            gy = np.ones((3, 24, 15, 15), np.float32)
            results.append((pf.ops.conv2d(x, w, b, backend=backend, **kw),
                            *pf.ops.conv2d_backward(gy, x, w, backend=backend, **kw)))
    finally:
        pf.set_num_threads(before)
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------- semantics (torch)

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_reference_matches_torch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, kw = conv_case(case, np.float64, 9)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(tx, tw, tb, **kw)
    gy = np.random.default_rng(10).standard_normal(ty.shape)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(reference(pf.ops.conv2d, x, w, b, **kw), ty.detach().numpy(),
                               rtol=1e-10, atol=1e-10)
    for g, want in zip(reference(pf.ops.conv2d_backward, gy, x, w, **kw), (tx, tw, tb)):
        np.testing.assert_allclose(g, want.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", TRANSPOSED, ids=TRANSPOSED_IDS)
def test_reference_transposed_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, w, b, kw = transposed_case(case, np.float64, 11)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, **kw)
    gy = np.random.default_rng(12).standard_normal(ty.shape)
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(reference(pf.ops.conv_transpose2d, x, w, b, **kw),
                               ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for g, want in zip(reference(pf.ops.conv_transpose2d_backward, gy, x, w, **kw), (tx, tw, tb)):
        np.testing.assert_allclose(g, want.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
def test_finite_differences(backend):
    """The backward of each backend is the derivative of its own forward (float64)."""
    x, w, b, kw = conv_case(("fd", 1, 4, 6, 5, 4, 3, 2, 2, 1, 1, 2), np.float64, 13)
    gy = np.random.default_rng(14).standard_normal(
        pf.ops.conv2d(x, w, backend=backend, **kw).shape)

    def loss(xv, wv, bv):
        return float((pf.ops.conv2d(xv, wv, bv, backend=backend, **kw) * gy).sum())

    grads = pf.ops.conv2d_backward(gy, x, w, backend=backend, **kw)
    rng = np.random.default_rng(15)
    for which, (arr, g) in enumerate(zip((x, w, b), grads)):
        for idx in [tuple(rng.integers(0, s) for s in arr.shape) for _ in range(6)]:
            args = [x, w, b]
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += 1e-6
            minus[idx] -= 1e-6
            args[which] = plus
            up = loss(*args)
            args[which] = minus
            numeric = (up - loss(*args)) / 2e-6
            assert abs(numeric - g[idx]) < 1e-6 * max(1.0, abs(numeric)), (which, idx)


# ---------------------------------------------------------------------- bad input

class TestBadInput:
    x = np.ones((2, 4, 8, 8), np.float32)
    w = np.ones((6, 2, 3, 3), np.float32)

    def test_groups_and_channels(self):
        with pytest.raises(ValueError, match="4 input channels are not divisible by groups=3"):
            pf.ops.conv2d(self.x, np.ones((6, 1, 3, 3), np.float32), groups=3)
        with pytest.raises(ValueError, match=r"expects 2 input channels.*\(2, 4, 8, 8\)"):
            pf.ops.conv2d(self.x, self.w)
        with pytest.raises(ValueError, match="5 output channels are not divisible by groups=2"):
            pf.ops.conv2d(self.x, np.ones((5, 2, 3, 3), np.float32), groups=2)
        with pytest.raises(ValueError, match="groups must be a positive int"):
            pf.ops.conv2d(self.x, self.w, groups=0)

    def test_kernel_larger_than_padded_input(self):
        with pytest.raises(ValueError, match=r"kernel spans 9 rows.*only 8"):
            pf.ops.conv2d(self.x, np.ones((6, 4, 9, 3), np.float32))
        with pytest.raises(ValueError, match=r"kernel spans 9 columns"):
            pf.ops.conv2d(self.x, np.ones((6, 4, 3, 5), np.float32), dilation=(1, 2))

    def test_rank_dtype_and_parameters(self):
        with pytest.raises(ValueError, match=r"x must be 4-D, got shape \(4, 8, 8\)"):
            pf.ops.conv2d(self.x[0], self.w, groups=2)
        with pytest.raises(ValueError, match=r"w must be 4-D"):
            pf.ops.conv2d(self.x, self.w[0], groups=2)
        with pytest.raises(TypeError, match="w is float64 but x is float32"):
            pf.ops.conv2d(self.x, self.w.astype(np.float64), groups=2)
        with pytest.raises(ValueError, match="stride must be >= 1"):
            pf.ops.conv2d(self.x, self.w, groups=2, stride=0)
        with pytest.raises(ValueError, match="padding must be >= 0"):
            pf.ops.conv2d(self.x, self.w, groups=2, padding=-1)
        with pytest.raises(TypeError, match="dilation must be an int or a pair"):
            pf.ops.conv2d(self.x, self.w, groups=2, dilation=(1, 2, 3))
        with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
            pf.ops.conv2d(self.x, self.w, np.ones(4, np.float32), groups=2)
        with pytest.raises(ValueError, match="activation must be None or 'relu'"):
            pf.ops.conv2d(self.x, self.w, groups=2, activation="gelu")

    def test_backward_shapes(self):
        with pytest.raises(ValueError, match=r"gy must have shape \(2, 6, 6, 6\)"):
            pf.ops.conv2d_backward(np.ones((2, 6, 8, 8), np.float32), self.x, self.w, groups=2)
        with pytest.raises(ValueError, match="needs may hold only"):
            pf.ops.conv2d_backward(np.ones((2, 6, 6, 6), np.float32), self.x, self.w,
                                   groups=2, needs=("input",))

    def test_transposed(self):
        with pytest.raises(ValueError, match="output_padding 2 along rows must be smaller"):
            pf.ops.conv_transpose2d(self.x, np.ones((4, 3, 2, 2), np.float32), stride=2,
                                    output_padding=2)
        with pytest.raises(ValueError, match=r"expects 3 input channels.*\(2, 4, 8, 8\)"):
            pf.ops.conv_transpose2d(self.x, np.ones((3, 3, 2, 2), np.float32))


def test_empty_batch():
    x = np.ones((0, 3, 5, 5), np.float32)
    w = np.ones((2, 3, 3, 3), np.float32)
    assert pf.ops.conv2d(x, w).shape == (0, 2, 3, 3)
    gx, gw, gb = pf.ops.conv2d_backward(np.ones((0, 2, 3, 3), np.float32), x, w)
    assert gx.shape == x.shape and not gw.any() and not gb.any()


# ---------------------------------------------------------------------- random geometries

def random_geometries(count, seed):
    """Small convolutions with every parameter drawn at random, padding up to beyond the
    kernel's reach included; (x, w, bias, kwargs, transposed kwargs or None)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        g = int(rng.choice([1, 1, 2, 3]))
        cg, kg = (int(v) for v in rng.integers(1, 5, 2))
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        # stride 1 on both axes half the time: the native direct kernels take those
        s = (1, 1) if rng.random() < 0.5 else tuple(int(v) for v in rng.integers(1, 4, 2))
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        p = tuple(int(v) for v in rng.integers(0, 4, 2))
        h = int(rng.integers(max(1, d[0] * (kh - 1) + 1 - 2 * p[0]), 16))
        w = int(rng.integers(max(1, d[1] * (kw - 1) + 1 - 2 * p[1]), 16))
        x = rng.standard_normal((int(rng.integers(1, 4)), cg * g, h, w))
        wt = rng.standard_normal((kg * g, cg, kh, kw))
        op = tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
        yield x, wt, rng.standard_normal(kg * g), dict(stride=s, padding=p, dilation=d,
                                                       groups=g), op


def poison_scratch(backend):
    """Run a convolution on NaNs, so per-thread scratch buffers that a kernel reuses hold NaN:
    a later read of memory it did not write then shows in the result."""
    x = np.full((4, 8, 24, 24), np.nan)
    w = np.ones((8, 8, 3, 3))
    for stride in (1, 2):  # unpadded: no zeros among the NaNs of the copied planes
        y = pf.ops.conv2d(x, w, stride=stride, backend=backend)
        pf.ops.conv2d_backward(y, x, w, stride=stride, backend=backend)


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
def test_random_geometries(backend):
    """Forward, gradients and the transposed convolution on 60 random geometries, each
    kernel right after a run that left NaN in the scratch buffers, at 1, 2 and 3 threads."""
    before = pf.get_num_threads()
    try:
        for i, (x, w, b, kw, op) in enumerate(random_geometries(60, 25)):
            pf.set_num_threads(1 + i % 3)
            what = f"case {i}: x {x.shape}, w {w.shape}, {kw}"
            want = reference(pf.ops.conv2d, x, w, b, activation="relu", **kw)
            gy = np.random.default_rng(i).standard_normal(want.shape)
            poison_scratch(backend)
            got = pf.ops.conv2d_backward(gy, x, w, backend=backend, **kw)
            for name, g, wg in zip("xwb", got, reference(pf.ops.conv2d_backward, gy, x, w, **kw)):
                np.testing.assert_allclose(g, wg, rtol=1e-10, atol=1e-10, err_msg=name + " " + what)
            poison_scratch(backend)
            y = pf.ops.conv2d(x, w, b, activation="relu", backend=backend, **kw)
            np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10, err_msg=what)
            # a transposed convolution of x (its channels as Cin)
            wt = np.random.default_rng(i).standard_normal((x.shape[1], w.shape[0] // kw["groups"])
                                                          + w.shape[2:])
            try:
                want = reference(pf.ops.conv_transpose2d, x, wt, b, output_padding=op, **kw)
            except ValueError:  # the output would be empty
                continue
            poison_scratch(backend)
            got = pf.ops.conv_transpose2d(x, wt, b, output_padding=op, backend=backend, **kw)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg="T " + what)
    finally:
        pf.set_num_threads(before)


# ---------------------------------------------------------------------- tiles, bands, memory

# Shapes that cross the native and numba kernels' tiling: stride 2 with a column matrix of
# several tiles, and stride-1 images with more rows than one band of padded planes holds.
TILED = [
    ("im2col-tiles", 1, 64, 80, 80, 8, 3, 3, 2, 1, 1, 1),
    ("direct-bands", 1, 64, 40, 128, 16, 3, 3, 1, 1, 1, 1),
    ("direct-bands-dilated", 2, 16, 37, 150, 8, 3, 5, 1, (2, 1), (2, 1), 2),
]
ALL_PASSES = ("forward", "input_grad", "weight_grad")
TILED_PATHS = {"im2col-tiles": dict.fromkeys(ALL_PASSES, "im2col"),
               "direct-bands": dict.fromkeys(ALL_PASSES, "direct"),
               "direct-bands-dilated": dict.fromkeys(ALL_PASSES, "direct")}


def check_forward_backward(backend, case, dtype, seed, expect=None, algo=None,
                           channels_last=False):
    """conv2d (bias, ReLU) and its three gradients against the float64 reference; with
    `expect` ({"forward": path, "input_grad": path, "weight_grad": path}, any subset), that
    the native backend ran those paths."""
    x, w, b, kw = conv_case(case, dtype, seed)
    x64, w64, b64 = f64(x, w, b)
    xin = to_memory_format(x, CHANNELS_LAST) if channels_last else x
    got = pf.ops.conv2d(xin, w, b, activation="relu", backend=backend, algo=algo, **kw)
    ran = pf.ops.last_conv_path()
    want = reference(pf.ops.conv2d, x64, w64, b64, activation="relu", **kw)
    mag = reference(pf.ops.conv2d, np.abs(x64), np.abs(w64), np.abs(b64), **kw)
    assert_within(got, want, rounding_bound(dtype, w[0].size + 1, mag), "conv2d")
    gy = np.random.default_rng(seed + 1).standard_normal(got.shape).astype(dtype)
    if channels_last:
        assert is_channels_last(got) or got.shape[1] == 1 or got.shape[2] * got.shape[3] == 1
        gy = to_memory_format(gy, CHANNELS_LAST)
    grads = pf.ops.conv2d_backward(gy, xin, w, backend=backend, algo=algo, **kw)
    ran.update(pf.ops.last_conv_path())
    if expect is not None and backend == "native":
        assert {k: ran[k] for k in expect} == expect, (case[0], ran)
    want = reference(pf.ops.conv2d_backward, *f64(gy, x, w), **kw)
    mag = reference(pf.ops.conv2d_backward, *(np.abs(a) for a in f64(gy, x, w)), **kw)
    n, _, oh, ow = got.shape
    terms = (w.shape[0] // kw["groups"] * w.shape[2] * w.shape[3], n * oh * ow, n * oh * ow)
    for name, g, wg, m, t in zip("xwb", grads, want, mag, terms):
        assert_within(g, wg, rounding_bound(dtype, t, m), "g" + name)


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
@pytest.mark.parametrize("case", TILED, ids=[c[0] for c in TILED])
def test_tiles_and_bands(backend, case):
    check_forward_backward(backend, case, np.float32, 16, expect=TILED_PATHS[case[0]])


def on_every_isa(thread_counts, check):
    """check() on every code path the CPU runs (AVX-512, AVX2, generic) at each thread count."""
    _C = pytest.importorskip("pyfast._C")
    before, threads = _C.isa(), pf.get_num_threads()
    try:
        for isa in _C.supported_isas():
            _C.set_isa(isa)
            for n in thread_counts:
                pf.set_num_threads(n)
                check()
    finally:
        _C.set_isa(before)
        pf.set_num_threads(threads)


# Shapes of the native implicit path (channels-last copies): small images with 16+ channels
# (tiles skip the taps that read padding), strided layers and the stride phases of their
# input gradients, dilation, groups, output channels that fill no whole sliver.
IMPLICIT = [
    ("4x4-many-channels", 3, 48, 4, 4, 40, 3, 3, 1, 1, 1, 1),
    ("7x7-groups2", 2, 36, 7, 7, 34, 3, 3, 1, 1, 1, 2),
    ("5x6-dilated-5x3", 2, 20, 5, 6, 18, 5, 3, 1, (3, 1), (1, 2), 1),
    ("3x3/2-downsample", 2, 24, 9, 8, 36, 3, 3, 2, 1, 1, 1),
    ("1x1/2-shortcut", 2, 32, 8, 8, 40, 1, 1, 2, 0, 1, 1),
    ("4x3/(3,2)-dilated-groups3", 1, 12, 13, 11, 9, 4, 3, (3, 2), (2, 1), (2, 1), 3),
]
# Both passes on the implicit path, except the forward of a 1x1/2 (no overlapping windows:
# im2col keeps it).
IMPLICIT_PATHS = {c[0]: {"forward": "implicit_gemm", "input_grad": "implicit_gemm"}
                  for c in IMPLICIT}
IMPLICIT_PATHS["1x1/2-shortcut"]["forward"] = "im2col"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", IMPLICIT, ids=[c[0] for c in IMPLICIT])
def test_native_implicit_path_on_every_isa(dtype, case, monkeypatch):
    """The native kernels of these shapes on every code path the CPU runs (AVX-512, AVX2,
    generic), at 1 and 3 threads, and that the planner sent them down the implicit path
    (pf.ops.last_conv_path(), asserted on every ISA and thread count)."""
    monkeypatch.delenv("PYFAST_CONV_ALGO", raising=False)  # the planner's choice, not a forced one
    on_every_isa((1, 3), lambda: check_forward_backward("native", case, dtype, 30,
                                                        expect=IMPLICIT_PATHS[case[0]]))
    # The query reports what ran, not a constant: forced to im2col, the same shape says so.
    check_forward_backward("native", case, dtype, 30, algo="im2col",
                           expect={"forward": "im2col", "input_grad": "im2col"})


# Shapes of the native stride-1 weight gradient over blocks of whole small images (a tile
# sums over every image of the block): groups that some threads never see, ragged rows and
# output channels, a block count that does not divide the batch, 1x1.
WGRAD_BLOCKS = [
    ("8x8-groups2", 3, 20, 8, 8, 14, 3, 3, 1, 1, 1, 2),
    ("14x14-ragged", 5, 25, 14, 14, 50, 3, 3, 1, 1, 1, 1),
    ("8x8-1x1", 4, 33, 8, 8, 17, 1, 1, 1, 0, 1, 1),
    ("4x4-few-output-channels", 6, 16, 4, 4, 24, 3, 3, 1, 1, 1, 1),
    ("7x7", 5, 12, 7, 7, 40, 3, 3, 1, 1, 1, 1),
    ("16x16", 3, 8, 16, 16, 12, 3, 3, 1, 1, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WGRAD_BLOCKS, ids=[c[0] for c in WGRAD_BLOCKS])
def test_native_weight_grad_image_blocks_on_every_isa(dtype, case):
    on_every_isa((1, 2, 3), lambda: check_forward_backward("native", case, dtype, 40,
                                                           expect={"weight_grad": "direct"}))


MEMORY_SCRIPT = """
import sys
import numpy as np
import pyfast as pf
backend = sys.argv[1]
pf.set_num_threads(1)  # the bound is per thread; one keeps the time steady on a busy machine
x = np.random.default_rng(0).standard_normal((1, 64, 512, 512), dtype=np.float32)
w = np.random.default_rng(1).standard_normal((64, 64, 3, 3), dtype=np.float32) * 0.05
for stride in (1, 2):  # Winograd, then im2col
    y = pf.ops.conv2d(x, w, stride=stride, padding=1, backend=backend)
    paths = pf.ops.last_conv_path()
    grads = pf.ops.conv2d_backward(np.ones_like(y), x, w, stride=stride, padding=1, backend=backend)
    paths.update(pf.ops.last_conv_path())
    print(sorted(set(paths.values()), key=str))
    del y, grads
# VmHWM, not ru_maxrss: the latter starts from the parent's size at fork
print([int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("backend", [p for p in backend_params("conv", "cpu")
                                     if p.values[0] != "reference"])
def test_unet_sized_input_keeps_memory_bounded(backend):
    """A 512x512, 64-channel layer (forward and backward, stride 1 and 2) in a fresh process
    peaks at the arrays plus a bounded workspace; a whole column matrix alone would be
    64*9 * 512*512 * 4 bytes = 604 MB. (The reference builds exactly that matrix: it is the
    spec, not a bounded kernel; it peaks at 1.5 GB here.)"""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, backend], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    if backend == "native":  # every pass of each stride on the path meant: Winograd, then im2col
        assert run.stdout.split("\n")[:2] == ["['winograd']", "['im2col']"], run.stdout
    peak_mb = int(run.stdout.split()[-1])
    # x, y, gy, gx: 64 MB each; numpy, pyfast (and numba) themselves: < 200 MB
    assert peak_mb < 4 * 64 + 250, f"peak RSS {peak_mb} MB"


# ---------------------------------------------------------------------- paths (native CPU)

PATH_CASES = CASES + IMPLICIT + [c for c in WGRAD_BLOCKS if c[0] != "14x14-ragged"]  # (slow)
CANNOT = "cannot run the"


def forced_passes(case, dtype, seed, path):
    """Each pass of `case` with `path` forced on the native backend, against the float64
    reference: the passes that path took (those it refused raise ValueError saying so)."""
    x, w, b, kw = conv_case(case, dtype, seed)
    x64, w64, b64 = f64(x, w, b)
    gy = np.random.default_rng(seed + 1).standard_normal(
        reference(pf.ops.conv2d, x64, w64, **kw).shape).astype(dtype)
    want = reference(pf.ops.conv2d_backward, *f64(gy, x, w), **kw)
    mag = reference(pf.ops.conv2d_backward, *(np.abs(a) for a in f64(gy, x, w)), **kw)
    n, _, oh, ow = gy.shape
    took = []
    try:
        got = pf.ops.conv2d(x, w, b, activation="relu", algo=path, backend="native", **kw)
    except ValueError as e:
        assert CANNOT in str(e) and path in str(e), e
    else:
        assert pf.ops.last_conv_path() == {"forward": path}
        assert_within(got, reference(pf.ops.conv2d, x64, w64, b64, activation="relu", **kw),
                      path_bound(path, dtype, w[0].size + 1,
                                 reference(pf.ops.conv2d, *map(np.abs, (x64, w64, b64)), **kw)),
                      f"forward on {path}")
        took.append("forward")
    terms = {"x": w.shape[0] // kw["groups"] * w.shape[2] * w.shape[3], "w": n * oh * ow}
    for i, (need, pass_) in enumerate([("x", "input_grad"), ("w", "weight_grad")]):
        try:
            g = pf.ops.conv2d_backward(gy, x, w, needs=(need,), algo=path, backend="native",
                                       **kw)[i]
        except ValueError as e:
            assert CANNOT in str(e) and path in str(e), e
            continue
        assert pf.ops.last_conv_path() == {pass_: path}
        assert_within(g, want[i], path_bound(path, dtype, terms[need], mag[i]),
                      f"{pass_} on {path}")
        took.append(pass_)
    return took


@pytest.fixture
def native():
    pytest.importorskip("pyfast._C")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_every_path_that_takes_a_shape_matches_reference(native, dtype, case):
    """Every native path forced on every pass it accepts; the planned path is among them, and
    im2col takes everything."""
    x, w, _, kw = conv_case(case, dtype, 50)
    pf.ops.conv2d(x, w, backend="native", **kw)
    planned = pf.ops.last_conv_path()
    pf.ops.conv2d_backward(pf.ops.conv2d(x, w, backend="native", **kw), x, w, needs=("x", "w"),
                           backend="native", **kw)
    planned.update(pf.ops.last_conv_path())
    took = {path: forced_passes(case, dtype, 51, path) for path in pf.ops.CONV_PATHS}
    assert took["im2col"] == list(ALL_PASSES)
    assert "weight_grad" not in took["implicit_gemm"]
    for pass_, path in planned.items():
        assert pass_ in took[path], (pass_, path, took)


def test_every_path_is_covered(native):
    """Each pass of each path runs on some case of PATH_CASES (the test above is no no-op);
    the small cases suffice."""
    covered = set()
    for case in CASES + IMPLICIT:
        for path in pf.ops.CONV_PATHS:
            covered.update((path, p) for p in forced_passes(case, np.float64, 52, path))
    want = {(p, q) for p in pf.ops.CONV_PATHS for q in ALL_PASSES} - {
        ("implicit_gemm", "weight_grad")}
    assert covered == want


def test_forced_paths_on_random_geometries(native):
    """Each path forced on random geometries (crops, padding beyond the kernel's reach), and
    the transposed convolutions of them, with NaN left in the scratch buffers before each
    path's calls."""
    counts, calls_made = dict.fromkeys(pf.ops.CONV_PATHS, 0), 0
    for i, (x, w, b, kw, op) in enumerate(random_geometries(24, 53)):
        wt = np.random.default_rng(i).standard_normal((x.shape[1], w.shape[0] // kw["groups"])
                                                      + w.shape[2:])
        y_want = reference(pf.ops.conv2d, x, w, b, **kw)
        gy = np.random.default_rng(i).standard_normal(y_want.shape)
        g_want = reference(pf.ops.conv2d_backward, gy, x, w, **kw)
        try:
            t_want = reference(pf.ops.conv_transpose2d, x, wt, b, output_padding=op, **kw)
        except ValueError:
            t_want = None
        for path in pf.ops.CONV_PATHS:
            what = f"case {i} on {path}: x {x.shape}, w {w.shape}, {kw}"
            calls = [(lambda: pf.ops.conv2d(x, w, b, algo=path, **kw), y_want)]
            calls += [(lambda i=i: pf.ops.conv2d_backward(gy, x, w, needs=("xw"[i],), algo=path,
                                                          **kw)[i], g_want[i]) for i in (0, 1)]
            if t_want is not None:
                calls.append((lambda: pf.ops.conv_transpose2d(x, wt, b, output_padding=op,
                                                              algo=path, **kw), t_want))
            calls_made += len(calls) if path == "im2col" else 0
            poison_scratch("native")
            for call, want in calls:
                try:
                    got = call()
                except ValueError as e:
                    assert CANNOT in str(e), e
                    continue
                assert set(pf.ops.last_conv_path().values()) == {path}
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=what)
                counts[path] += 1
    assert counts["im2col"] == calls_made  # it takes every shape
    assert counts["direct"] >= 10 and counts["implicit_gemm"] >= 20, counts


def test_algo_argument_and_environment(native, monkeypatch):
    x, w, _, kw = conv_case(CASES[1], np.float32, 54)  # stride 1: every path takes it
    want = pf.ops.conv2d(x, w, algo="im2col", **kw)
    monkeypatch.setenv("PYFAST_CONV_ALGO", "direct")
    np.testing.assert_allclose(pf.ops.conv2d(x, w, **kw), want, rtol=1e-5, atol=1e-5)
    assert pf.ops.last_conv_path() == {"forward": "direct"}
    assert pf.ops.conv2d(x, w, algo="im2col", **kw) is not None  # the argument wins
    assert pf.ops.last_conv_path() == {"forward": "im2col"}
    pf.ops.conv2d(x, w, backend="reference", **kw)  # the variable steers native kernels only
    assert pf.ops.last_conv_path() == {"forward": None}
    with pytest.raises(ValueError, match="cannot run the forward pass.*direct path needs stride 1"):
        pf.ops.conv2d(x, w, **dict(kw, stride=2))
    monkeypatch.setenv("PYFAST_CONV_ALGO", "fft")
    with pytest.raises(ValueError, match=r"algo must be one of .* \(from PYFAST_CONV_ALGO\)"):
        pf.ops.conv2d(x, w, **kw)
    monkeypatch.setenv("PYFAST_CONV_ALGO", "auto")
    pf.ops.conv2d(x, w, **kw)
    assert pf.ops.last_conv_path() == {"forward": "direct"}
    with pytest.raises(ValueError, match="names a native CPU conv path, but the 'reference'"):
        pf.ops.conv2d(x, w, algo="direct", backend="reference", **kw)
    with pytest.raises(ValueError, match="implicit GEMM path has no weight gradient"):
        pf.ops.conv2d_backward(want, x, w, algo="implicit_gemm", **kw)
    gx, _, _ = pf.ops.conv2d_backward(want, x, w, needs=("x",), algo="implicit_gemm", **kw)
    assert pf.ops.last_conv_path() == {"input_grad": "implicit_gemm"}
    pf.ops.conv2d(np.ones((0, 3, 5, 5), np.float32), np.ones((2, 3, 3, 3), np.float32))
    assert pf.ops.last_conv_path() == {}


def test_transposed_backward_reports_both_paths(native):
    x, w, _, kw = transposed_case(TRANSPOSED[0], np.float32, 55)
    gy = np.ones(pf.ops.conv_transpose2d(x, w, **kw).shape, np.float32)
    pf.ops.conv_transpose2d_backward(gy, x, w, needs=("x", "w"), algo="im2col", **kw)
    assert pf.ops.last_conv_path() == {"forward": "im2col", "weight_grad": "im2col"}


# ---------------------------------------------------------------------- channels last

# Shapes of both kinds: the implicit path's (which reads and writes NHWC as it is: groups,
# strides and their input-gradient phases, dilation) and the others' (NCHW copies).
CL_CASES = [IMPLICIT[1], IMPLICIT[3], IMPLICIT[5], CASES[1], CASES[6], WGRAD_BLOCKS[2],
            TILED[0]]


@pytest.mark.parametrize("backend", backend_params("conv", "cpu"))
@pytest.mark.parametrize("case", CL_CASES, ids=[c[0] for c in CL_CASES])
def test_channels_last_matches_reference(backend, case):
    """A channels-last x gives a channels-last y and gx, with the values of the NCHW call (to
    rounding: the native planner may take another path for NHWC arrays)."""
    check_forward_backward(backend, case, np.float32, 56, channels_last=True)
    x, w, _, kw = conv_case(case, np.float32, 57)
    y = pf.ops.conv2d(to_memory_format(x, CHANNELS_LAST), w, backend=backend, **kw)
    assert is_channels_last(y)
    np.testing.assert_allclose(y, pf.ops.conv2d(x, w, backend=backend, **kw), rtol=1e-4,
                               atol=1e-4)
    gx = pf.ops.conv2d_backward(y, to_memory_format(x, CHANNELS_LAST), w, needs=("x",),
                                backend=backend, **kw)[0]
    assert is_channels_last(gx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CL_CASES, ids=[c[0] for c in CL_CASES])
def test_channels_last_on_every_path(native, dtype, case):
    for path in pf.ops.CONV_PATHS:
        x, w, _, kw = conv_case(case, dtype, 58)
        xc = to_memory_format(x, CHANNELS_LAST)
        gy = pf.ops.conv2d(x, w, **kw)
        for i, fn in enumerate((
                lambda a, g: pf.ops.conv2d(a, w, algo=path, **kw),
                lambda a, g: pf.ops.conv2d_backward(g, a, w, needs=("x",), algo=path, **kw)[0],
                lambda a, g: pf.ops.conv2d_backward(g, a, w, needs=("w", "b"), algo=path,
                                                    **kw)[1])):
            try:
                want = fn(x, gy)
            except ValueError as e:
                assert CANNOT in str(e)
                continue
            got = fn(xc, to_memory_format(gy, CHANNELS_LAST))
            assert i == 2 or is_channels_last(got)
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=path)


@pytest.mark.parametrize("case", TRANSPOSED, ids=TRANSPOSED_IDS)
def test_channels_last_transposed(native, case):
    x, w, b, kw = transposed_case(case, np.float32, 59)
    got = pf.ops.conv_transpose2d(to_memory_format(x, CHANNELS_LAST), w, b, **kw)
    want = reference(pf.ops.conv_transpose2d, *f64(x, w, b), **kw)
    assert is_channels_last(got) or got.shape[1] == 1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_channels_last_binding_checks_strides(native):
    C = pytest.importorskip("pyfast._C")
    x = np.ones((2, 4, 8, 8), np.float32)
    w = np.ones((6, 4, 3, 3), np.float32)
    out = to_memory_format(np.empty((2, 6, 6, 6), np.float32), CHANNELS_LAST)
    with pytest.raises(ValueError,
                       match=r"x must be channels-last .* strides \(1024, 256, 32, 4\)"):
        C.conv2d(x, w, None, out, (1, 1), (0, 0), (1, 1), 1, False, channels_last=True)
    with pytest.raises(ValueError, match="out must be channels-last"):
        C.conv2d(to_memory_format(x, CHANNELS_LAST), w, None, np.empty((2, 6, 6, 6), np.float32),
                 (1, 1), (0, 0), (1, 1), 1, False, channels_last=True)
    with pytest.raises(ValueError, match="conv algo must be one of 'auto', 'direct'"):
        C.conv2d(x, w, None, np.empty((2, 6, 6, 6), np.float32), (1, 1), (0, 0), (1, 1), 1,
                 False, algo="fast")
    assert C.conv2d(to_memory_format(x, CHANNELS_LAST), w, None, out, (1, 1), (0, 0), (1, 1), 1,
                    False, channels_last=True) in pf.ops.CONV_PATHS
    np.testing.assert_allclose(out, pf.ops.conv2d(x, w, backend="reference"))


# ---------------------------------------------------------------------- native bindings

class TestNativeBinding:
    """pyfast._C's conv functions check everything themselves: a direct call with bad
    arguments raises (ValueError/TypeError naming the argument) instead of crashing."""
    x = np.ones((2, 4, 8, 8), np.float32)
    w = np.ones((6, 2, 3, 3), np.float32)
    out = np.empty((2, 6, 6, 6), np.float32)
    one, zero = (1, 1), (0, 0)

    @pytest.fixture(autouse=True)
    def _c(self):
        self.C = pytest.importorskip("pyfast._C")

    def conv(self, x=None, w=None, bias=None, out=None, stride=(1, 1), padding=(0, 0),
             dilation=(1, 1), groups=2):
        return self.C.conv2d(self.x if x is None else x, self.w if w is None else w, bias,
                             self.out if out is None else out, stride, padding, dilation,
                             groups, False)

    def test_valid_call_matches_reference(self):
        self.conv()
        want = pf.ops.conv2d(self.x, self.w, groups=2, backend="reference")
        np.testing.assert_allclose(self.out, want)

    @pytest.mark.parametrize("kwargs,message", [
        (dict(groups=3), r"w has shape \(6, 2, 3, 3\), which does not fit x of shape \(2, 4, 8, 8\) with groups=3"),
        (dict(groups=0), "groups must be >= 1"),
        (dict(stride=(0, 1)), r"stride must be in 1\.\."),
        (dict(padding=(-1, 0)), r"padding must be in 0\.\."),
        (dict(dilation=(1, 2 ** 40)), r"dilation must be in 1\.\."),
        (dict(out=np.empty((2, 6, 6, 5), np.float32)), r"out must have shape \(2, 6, 6, 6\), got \(2, 6, 6, 5\)"),
        (dict(out=np.empty((2, 6, 6, 6), np.float32)[:, :, :, ::-1]), "out must be C-contiguous"),
        (dict(x=np.ones((2, 4, 8, 16), np.float32)[..., ::2]), "x must be C-contiguous"),
        (dict(x=np.ones((4, 8, 8), np.float32)), r"x must be 4-D, got shape \(4, 8, 8\)"),
        (dict(x=np.ones((2, 4, 8, 8))), "x must have dtype float32, got float64"),
        (dict(bias=np.ones(5, np.float32)), r"bias must have shape \(6,\), got \(5,\)"),
        (dict(w=np.ones((6, 2, 9, 3), np.float32)), "the kernel spans 9 rows"),
    ])
    def test_conv2d_rejects(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            self.conv(**kwargs)

    def test_dtype_must_be_float(self):
        with pytest.raises(TypeError, match="w must be float32 or float64, got int32"):
            self.conv(w=self.w.astype(np.int32))

    def test_read_only_output(self):
        out = np.empty((2, 6, 6, 6), np.float32)
        out.setflags(write=False)
        with pytest.raises(ValueError, match="out is read-only"):
            self.conv(out=out)

    def test_backward_rejects(self):
        gy, f = np.ones((2, 6, 6, 6), np.float32), np.float32
        with pytest.raises(ValueError, match="the weight gradient gw needs x"):
            self.C.conv2d_backward(gy, None, self.w, None, np.empty_like(self.w), None,
                                   self.one, self.zero, self.one, 2)
        with pytest.raises(ValueError, match=r"gy must have shape \(2, 6, 6, 6\), got \(2, 6, 5, 6\)"):
            self.C.conv2d_backward(np.ones((2, 6, 5, 6), f), self.x, self.w, None,
                                   np.empty_like(self.w), None, self.one, self.zero, self.one, 2)
        with pytest.raises(ValueError, match=r"gx must have shape \(2, 4, 8, 8\)"):
            self.C.conv2d_backward(gy, self.x, self.w, np.empty((2, 4, 8, 7), f), None, None,
                                   self.one, self.zero, self.one, 2)
        with pytest.raises(ValueError, match=r"gb must have shape \(6,\)"):
            self.C.conv2d_backward(gy, None, self.w, None, None, np.empty(5, f), self.one,
                                   self.zero, self.one, 2)
        with pytest.raises(ValueError, match="output channels differ"):
            self.C.conv2d_backward(np.ones((2, 5, 6, 6), f), self.x, self.w, None, None,
                                   np.empty(5, f), self.one, self.zero, self.one, 2)

    def test_transposed_rejects(self):
        f = np.float32
        w = np.ones((4, 3, 2, 2), f)
        with pytest.raises(ValueError, match="which no output_padding gives"):
            self.C.conv_transpose2d(self.x, w, None, np.empty((2, 3, 18, 16), f), (2, 2),
                                    self.zero, self.one, 1)
        with pytest.raises(ValueError, match=r"they must be \(N, Cin, H, W\)"):
            self.C.conv_transpose2d(self.x, np.ones((3, 3, 2, 2), f), None,
                                    np.empty((2, 3, 16, 16), f), (2, 2), self.zero, self.one, 1)
        with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
            self.C.conv_transpose2d(self.x, w, np.ones(4, f), np.empty((2, 3, 16, 16), f),
                                    (2, 2), self.zero, self.one, 1)

    def test_empty_and_degenerate_shapes_do_not_crash(self):
        f = np.float32
        self.C.conv2d(np.ones((0, 4, 8, 8), f), self.w, None, np.empty((0, 6, 6, 6), f),
                      self.one, self.zero, self.one, 2, False)
        # an empty input read entirely through padding gives zeros
        out = np.full((1, 6, 2, 2), 7, f)
        self.C.conv2d(np.ones((1, 4, 0, 0), f), np.ones((6, 2, 1, 1), f), None, out, self.one,
                      self.one, self.one, 2, False)
        assert not out.any()
        gx, gw, gb = np.empty((1, 4, 0, 0), f), np.full((6, 2, 1, 1), 7, f), np.empty(6, f)
        self.C.conv2d_backward(np.ones((1, 6, 2, 2), f), np.ones((1, 4, 0, 0), f),
                               np.ones((6, 2, 1, 1), f), gx, gw, gb, self.one, self.one,
                               self.one, 2)
        assert not gw.any() and (gb == 4).all()


# ---------------------------------------------------------------------- numba CUDA (simulator)

# (name, N, C, H, W, K, kh, kw, stride, padding, dilation, groups): tiny, since every thread
# of the simulator is a Python thread; "splits" sums its weight gradient in two splits.
SIM_CASES = [
    ("3x2-groups2", 2, 4, 5, 6, 6, 3, 2, (2, 1), (1, 0), (1, 2), 2),
    ("3x3-pad", 1, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1),
    ("splits", 2, 2, 9, 9, 3, 1, 1, 1, 0, 1, 1),
]


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SIM_CASES, ids=[c[0] for c in SIM_CASES])
def test_numba_cuda_kernels_in_simulator(dtype, case):
    from pyfast.kernels import cuda as kernels
    x, w, b, kw = conv_case(case, dtype, 18)
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    params = [pair(kw[name]) for name in ("stride", "padding", "dilation")] + [kw["groups"]]
    x64, w64, b64 = f64(x, w, b)
    want = reference(pf.ops.conv2d, x64, w64, b64, activation="relu", **kw)
    out = np.empty(want.shape, dtype)
    kernels.conv2d(x, w, b, out, *params, True)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(out, want, **tol)
    gy = np.random.default_rng(19).standard_normal(out.shape).astype(dtype)
    grads = (np.empty_like(x), np.empty_like(w), np.empty(w.shape[0], dtype))
    kernels.conv2d_backward(gy, x, w, *grads, *params)
    for name, g, wg in zip("xwb", grads, reference(pf.ops.conv2d_backward, *f64(gy, x, w), **kw)):
        np.testing.assert_allclose(g, wg, err_msg=name, **tol)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_cuda_transposed_in_simulator(dtype):
    from pyfast.kernels import cuda as kernels
    x, w, b, kw = transposed_case(("3x3/2-outpad", 1, 4, 4, 3, 3, 3, 3, 2, 1, 1, 1, 1), dtype, 20)
    want = reference(pf.ops.conv_transpose2d, *f64(x, w, b), **kw)
    out = np.empty(want.shape, dtype)
    kernels.conv_transpose2d(x, w, b, out, (2, 2), (1, 1), (1, 1), 1)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(out, want, **tol)


# ---------------------------------------------------------------------- GPU

@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("conv", "cuda"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES + TILED, ids=CASE_IDS + [c[0] for c in TILED])
def test_cuda_matches_float64_reference(backend, dtype, case):
    import cupy
    x, w, b, kw = conv_case(case, dtype, 21)
    x64, w64, b64 = f64(x, w, b)
    got = pf.ops.conv2d(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b), activation="relu",
                        backend=backend, **kw)
    assert isinstance(got, cupy.ndarray)
    want = reference(pf.ops.conv2d, x64, w64, b64, activation="relu", **kw)
    mag = reference(pf.ops.conv2d, np.abs(x64), np.abs(w64), np.abs(b64), **kw)
    assert_within(cupy.asnumpy(got), want, rounding_bound(dtype, w[0].size + 1, mag), "conv2d")
    gy = np.random.default_rng(22).standard_normal(want.shape).astype(dtype)
    grads = pf.ops.conv2d_backward(cupy.asarray(gy), cupy.asarray(x), cupy.asarray(w),
                                   backend=backend, **kw)
    want = reference(pf.ops.conv2d_backward, *f64(gy, x, w), **kw)
    mag = reference(pf.ops.conv2d_backward, *(np.abs(a) for a in f64(gy, x, w)), **kw)
    n, _, oh, ow = gy.shape
    terms = (w.shape[0] // kw["groups"] * w.shape[2] * w.shape[3], n * oh * ow, n * oh * ow)
    for name, g, wg, m, t in zip("xwb", grads, want, mag, terms):
        assert_within(cupy.asnumpy(g), wg, rounding_bound(dtype, t, m), "g" + name)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("conv", "cuda"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TRANSPOSED, ids=TRANSPOSED_IDS)
def test_cuda_transposed_matches_reference(backend, dtype, case):
    import cupy
    x, w, b, kw = transposed_case(case, dtype, 23)
    got = pf.ops.conv_transpose2d(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b),
                                  backend=backend, **kw)
    want = reference(pf.ops.conv_transpose2d, *f64(x, w, b), **kw)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cupy.asnumpy(got), want, **tol)
    gy = np.random.default_rng(24).standard_normal(want.shape).astype(dtype)
    grads = pf.ops.conv_transpose2d_backward(cupy.asarray(gy), cupy.asarray(x), cupy.asarray(w),
                                             backend=backend, **kw)
    for name, g, wg in zip("xwb", grads,
                           reference(pf.ops.conv_transpose2d_backward, *f64(gy, x, w), **kw)):
        np.testing.assert_allclose(cupy.asnumpy(g), wg, err_msg=name, **tol)


@pytest.mark.cuda
def test_native_cuda_binding_checks():
    import cupy
    cuda_ext = pytest.importorskip("pyfast._cuda")
    x = cupy.ones((2, 4, 8, 8), cupy.float32)
    w = cupy.ones((6, 2, 3, 3), cupy.float32)
    out = cupy.empty((2, 6, 6, 6), cupy.float32)
    stream = cupy.cuda.get_current_stream().ptr
    with pytest.raises(ValueError, match="which does not fit"):
        cuda_ext.conv2d(x, w, None, out, (1, 1), (0, 0), (1, 1), 3, False, stream=stream)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 6, 6, 6\)"):
        cuda_ext.conv2d(x, w, None, out[:, :, :5], (1, 1), (0, 0), (1, 1), 2, False, stream=stream)
    with pytest.raises(TypeError, match="x is float64 but w is float32"):
        cuda_ext.conv2d(x.astype(cupy.float64), w, None, out, (1, 1), (0, 0), (1, 1), 2, False,
                        stream=stream)
    with pytest.raises(ValueError, match="must be C-contiguous"):
        cuda_ext.conv2d(cupy.ones((2, 4, 8, 16), cupy.float32)[..., ::2], w, None, out, (1, 1),
                        (0, 0), (1, 1), 2, False, stream=stream)
    with pytest.raises(TypeError, match="must be a CUDA array"):
        cuda_ext.conv2d(np.ones((2, 4, 8, 8), np.float32), w, None, out, (1, 1), (0, 0), (1, 1),
                        2, False, stream=stream)
