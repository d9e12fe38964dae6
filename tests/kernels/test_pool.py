"""pool family: max (values, argmax indices, backward routing), average and adaptive
average pooling, every backend against the float64 reference on odd shapes and
geometries, torch for semantics (ties, NaN, ceil mode, divisors), argument checks."""

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params

# (input shape, kernel, stride, padding, dilation, ceil_mode)
GEOMETRIES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((1, 2, 7, 9), 3, 2, 1, 1, False),
    ((2, 1, 11, 6), (3, 2), (2, 1), (1, 0), 1, True),
    ((1, 3, 10, 13), 3, 2, 1, 2, True),
    ((3, 2, 5, 5), 5, 1, 2, 1, False),
    ((4, 5, 33, 31), 2, 2, 0, 1, True),
    ((2, 64, 32, 32), 3, 2, 1, 1, False),       # large enough for the native threads
    ((3, 7, 7), 2, 1, 1, 1, False),              # unbatched
    ((1, 2, 11, 13), (2, 3), 3, (1, 1), (1, 3), False),  # run-time column stride, dilation
    ((2, 2, 6, 40), (1, 4), (1, 3), (0, 2), 1, True),
]


def data(shape, dtype, seed=0):
    rng = np.random.default_rng([seed, *shape])
    return rng.standard_normal(shape).astype(dtype)


def tol(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", backend_params("pool", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_max_pool_against_reference(backend, dtype, geometry):
    shape, k, s, p, d, ceil = geometry
    x = data(shape, dtype, 1)
    y, idx = pf.ops.max_pool2d(x, k, s, p, d, ceil, backend=backend)
    y64, idx64 = pf.ops.max_pool2d(x.astype(np.float64), k, s, p, d, ceil, backend="reference")
    np.testing.assert_array_equal(y, y64.astype(dtype))
    np.testing.assert_array_equal(idx, idx64)
    gy = data(y.shape, dtype, 2)
    gx = pf.ops.max_pool2d_backward(gy, idx, x.shape, backend=backend)
    want = pf.ops.max_pool2d_backward(gy.astype(np.float64), idx64, x.shape, backend="reference")
    np.testing.assert_allclose(gx, want, **tol(dtype))


@pytest.mark.parametrize("backend", backend_params("pool", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("count_include_pad,divisor", [(True, None), (False, None), (True, 5)])
def test_avg_pool_against_reference(backend, dtype, geometry, count_include_pad, divisor):
    shape, k, s, p, _, ceil = geometry
    x = data(shape, dtype, 3)
    y = pf.ops.avg_pool2d(x, k, s, p, ceil, count_include_pad, divisor, backend=backend)
    want = pf.ops.avg_pool2d(x.astype(np.float64), k, s, p, ceil, count_include_pad, divisor,
                             backend="reference")
    np.testing.assert_allclose(y, want, **tol(dtype))
    gy = data(y.shape, dtype, 4)
    gx = pf.ops.avg_pool2d_backward(gy, x.shape, k, s, p, ceil, count_include_pad, divisor,
                                    backend=backend)
    want = pf.ops.avg_pool2d_backward(gy.astype(np.float64), x.shape, k, s, p, ceil,
                                      count_include_pad, divisor, backend="reference")
    np.testing.assert_allclose(gx, want, **tol(dtype))


@pytest.mark.parametrize("backend", backend_params("pool", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,out", [((2, 3, 7, 5), (1, 1)), ((2, 3, 7, 5), (3, 2)),
                                       ((1, 2, 5, 4), (7, 6)), ((4, 64, 16, 16), 1),
                                       ((3, 9, 10), (4, 3))])
def test_adaptive_avg_pool_against_reference(backend, dtype, shape, out):
    x = data(shape, dtype, 5)
    y = pf.ops.adaptive_avg_pool2d(x, out, backend=backend)
    want = pf.ops.adaptive_avg_pool2d(x.astype(np.float64), out, backend="reference")
    np.testing.assert_allclose(y, want, **tol(dtype))
    gy = data(y.shape, dtype, 6)
    gx = pf.ops.adaptive_avg_pool2d_backward(gy, x.shape, backend=backend)
    want = pf.ops.adaptive_avg_pool2d_backward(gy.astype(np.float64), x.shape, backend="reference")
    np.testing.assert_allclose(gx, want, **tol(dtype))


@pytest.mark.parametrize("backend", backend_params("pool", "cpu"))
def test_against_torch_with_ties_nan_and_infinities(backend):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    x = rng.integers(-2, 3, (2, 3, 9, 10)).astype(np.float32)    # many ties
    x[0, 0, 1, 1] = np.nan
    x[1, 2, :4, :4] = -np.inf                                     # an all -inf window
    for k, s, p, d, ceil in [(2, 2, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 2, False),
                             (3, 3, 1, 1, True), ((2, 4), (1, 3), (1, 2), (2, 1), False)]:
        y, idx = pf.ops.max_pool2d(x, k, s, p, d, ceil, backend=backend)
        yt, it = F.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil, return_indices=True)
        np.testing.assert_array_equal(y, yt.numpy())
        np.testing.assert_array_equal(idx, it.numpy())
        gy = rng.standard_normal(y.shape).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_()
        F.max_pool2d(xt, k, s, p, d, ceil).backward(torch.from_numpy(gy))
        np.testing.assert_allclose(pf.ops.max_pool2d_backward(gy, idx, x.shape, backend=backend),
                                   xt.grad.numpy(), rtol=1e-6, atol=1e-6)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    for kw in [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
               dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
               dict(kernel_size=(2, 3), stride=(3, 2), padding=(1, 1), divisor_override=4)]:
        np.testing.assert_allclose(pf.ops.avg_pool2d(x, backend=backend, **kw),
                                   F.avg_pool2d(torch.from_numpy(x), **kw).numpy(),
                                   rtol=1e-6, atol=1e-6, err_msg=str(kw))
    for out in [(1, 1), (4, 3), (9, 10), (12, 5)]:
        np.testing.assert_allclose(pf.ops.adaptive_avg_pool2d(x, out, backend=backend),
                                   F.adaptive_avg_pool2d(torch.from_numpy(x), out).numpy(),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", backend_params("pool", "cpu"))
def test_max_pool_window_wholly_in_padding(backend):
    """Found by the fuzz tests: with dilation a window can miss the plane entirely (1 row,
    kernel 2 dilated by 2, padding 1 reads rows -1 and 1). Its output is -inf as in torch;
    its index is -1 (torch gives a position outside the plane), and the backward routes
    nothing for it instead of refusing its own forward's indices."""
    x = data((2, 3, 1, 5), np.float32)
    y, idx = pf.ops.max_pool2d(x, (2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1),
                               backend=backend)
    assert y.shape == (2, 3, 1, 3)
    assert np.all(np.isneginf(y)) and np.all(idx == -1)
    gx = pf.ops.max_pool2d_backward(np.ones_like(y), idx, x.shape, backend=backend)
    np.testing.assert_array_equal(gx, 0)
    # torch gives the same -inf (its backward, fed its out-of-plane index, writes out of
    # bounds here: torch 2.13 CPU crashes, so it is not called)
    torch = pytest.importorskip("torch")
    ty = torch.nn.functional.max_pool2d(torch.tensor(x), (2, 3), stride=(1, 2),
                                        padding=(1, 1), dilation=(2, 1))
    np.testing.assert_array_equal(y, ty.numpy())
    # (such a window needs size < dilation along its axis, which leaves that axis one
    # output: a plane's windows are all in the padding or none is)
    with pytest.raises(ValueError, match="or be -1"):
        pf.ops.max_pool2d_backward(np.ones_like(y), idx - 1, x.shape, backend=backend)



@pytest.mark.parametrize("shape,k,s,p,d,ceil", [((1, 1, 5, 5), 2, 2, 0, 1, True),
                                                ((1, 1, 6, 7), 3, 2, 1, 1, True),
                                                ((1, 1, 5, 5), 2, 3, 1, 1, True),
                                                ((1, 1, 9, 9), 3, 3, 1, 2, False)])
def test_output_sizes_match_torch(shape, k, s, p, d, ceil):
    torch = pytest.importorskip("torch")
    x = data(shape, np.float32)
    got = pf.ops.max_pool2d(x, k, s, p, d, ceil)[0].shape
    assert got == torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil).shape


def test_argument_errors():
    x = np.ones((1, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match="at most half"):
        pf.ops.max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match="too small"):
        pf.ops.avg_pool2d(x, 7)
    with pytest.raises(ValueError, match=">= 1"):
        pf.ops.max_pool2d(x, 2, stride=0)
    with pytest.raises(TypeError, match="kernel_size"):
        pf.ops.max_pool2d(x, (2, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pf.ops.avg_pool2d(np.ones((6, 6), np.float32), 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        pf.ops.max_pool2d(x.astype(np.int32), 2)
    with pytest.raises(ValueError, match="divisor_override"):
        pf.ops.avg_pool2d(x, 2, divisor_override=0)
    y, idx = pf.ops.max_pool2d(x, 2)
    with pytest.raises(ValueError, match=r"\[0, 36\)"):
        pf.ops.max_pool2d_backward(y, idx + 100, x.shape)
    with pytest.raises(TypeError, match="int64"):
        pf.ops.max_pool2d_backward(y, idx.astype(np.int32), x.shape)
    with pytest.raises(ValueError, match="does not fit"):
        pf.ops.max_pool2d_backward(y, idx, (2, 2, 6, 6))
    with pytest.raises(ValueError, match="gy must have shape"):
        pf.ops.avg_pool2d_backward(y, (1, 2, 8, 8), 2)


def test_native_bindings_check_their_arguments():
    _C = pytest.importorskip("pyfast._C")
    x = np.ones((1, 2, 6, 6), np.float32)
    y = np.empty((1, 2, 3, 3), np.float32)
    idx = np.empty((1, 2, 3, 3), np.int64)
    with pytest.raises(ValueError, match=">= 1"):
        _C.max_pool2d(x, y, idx, 0, 2, 2, 2, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="indices must have the shape"):
        _C.max_pool2d(x, y, np.empty(9, np.int64), 2, 2, 2, 2, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="N and C"):
        _C.avg_pool2d(x, np.empty((1, 3, 3, 3), np.float32), 2, 2, 2, 2, 0, 0, True, 0)
    _C.max_pool2d(x, y, idx, 2, 2, 2, 2, 0, 0, 1, 1)
    idx[0, 0, 0, 0] = 10 ** 9                     # a direct call with a bad index must not crash
    with pytest.raises(ValueError, match="outside"):
        _C.max_pool2d_backward(y, idx, np.empty_like(x))
    with pytest.raises(ValueError, match="non-empty"):
        _C.adaptive_avg_pool2d(np.ones((1, 2, 0, 3), np.float32),
                               np.empty((1, 2, 1, 1), np.float32))
