"""norm family, fused options: y = relu(batch_norm(x) + residual) forward and its backward
(dx, dweight, dbias and the residual's gradient) of every backend against the float64
reference built from the unfused pieces, on odd shapes of both layouts (planes, rows),
N = 1 with H*W > 1, training and eval; against torch's BatchNorm2d + add + relu; and the
argument checks of the new options."""

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params
from tests.kernels.test_norm import data, params, tol

SHAPES = [(7, 5), (1, 3, 7, 9), (3, 4, 5, 7), (2, 3, 1, 1), (5, 3, 33, 17), (1, 2, 131, 3)]


def unfused(x, w, b, rm, rv, residual, relu, training, gy):
    """The float64 oracle composed of the plain kernels: bn, add, relu and their grads."""
    y, mean, invstd = pf.ops.batch_norm(x, w, b, rm, rv, training=training, momentum=0.3,
                                        eps=1e-4, backend="reference")
    z = y if residual is None else y + residual
    out = np.maximum(z, 0) if relu else z
    gz = np.where(out <= 0, 0.0, gy) if relu else gy
    gx, gw, gb = pf.ops.batch_norm_backward(gz, x, w, mean, invstd, training=training,
                                            backend="reference")
    return out, mean, invstd, (gx, gw, gb, gz)


@pytest.mark.parametrize("backend", backend_params("norm", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu,residual", [(True, False), (True, True), (False, True)])
def test_fused_against_unfused_float64(backend, dtype, shape, training, relu, residual):
    x = data(shape, dtype, 1, loc=3.0, scale=2.0)
    r = data(shape, dtype, 4) if residual else None
    gy = data(shape, dtype, 2)
    w, b, rm, rv = params(shape[1], dtype, 3)
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    rm64, rv64 = f64(rm), f64(rv)
    want, wmean, winv, wgrads = unfused(f64(x), f64(w), f64(b), rm64, rv64, f64(r), relu,
                                        training, f64(gy))
    act = "relu" if relu else None
    y, mean, invstd = pf.ops.batch_norm(x, w, b, rm, rv, training=training, momentum=0.3,
                                        eps=1e-4, activation=act, residual=r, backend=backend)
    for got, exp, name in zip((y, mean, invstd, rm, rv), (want, wmean, winv, rm64, rv64),
                              ("y", "mean", "invstd", "running_mean", "running_var")):
        assert got.dtype == dtype, name
        np.testing.assert_allclose(got, exp, **tol(dtype), err_msg=name)
    grads = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, training=training,
                                       activation=act, y=y if relu else None,
                                       residual=residual, backend=backend)
    assert len(grads) == (4 if residual else 3)
    for got, exp, name in zip(grads, wgrads, ("gx", "gweight", "gbias", "gresidual")):
        scale = max(1.0, float(np.abs(exp).max()))
        np.testing.assert_allclose(got / scale, exp / scale, **tol(dtype), err_msg=name)


@pytest.mark.parametrize("backend", backend_params("norm", "cpu"))
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_needs_subsets_and_threads(backend, threads):
    shape = (4, 6, 9, 11)
    x, gy, r = (data(shape, np.float32, s) for s in (5, 6, 7))
    w = params(6, np.float32, 8)[0]
    before = pf.get_num_threads()
    try:
        pf.set_num_threads(threads)
        y, mean, invstd = pf.ops.batch_norm(x, w, None, training=True, activation="relu",
                                            residual=r, backend=backend)
        full = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, activation="relu", y=y,
                                          residual=True, backend=backend)
        for needs in [("x",), ("w", "b"), ()]:
            got = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, needs=needs,
                                             activation="relu", y=y, residual=True,
                                             backend=backend)
            for name, g, f in zip("xwbr", got, full):
                if name in needs or name == "r":
                    np.testing.assert_allclose(g, f, rtol=1e-6, atol=1e-6)
                else:
                    assert g is None
    finally:
        pf.set_num_threads(before)


@pytest.mark.parametrize("backend", backend_params("norm", "cpu"))
@pytest.mark.parametrize("shape", [(6, 4, 9, 11), (1, 3, 5, 5)])
def test_matches_torch_batchnorm_add_relu(backend, shape):
    torch = pytest.importorskip("torch")
    x = data(shape, np.float32, 7, loc=-0.5, scale=3.0)
    res = data(shape, np.float32, 10)
    c = shape[1]
    w, b, rm, rv = params(c, np.float32, 8)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    xt = torch.from_numpy(x).requires_grad_()
    rt = torch.from_numpy(res).requires_grad_()
    wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    yt = torch.relu(torch.nn.functional.batch_norm(xt, trm, trv, wt, bt, training=True,
                                                   momentum=0.2, eps=1e-3) + rt)
    gy = data(shape, np.float32, 9)
    yt.backward(torch.from_numpy(gy))
    y, mean, invstd = pf.ops.batch_norm(x, w, b, rm, rv, training=True, momentum=0.2, eps=1e-3,
                                        activation="relu", residual=res, backend=backend)
    gx, gw, gb, gr = pf.ops.batch_norm_backward(gy, x, w, mean, invstd, activation="relu", y=y,
                                                residual=True, backend=backend)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gr, rt.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", backend_params("norm", "cpu"))
def test_relu_keeps_nan_and_masks_at_zero(backend):
    x = data((2, 2, 3, 3), np.float32, 11)
    x[0, 0, 0, 0] = np.nan
    y, mean, invstd = pf.ops.batch_norm(x, training=False, running_mean=np.zeros(2, np.float32),
                                        running_var=np.ones(2, np.float32), eps=0.0,
                                        activation="relu", backend=backend)
    assert np.isnan(y[0, 0, 0, 0])
    xz = np.zeros((2, 2, 3, 3), np.float32)    # every output exactly 0: every gradient 0
    y, mean, invstd = pf.ops.batch_norm(xz, training=False, running_mean=np.zeros(2, np.float32),
                                        running_var=np.ones(2, np.float32), activation="relu",
                                        backend=backend)
    gx, _, _ = pf.ops.batch_norm_backward(np.ones_like(xz), xz, None, mean, invstd,
                                          training=False, activation="relu", y=y,
                                          backend=backend)
    assert not gx.any()


def test_fused_argument_errors():
    x = np.ones((4, 3, 2, 2), np.float32)
    c = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="activation"):
        pf.ops.batch_norm(x, training=True, activation="gelu")
    with pytest.raises(ValueError, match="residual must have shape"):
        pf.ops.batch_norm(x, training=True, residual=np.ones((4, 3, 2, 1), np.float32))
    with pytest.raises(TypeError, match="float64"):
        pf.ops.batch_norm(x, training=True, residual=x.astype(np.float64))
    with pytest.raises(ValueError, match="needs y"):
        pf.ops.batch_norm_backward(x, x, c, c, c, activation="relu")
    with pytest.raises(ValueError, match="only with activation"):
        pf.ops.batch_norm_backward(x, x, c, c, c, y=x)
    with pytest.raises(ValueError, match="y must have shape"):
        pf.ops.batch_norm_backward(x, x, c, c, c, activation="relu", y=np.ones((4, 3), np.float32))


def test_native_bindings_check_fused_arguments():
    _C = pytest.importorskip("pyfast._C")
    x = np.ones((4, 3, 5), np.float32)
    c = np.ones(3, np.float32)
    out = lambda: np.empty(3, np.float32)  # noqa: E731
    with pytest.raises(ValueError, match="residual must have the shape"):
        _C.batch_norm(x, None, None, None, None, np.empty_like(x), out(), out(), True, 0.1,
                      1e-5, np.ones((4, 3, 4), np.float32), True)
    with pytest.raises(ValueError, match="overlap"):
        _C.batch_norm(x, None, None, None, None, x, out(), out(), True, 0.1, 1e-5, None, True)
    r = np.ones_like(x)
    with pytest.raises(ValueError, match="overlap"):
        _C.batch_norm(x, None, None, None, None, r, out(), out(), True, 0.1, 1e-5, r, True)
    with pytest.raises(ValueError, match="y must have the shape"):
        _C.batch_norm_backward(x, x, None, c, c, np.empty_like(x), None, None, True,
                               np.ones((4, 3, 4), np.float32))
    with pytest.raises(ValueError, match="gresidual must have the shape"):
        _C.batch_norm_backward(x, x, None, c, c, np.empty_like(x), None, None, True, None,
                               np.ones((4, 3, 4), np.float32))
