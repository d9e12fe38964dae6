"""norm family: batch norm forward (training/eval, running statistics) and backward of
every backend against the float64 reference on odd shapes (the planes and the rows
layouts), torch for semantics, and argument checks of pf.ops and the native bindings."""

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params

SHAPES = [(2, 3), (37, 5), (1, 3, 7), (3, 4, 5, 7), (5, 3, 33, 17), (2, 2, 131, 129)]


def data(shape, dtype, seed, loc=0.0, scale=1.0):
    rng = np.random.default_rng([seed, *shape])
    return (rng.standard_normal(shape) * scale + loc).astype(dtype)


def params(c, dtype, seed):
    rng = np.random.default_rng([seed, c])
    return [rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype),
            rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)]


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", backend_params("norm", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_and_backward_against_reference(backend, dtype, shape, training, affine):
    x = data(shape, dtype, 1, loc=3.0, scale=2.0)        # offset: catches a naive variance
    gy = data(shape, dtype, 2)
    c = shape[1]
    w, b, rm, rv = params(c, dtype, 3)
    if not affine:
        w = b = None
    rm64, rv64 = rm.astype(np.float64), rv.astype(np.float64)
    y, mean, invstd = pf.ops.batch_norm(x, w, b, rm, rv, training=training, momentum=0.3,
                                        eps=1e-4, backend=backend)
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    want = pf.ops.batch_norm(x.astype(np.float64), f64(w), f64(b), rm64, rv64,
                             training=training, momentum=0.3, eps=1e-4, backend="reference")
    for got, exp, name in zip((y, mean, invstd, rm, rv), want[:3] + (rm64, rv64),
                              ("y", "mean", "invstd", "running_mean", "running_var")):
        assert got.dtype == dtype, name
        np.testing.assert_allclose(got, exp, **tol(dtype), err_msg=name)
    grads = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, training=training,
                                       needs=("x", "w", "b"), backend=backend)
    wants = pf.ops.batch_norm_backward(gy.astype(np.float64), x.astype(np.float64), f64(w),
                                       want[1], want[2], training=training, backend="reference")
    for got, exp, name in zip(grads, wants, ("gx", "gweight", "gbias")):
        scale = max(1.0, float(np.abs(exp).max()))
        np.testing.assert_allclose(got / scale, exp / scale, **tol(dtype), err_msg=name)


@pytest.mark.parametrize("backend", backend_params("norm", "cpu"))
def test_needs_subsets(backend):
    x, gy = data((4, 3, 5, 5), np.float64, 4), data((4, 3, 5, 5), np.float64, 5)
    w = params(3, np.float64, 6)[0]
    _, mean, invstd = pf.ops.batch_norm(x, w, None, training=True, backend=backend)
    full = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, backend=backend)
    for needs in [("x",), ("w",), ("b",), ("w", "b"), ()]:
        got = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, needs=needs, backend=backend)
        for name, g, f in zip("xwb", got, full):
            if name in needs:
                np.testing.assert_allclose(g, f, rtol=1e-12)
            else:
                assert g is None


@pytest.mark.parametrize("backend", backend_params("norm", "cpu"))
def test_matches_torch_including_running_stats(backend):
    torch = pytest.importorskip("torch")
    x = data((6, 4, 9, 11), np.float32, 7, loc=-2.0, scale=3.0)
    w, b, rm, rv = params(4, np.float32, 8)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    xt = torch.from_numpy(x).requires_grad_()
    wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    yt = torch.nn.functional.batch_norm(xt, trm, trv, wt, bt, training=True, momentum=0.2,
                                        eps=1e-3)
    gy = data(x.shape, np.float32, 9)
    yt.backward(torch.from_numpy(gy))
    y, mean, invstd = pf.ops.batch_norm(x, w, b, rm, rv, training=True, momentum=0.2, eps=1e-3,
                                        backend=backend)
    gx, gw, gb = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, backend=backend)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(8, 6, 40, 40), (40000, 5), (3, 1, 9000)])
def test_native_threads_agree(threads, shape):
    pytest.importorskip("pyfast._C")
    x = data(shape, np.float32, 10, loc=1.0)
    gy = data(shape, np.float32, 11)
    w = params(shape[1], np.float32, 12)[0]
    before = pf.get_num_threads()
    try:
        pf.set_num_threads(threads)
        got = pf.ops.batch_norm(x, w, None, training=True, backend="native")
        got_grads = pf.ops.batch_norm_backward(gy, x, w, got[1], got[2], backend="native")
    finally:
        pf.set_num_threads(before)
    want = pf.ops.batch_norm(x, w, None, training=True, backend="reference")
    want_grads = pf.ops.batch_norm_backward(gy, x, w, want[1], want[2], backend="reference")
    for g, r in zip(got + got_grads, want + want_grads):
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g / scale, r / scale, rtol=1e-5, atol=1e-5)


def test_native_channel_blocks_agree_bit_for_bit():
    """Small planes go through the native kernels in blocks of channels, sized by the thread
    count (64 + 6 channels at 1 thread, 35 at 2, 24 at 3 here): each channel sums in the same
    order whatever its block, so every output is the same to the bit, ReLU mask and residual
    gradient included, and matches the reference."""
    pytest.importorskip("pyfast._C")
    shape = (4, 70, 3, 5)
    x = data(shape, np.float32, 20, loc=0.5)
    gy = data(shape, np.float32, 21)
    w, b = params(shape[1], np.float32, 22)[:2]
    before = pf.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            pf.set_num_threads(threads)
            y, mean, invstd = pf.ops.batch_norm(x, w, b, training=True, activation="relu",
                                                backend="native")
            grads = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, activation="relu", y=y,
                                               residual=True, backend="native")
            runs.append((y, mean, invstd) + tuple(grads))
    finally:
        pf.set_num_threads(before)
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            np.testing.assert_array_equal(got, first)
    y, mean, invstd = pf.ops.batch_norm(x, w, b, training=True, activation="relu",
                                        backend="reference")
    want = (y, mean, invstd) + tuple(pf.ops.batch_norm_backward(
        gy, x, w, mean, invstd, activation="relu", y=y, residual=True, backend="reference"))
    for got, r in zip(runs[0], want):
        np.testing.assert_allclose(got, r, **tol(np.float32))


def test_argument_errors():
    x = np.ones((4, 3, 2, 2), np.float32)
    c = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="running_mean must have shape"):
        pf.ops.batch_norm(x, c, c, np.ones(4, np.float32), c.copy(), training=True)
    with pytest.raises(ValueError, match="weight must have shape"):
        pf.ops.batch_norm(x, np.ones(2, np.float32), None, training=True)
    with pytest.raises(TypeError, match="float64"):
        pf.ops.batch_norm(x, c.astype(np.float64), None, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        pf.ops.batch_norm(np.ones((1, 3), np.float32), training=True)
    with pytest.raises(ValueError, match="eval mode"):
        pf.ops.batch_norm(x, training=False)
    with pytest.raises(ValueError, match="both"):
        pf.ops.batch_norm(x, running_mean=c.copy(), training=True)
    with pytest.raises(ValueError, match="momentum"):
        pf.ops.batch_norm(x, training=True, momentum=float("nan"))
    with pytest.raises(ValueError, match="read-only"):
        ro = c.copy()
        ro.flags.writeable = False
        pf.ops.batch_norm(x, running_mean=ro, running_var=c.copy(), training=True)
    with pytest.raises(ValueError, match="gy must have shape"):
        pf.ops.batch_norm_backward(np.ones((4, 3), np.float32), x, c, c, c)
    with pytest.raises(ValueError, match="needs"):
        pf.ops.batch_norm_backward(x, x, c, c, c, needs=("z",))


def test_native_bindings_check_their_arguments():
    _C = pytest.importorskip("pyfast._C")
    x = np.ones((4, 3, 5), np.float32)
    c = np.ones(3, np.float32)
    out = lambda: np.empty(3, np.float32)  # noqa: E731
    with pytest.raises(ValueError, match=r"\(N, C, S\)"):
        _C.batch_norm(np.ones((4, 3), np.float32), None, None, None, None,
                      np.empty((4, 3), np.float32), out(), out(), True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="weight must have shape"):
        _C.batch_norm(x, np.ones(2, np.float32), None, None, None, np.empty_like(x), out(),
                      out(), True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        _C.batch_norm(x, None, None, None, None, np.empty_like(x), out(), out(), False, 0.1, 1e-5)
    with pytest.raises(ValueError, match="more than 1 value"):
        _C.batch_norm(np.ones((1, 3, 1), np.float32), None, None, None, None,
                      np.empty((1, 3, 1), np.float32), out(), out(), True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="dtype"):
        _C.batch_norm(x, c.astype(np.float64), None, None, None, np.empty_like(x), out(), out(),
                      True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="gx must have the shape"):
        _C.batch_norm_backward(x, x, None, c, c, np.empty((4, 3), np.float32), None, None, True)
