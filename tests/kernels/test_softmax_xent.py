"""softmax_xent family: softmax, log_softmax, softmax_cross_entropy, BCE-with-logits and MSE
of every backend against torch (semantics: every option of F.cross_entropy and its autograd
gradient) and against the float64 reference, plus the argument checks."""

import itertools

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def logits_and_labels(rng, shape, dtype, scale=3.0, ignore_frac=0.0, ignore_index=-100):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    labels_shape = (shape[0],) + tuple(shape[2:])
    y = rng.integers(0, shape[1], labels_shape)
    if ignore_frac:
        y[rng.random(labels_shape) < ignore_frac] = ignore_index
    return x, y


def torch_xent(x, y, weight=None, **options):
    tx = torch.tensor(x, requires_grad=True)
    tw = None if weight is None else torch.tensor(weight)
    loss = F.cross_entropy(tx, torch.tensor(y), weight=tw, **options)
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), tx.grad.numpy()


OPTIONS = [dict(weight=w, label_smoothing=s, reduction=r)
           for w, s, r in itertools.product((False, True), (0.0, 0.1), ("mean", "sum", "none"))]


def option_id(o):
    return f"{'w' if o['weight'] else 'nw'}-ls{o['label_smoothing']}-{o['reduction']}"


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS, ids=[option_id(o) for o in OPTIONS])
@pytest.mark.parametrize("shape", [(1, 2), (7, 10), (33, 1000), (4, 5, 3, 7), (2, 3, 9)],
                         ids=str)
def test_cross_entropy_matches_torch(backend, dtype, options, shape):
    rng = np.random.default_rng([len(shape), *shape])
    x, y = logits_and_labels(rng, shape, dtype, ignore_frac=0.2, ignore_index=3)
    weight = rng.uniform(0.2, 2.0, shape[1]).astype(dtype) if options["weight"] else None
    kw = dict(label_smoothing=options["label_smoothing"], reduction=options["reduction"],
              ignore_index=3)
    loss, grad = pf.ops.softmax_cross_entropy(x, y, weight=weight, backend=backend, **kw)
    want_loss, want_grad = torch_xent(x, y, weight, **kw)
    assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == x.shape
    np.testing.assert_allclose(loss, want_loss, **TOL[dtype])
    np.testing.assert_allclose(grad, want_grad, **TOL[dtype])


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
@pytest.mark.parametrize("rows,classes", [(1, 50000), (4096, 2), (257, 3001), (1000, 37)])
def test_cross_entropy_random_shapes_vs_float64_reference(backend, rows, classes):
    rng = np.random.default_rng([rows, classes])
    x, y = logits_and_labels(rng, (rows, classes), np.float32, scale=10.0, ignore_frac=0.1)
    loss, grad = pf.ops.softmax_cross_entropy(x, y, label_smoothing=0.05, backend=backend)
    want_loss, want_grad = pf.ops.softmax_cross_entropy(x.astype(np.float64), y,
                                                       label_smoothing=0.05, backend="reference")
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7 / rows)


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
def test_cross_entropy_extreme_logits(backend):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], np.float32)
    y = np.array([1, 2, 0])
    loss, grad = pf.ops.softmax_cross_entropy(x, y, reduction="none", backend=backend)
    want_loss, want_grad = torch_xent(x, y, reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, atol=1e-6)


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
def test_cross_entropy_all_ignored(backend):
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    y = np.full(4, -100)
    loss, grad = pf.ops.softmax_cross_entropy(x, y, backend=backend)
    assert np.isnan(loss) and not grad.any()
    loss, grad = pf.ops.softmax_cross_entropy(x, y, reduction="sum", backend=backend)
    assert loss == 0 and not grad.any()


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
def test_cross_entropy_inplace_and_label_dtypes(backend):
    rng = np.random.default_rng(1)
    x, y = logits_and_labels(rng, (9, 13), np.float32)
    want_loss, want_grad = torch_xent(x, y)
    for labels in (y.astype(np.int32), y.astype(np.uint8), y.astype(np.int16)):
        buf = x.copy()
        loss, grad = pf.ops.softmax_cross_entropy(buf, labels, inplace=True, backend=backend)
        assert grad is buf
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
    loss, grad = pf.ops.softmax_cross_entropy(x[0], y[0], backend=backend)  # unbatched (C,)
    want = torch_xent(x[:1], y[:1])
    assert grad.shape == (13,)
    np.testing.assert_allclose(loss, want[0], rtol=1e-5)
    np.testing.assert_allclose(grad, want[1][0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape,axis", [((5, 7), -1), ((5, 7), 0), ((2, 3, 4, 5), 1),
                                        ((1, 30001), 1), ((6,), 0)])
def test_softmax_matches_torch(backend, log, shape, axis):
    x = (np.random.default_rng(2).standard_normal(shape) * 5).astype(np.float32)
    got = (pf.ops.log_softmax if log else pf.ops.softmax)(x, axis=axis, backend=backend)
    fn = torch.log_softmax if log else torch.softmax
    np.testing.assert_allclose(got, fn(torch.tensor(x), dim=axis).numpy(), rtol=1e-5, atol=1e-6)


def torch_bce(x, t, weight=None, pos_weight=None, reduction="mean"):
    tx = torch.tensor(x, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(
        tx, torch.tensor(t), weight=None if weight is None else torch.tensor(weight),
        pos_weight=None if pos_weight is None else torch.tensor(pos_weight), reduction=reduction)
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", ["none", "weight", "pos_weight", "both", "broadcast"])
def test_bce_with_logits_matches_torch(backend, reduction, weights):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 5, 7)) * 4).astype(np.float32)
    x[0, 0, :3] = [80.0, -80.0, 0.0]
    t = rng.uniform(0, 1, x.shape).astype(np.float32)
    w = rng.uniform(0.5, 2, (7,)).astype(np.float32) if weights in ("weight", "both") else None
    pw = rng.uniform(0.5, 3, (7,)).astype(np.float32) if weights in ("pos_weight", "both") else None
    if weights == "broadcast":  # shapes that are not a suffix of x's: expanded at the boundary
        w = rng.uniform(0.5, 2, (6, 1, 7)).astype(np.float32)
        pw = rng.uniform(0.5, 3, (5, 1)).astype(np.float32)
    loss, grad = pf.ops.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw,
                                                         reduction=reduction, backend=backend)
    want_loss, want_grad = torch_bce(x, t, w, pw, reduction)
    np.testing.assert_allclose(loss, want_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(1,), (17, 3), (4, 1, 9, 11)], ids=str)
def test_mse_matches_torch(backend, reduction, shape):
    rng = np.random.default_rng(4)
    x, t = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    loss, grad = pf.ops.mse_loss(x, t, reduction=reduction, backend=backend)
    tx = torch.tensor(x, requires_grad=True)
    want = F.mse_loss(tx, torch.tensor(t), reduction=reduction)
    want.backward(torch.ones_like(want))
    np.testing.assert_allclose(loss, want.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-5, atol=1e-7)


class TestBadInput:
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 2, 1])

    def test_labels(self):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*labels\[2\] is 7"):
            pf.ops.softmax_cross_entropy(self.x, np.array([0, 1, 7, 1]))
        with pytest.raises(ValueError, match=r"labels\[0\] is -1"):
            pf.ops.softmax_cross_entropy(self.x, np.array([-1, 1, 2, 1]))
        with pytest.raises(ValueError, match=r"labels must have shape \(4,\).*got \(3,\)"):
            pf.ops.softmax_cross_entropy(self.x, self.y[:3])
        with pytest.raises(TypeError, match="labels must be an integer array"):
            pf.ops.softmax_cross_entropy(self.x, self.y.astype(np.float32))

    def test_options(self):
        with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
            pf.ops.softmax_cross_entropy(self.x, self.y, weight=np.ones(4, np.float32))
        with pytest.raises(TypeError, match="weight is float64 but logits is float32"):
            pf.ops.softmax_cross_entropy(self.x, self.y, weight=np.ones(3))
        with pytest.raises(ValueError, match="label_smoothing must be a number in"):
            pf.ops.softmax_cross_entropy(self.x, self.y, label_smoothing=1.5)
        with pytest.raises(ValueError, match="label_smoothing must be a number in"):
            pf.ops.softmax_cross_entropy(self.x, self.y, label_smoothing=float("nan"))
        with pytest.raises(ValueError, match="reduction must be one of"):
            pf.ops.softmax_cross_entropy(self.x, self.y, reduction="avg")
        with pytest.raises(ValueError, match="inplace=True needs C-contiguous"):
            pf.ops.softmax_cross_entropy(np.zeros((3, 4), np.float32).T, self.y, inplace=True)
        with pytest.raises(ValueError, match="axis 2 is out of range"):
            pf.ops.softmax(self.x, axis=2)

    def test_pointwise(self):
        with pytest.raises(ValueError, match=r"target must have the shape of logits, \(4, 3\)"):
            pf.ops.binary_cross_entropy_with_logits(self.x, np.zeros((3, 4), np.float32))
        with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) does not broadcast"):
            pf.ops.binary_cross_entropy_with_logits(self.x, self.x, pos_weight=np.ones(2, np.float32))
        with pytest.raises(TypeError, match="target is float64 but input is float32"):
            pf.ops.mse_loss(self.x, self.x.astype(np.float64))
