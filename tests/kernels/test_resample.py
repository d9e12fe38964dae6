"""resample family: nearest and bilinear upsampling (forward and backward), every backend
against the float64 reference on odd shapes and scale factors, torch for the exact sample
positions (integer and fractional scale factors, sizes, align_corners), argument checks."""

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params

# (input shape, size, scale_factor)
CASES = [
    ((2, 3, 4, 5), None, 2),
    ((1, 2, 5, 7), None, (1.7, 2.3)),
    ((2, 1, 6, 3), (13, 4), None),
    ((1, 3, 9, 8), None, 0.5),                    # downsampling
    ((3, 2, 7, 7), (7, 7), None),                 # identity size
    ((4, 32, 16, 16), None, 2),                   # large enough for the native threads
    ((1, 1, 1, 1), (3, 5), None),
]


def data(shape, dtype, seed=0):
    return np.random.default_rng([seed, *shape]).standard_normal(shape).astype(dtype)


def tol(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", backend_params("resample", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode,align", [("nearest", False), ("bilinear", False),
                                        ("bilinear", True)])
def test_forward_and_backward_against_reference(backend, dtype, case, mode, align):
    shape, size, scale = case
    x = data(shape, dtype, 1)
    kw = dict(mode=mode, align_corners=align)
    y = pf.ops.upsample2d(x, size, scale, backend=backend, **kw)
    # the float64 reference on the same sample positions (the tables are dtype-dependent)
    want = pf.ops.upsample2d(x, size, scale, backend="reference", **kw)
    np.testing.assert_allclose(y, want, **tol(dtype))
    gy = data(y.shape, dtype, 2)
    gx = pf.ops.upsample2d_backward(gy, x.shape, scale, backend=backend, **kw)
    want = pf.ops.upsample2d_backward(gy, x.shape, scale, backend="reference", **kw)
    np.testing.assert_allclose(gx, want, **tol(dtype))


@pytest.mark.parametrize("backend", backend_params("resample", "cpu"))
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode,align", [("nearest", None), ("bilinear", False),
                                        ("bilinear", True)])
def test_matches_torch(backend, case, mode, align):
    torch = pytest.importorskip("torch")
    shape, size, scale = case
    x = data(shape, np.float32, 3)
    y = pf.ops.upsample2d(x, size, scale, mode=mode, align_corners=bool(align), backend=backend)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.interpolate(xt, size, scale, mode=mode, align_corners=align)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    gy = data(y.shape, np.float32, 4)
    yt.backward(torch.from_numpy(gy))
    gx = pf.ops.upsample2d_backward(gy, x.shape, scale, mode=mode, align_corners=bool(align),
                                    backend=backend)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_argument_errors():
    x = np.ones((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        pf.ops.upsample2d(x)
    with pytest.raises(ValueError, match="exactly one"):
        pf.ops.upsample2d(x, 8, 2)
    with pytest.raises(ValueError, match="mode"):
        pf.ops.upsample2d(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="align_corners"):
        pf.ops.upsample2d(x, scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="positive"):
        pf.ops.upsample2d(x, scale_factor=0.1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pf.ops.upsample2d(np.ones((2, 4, 4), np.float32), scale_factor=2)
    with pytest.raises(TypeError, match="size"):
        pf.ops.upsample2d(x, size=4.5)
    with pytest.raises(ValueError, match="gy must have shape"):
        pf.ops.upsample2d_backward(np.ones((1, 2, 7, 8), np.float32), x.shape, 2)


def test_native_bindings_check_their_arguments():
    _C = pytest.importorskip("pyfast._C")
    x = np.ones((1, 2, 4, 4), np.float32)
    y = np.empty((1, 2, 8, 8), np.float32)
    good = np.arange(8, dtype=np.int64) // 2
    with pytest.raises(ValueError, match="outside"):
        _C.upsample_nearest2d(x, y, good * 5, good)
    with pytest.raises(ValueError, match="shape"):
        _C.upsample_nearest2d(x, y, good[:4], good)
    with pytest.raises(ValueError, match="int64"):
        _C.upsample_nearest2d(x, y, good.astype(np.int32), good)
    w = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="outside"):
        _C.upsample_bilinear2d(x, y, good, good + 1, w, w, good, good - 1, w, w)
    with pytest.raises(ValueError, match="dtype"):
        _C.upsample_bilinear2d(x, y, good, good, w.astype(np.float64), w, good, good, w, w)
