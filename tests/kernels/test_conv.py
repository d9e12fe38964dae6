"""conv family: every backend against the float64 reference (with a rounding-error bound, so
a dropped term fails while summation order does not), the reference against torch, finite
differences, and the argument checks of pf.ops.conv2d / conv2d_backward / conv_transpose2d."""

import numpy as np
import pytest

import pyfast as pf
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
