"""elementwise family: every backend against the float64 reference on odd sizes (large
enough to cross the native kernels' parallel threshold), torch for semantics (NaN, the
relu gradient at 0), dropout masks identical across backends, argument checks."""

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params

SIZES = [(1,), (7, 13), (3, 5, 1031), (65537,)]
UNARY = ["relu", "leaky_relu", "sigmoid", "tanh"]


def data(shape, dtype, seed=0):
    x = np.random.default_rng([seed, *shape]).standard_normal(shape) * 3
    return x.astype(dtype)


def ref(name, *arrays, **kw):
    arrays = [a.astype(np.float64) for a in arrays]
    return getattr(pf.ops, name)(*arrays, backend="reference", **kw)


def close(got, want, dtype):
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("backend", backend_params("elementwise", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("name", UNARY)
def test_activation_and_gradient(backend, dtype, shape, name):
    x, gy = data(shape, dtype, 1), data(shape, dtype, 2)
    kw = {"negative_slope": 0.2} if name == "leaky_relu" else {}
    y = getattr(pf.ops, name)(x, backend=backend, **kw)
    close(y, ref(name, x, **kw), dtype)
    saved = x if name == "leaky_relu" else y        # leaky_relu's gradient reads the input
    gx = getattr(pf.ops, name + "_backward")(gy, saved, backend=backend, **kw)
    close(gx, ref(name + "_backward", gy, saved, **kw), dtype)


@pytest.mark.parametrize("backend", backend_params("elementwise", "cpu"))
def test_activations_match_torch_on_special_values(backend):
    torch = pytest.importorskip("torch")
    x = np.array([-np.inf, -100.0, -1.0, -0.0, 0.0, 1e-30, 2.0, 100.0, np.inf, np.nan],
                 np.float32)
    for name, tf in (("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        np.testing.assert_allclose(getattr(pf.ops, name)(x, backend=backend),
                                   tf(torch.from_numpy(x)).numpy(), rtol=3e-7, atol=0,
                                   err_msg=name)
    np.testing.assert_array_equal(
        pf.ops.leaky_relu(x, 0.1, backend=backend),
        torch.nn.functional.leaky_relu(torch.from_numpy(x), 0.1).numpy())
    # relu's gradient: 0 at y <= 0 (also exactly at 0), passes through NaN outputs
    y = pf.ops.relu(x, backend=backend)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    torch.relu(xt).backward(torch.ones(x.shape))
    np.testing.assert_array_equal(pf.ops.relu_backward(np.ones_like(x), y, backend=backend),
                                  xt.grad.numpy())


@pytest.mark.parametrize("backend", backend_params("elementwise", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_is_the_same_mask_on_every_backend(backend, dtype):
    x = data((3, 70001), dtype, 3)
    for p in (0.0, 0.25, 0.5, 1.0):
        got = pf.ops.dropout(x, p, seed=12345, backend=backend)
        want = pf.ops.dropout(x, p, seed=12345, backend="reference")
        np.testing.assert_array_equal(got, want)
        kept = got != 0
        if 0 < p < 1:
            assert abs(kept.mean() - (1 - p)) < 0.01
            np.testing.assert_allclose(got[kept], x[kept] / (1 - p), rtol=1e-6)
        assert kept.all() if p == 0 else True
        assert not kept.any() if p == 1 else True
    special = np.array([np.inf, -np.inf, np.nan, 0.0] * 8, dtype)     # x * mask * scale
    np.testing.assert_array_equal(pf.ops.dropout(special, 0.5, seed=3, backend=backend),
                                  pf.ops.dropout(special, 0.5, seed=3, backend="reference"))
    a = pf.ops.dropout(x, 0.5, seed=1, backend=backend)
    b = pf.ops.dropout(x, 0.5, seed=2, backend=backend)
    assert not np.array_equal(a != 0, b != 0)


@pytest.mark.parametrize("backend", backend_params("elementwise", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_and_in_place_output(backend, dtype):
    a, b = data((5, 40000), dtype, 4), data((5, 40000), dtype, 5)
    want = a.astype(np.float64) + b
    close(pf.ops.add(a, b, backend=backend), want, dtype)
    # non-contiguous inputs are accepted (copied at the boundary)
    close(pf.ops.add(a[:, ::2], b[:, ::2], backend=backend), want[:, ::2], dtype)
    out = pf.ops.add(a, b, out=a, backend=backend)
    assert out is a
    close(a, want, dtype)
    x = data((100, 700), dtype, 6)
    r = pf.ops.relu(x, out=x, backend=backend)
    assert r is x and (x >= 0).all()


def test_argument_errors():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        pf.ops.relu(np.ones(3, np.int64))
    with pytest.raises(TypeError, match="float64"):
        pf.ops.add(x, x.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        pf.ops.relu_backward(x, np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        pf.ops.relu(x, out=np.empty((4, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        pf.ops.relu(x, out=np.empty((4, 3), np.float32).T)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pf.ops.dropout(x, 1.5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        pf.ops.dropout(x, 0.5, seed=-1)
    with pytest.raises(ValueError, match="negative_slope"):
        pf.ops.leaky_relu(x, float("nan"))


def test_native_bindings_check_their_arguments():
    _C = pytest.importorskip("pyfast._C")
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="shape"):
        _C.relu(x, np.empty(5, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        _C.add(x, np.ones((3, 4)), np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.relu(np.ones((4, 3), np.float32).T, np.empty((3, 4), np.float32))
    ro = np.empty((3, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _C.tanh(x, ro)
    with pytest.raises(ValueError, match="threshold"):
        _C.dropout(x, np.empty_like(x), 0, (1 << 24) + 1, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        _C.sigmoid(np.ones(3, np.int32), np.empty(3, np.int32))


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_native_float32_sigmoid_tanh_within_4_ulp_on_every_code_path(name):
    """The native float32 sigmoid/tanh use their own vectorised exp: sweep the whole range
    (tiny arguments, the small-|x| polynomial's edge, saturation, NaN, infinities) on every
    ISA this CPU runs."""
    _C = pytest.importorskip("pyfast._C")
    x = np.concatenate([np.linspace(-95, 95, 200001), np.logspace(-30, 1, 20001),
                        -np.logspace(-30, 1, 20001), [0.625, -0.625, 0.0, -0.0, np.inf,
                                                      -np.inf, np.nan]]).astype(np.float32)
    x64 = x.astype(np.float64)
    want = 1 / (1 + np.exp(-x64)) if name == "sigmoid" else np.tanh(x64)
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    normal = np.abs(want) >= np.finfo(np.float32).tiny
    before = _C.isa()
    try:
        for isa in _C.supported_isas():
            _C.set_isa(isa)
            got = getattr(pf.ops, name)(x, backend="native").astype(np.float64)
            ok = np.isnan(want)
            assert np.array_equal(np.isnan(got), ok), isa
            err = np.abs(got - want)
            assert (err[normal & ~ok] <= 4 * ulp[normal & ~ok]).all(), (isa, err[normal].max())
            assert (err[~normal & ~ok] < 2e-38).all(), isa         # below the normal range
            assert np.array_equal(np.signbit(got[~ok]), np.signbit(want[~ok])), isa
    finally:
        _C.set_isa(before)
