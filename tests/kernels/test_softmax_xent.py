"""softmax_xent family: softmax, log_softmax, softmax_cross_entropy, BCE-with-logits and MSE
of every backend against torch (semantics: every option of F.cross_entropy and its autograd
gradient) and against the float64 reference, plus the argument checks."""

import importlib
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


# ---------------------------------------------------------------------------- non-finite input

@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's inf - inf
@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
@pytest.mark.parametrize("shape", [(6, 37), (6, 37, 5)], ids=str)
def test_cross_entropy_nan_and_inf_logits_as_torch(backend, shape):
    """A NaN or +inf logit poisons its own row (position) only, as in torch, and -inf (a
    masked class) does not. An ignored row's loss and gradient are exactly zero whatever its
    logits hold (torch leaks NaN into that gradient through 0 * NaN in log_softmax's
    backward; an ignored position must not poison a step)."""
    rng = np.random.default_rng(12)
    x, y = logits_and_labels(rng, shape, np.float32)
    first = (0,) * (len(shape) - 2)  # the first position of every item: rows (N, C)
    xr, yr = x[(slice(None), slice(None)) + first], y[(slice(None),) + first]
    xr[0, 3] = np.nan
    xr[1, 5] = np.inf
    xr[2, (yr[2] + 1) % shape[1]] = -np.inf  # a masked class that is not the label
    xr[3, 0] = np.nan
    yr[3] = -100  # ignored
    loss, grad = pf.ops.softmax_cross_entropy(x, y, reduction="none", backend=backend)
    want_loss, want_grad = torch_xent(x, y, reduction="none")
    want_grad[(3, slice(None)) + first] = 0
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(want_loss))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(want_grad))
    ok = ~np.isnan(want_loss)
    np.testing.assert_allclose(loss[ok], want_loss[ok], rtol=2e-5, atol=1e-6)
    finite = ~np.isnan(want_grad)
    np.testing.assert_allclose(grad[finite], want_grad[finite], rtol=2e-5, atol=2e-6)
    lr, gr = loss[(slice(None),) + first], grad[(slice(None), slice(None)) + first]
    assert np.isnan(lr[:2]).all() and np.isnan(gr[:2]).all()
    assert np.isfinite(lr[2]) and np.isfinite(gr[2]).all()
    assert lr[3] == 0 and not gr[3].any()


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
def test_softmax_and_pointwise_losses_propagate_nan(backend):
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]], np.float32)
    p = pf.ops.softmax(x, backend=backend)
    assert np.isnan(p[0]).all() and np.isfinite(p[1]).all()
    t = np.array([0.0, 1.0, 0.5, 1.0], np.float32)
    for fn in (pf.ops.binary_cross_entropy_with_logits, pf.ops.mse_loss):
        loss, grad = fn(np.array([0.5, np.nan, -1.0, 2.0], np.float32), t, reduction="none",
                        backend=backend)
        assert np.isnan(loss[1]) and np.isnan(grad[1])
        assert np.isfinite(np.delete(loss, 1)).all() and np.isfinite(np.delete(grad, 1)).all()


# ---------------------------------------------------------------------------- native code paths

def test_native_every_isa_and_thread_count_agree():
    """Each SIMD code path the CPU runs (a CI machine may have AVX2 only) and each thread
    count against the float64 reference; thread counts must agree bit for bit."""
    _C = pytest.importorskip("pyfast._C")
    rng = np.random.default_rng(13)
    x, y = logits_and_labels(rng, (67, 301), np.float32, ignore_frac=0.1)
    xs, ys = logits_and_labels(rng, (3, 11, 45), np.float32, ignore_frac=0.1)
    w = rng.uniform(0.5, 2, 301).astype(np.float32)
    b = rng.standard_normal((5, 49)).astype(np.float32)
    t = rng.uniform(0, 1, b.shape).astype(np.float32)
    pw = rng.uniform(0.5, 3, 49).astype(np.float32)

    def run_all(backend):
        return [*pf.ops.softmax_cross_entropy(x, y, weight=w, label_smoothing=0.1,
                                             backend=backend),
                *pf.ops.softmax_cross_entropy(xs, ys, label_smoothing=0.2, backend=backend),
                pf.ops.softmax(x, backend=backend), pf.ops.log_softmax(xs, axis=1, backend=backend),
                *pf.ops.binary_cross_entropy_with_logits(b, t, pos_weight=pw, backend=backend),
                *pf.ops.mse_loss(b, t, reduction="none", backend=backend)]

    want = run_all("reference")
    isa, threads = _C.isa(), pf.get_num_threads()
    try:
        for name in _C.supported_isas():
            _C.set_isa(name)
            runs = []
            for n in (1, 2):
                pf.set_num_threads(n)
                runs.append(run_all("native"))
            for a, b_ in zip(*runs):
                np.testing.assert_array_equal(a, b_, err_msg=f"{name}: 1 vs 2 threads")
            for got, ref in zip(runs[0], want):
                np.testing.assert_allclose(got, ref, rtol=3e-5, atol=1e-6, err_msg=name)
    finally:
        _C.set_isa(isa)
        pf.set_num_threads(threads)


@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cpu"))
@pytest.mark.parametrize("inplace", [False, True])
def test_large_output_streaming_stores(backend, inplace):
    """Outputs beyond 16 MB take the non-temporal store path (rows of any alignment)."""
    rng = np.random.default_rng(14)
    n, c = 97, 43251  # 16.8 MB; odd C: every row starts at a different alignment
    x, y = logits_and_labels(rng, (n, c), np.float32, ignore_frac=0.05)
    sub = np.r_[0:3, 40:43, n - 3:n]
    want_loss, want_grad = pf.ops.softmax_cross_entropy(x[sub], y[sub], label_smoothing=0.1,
                                                       reduction="none", backend="reference")
    loss, grad = pf.ops.softmax_cross_entropy(x, y, label_smoothing=0.1, reduction="none",
                                              inplace=inplace, backend=backend)
    np.testing.assert_allclose(loss[sub], want_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad[sub], want_grad, rtol=2e-5, atol=1e-9)
    p = pf.ops.softmax(grad, backend=backend)
    np.testing.assert_allclose(p[sub], pf.ops.softmax(grad[sub], backend="reference"),
                               rtol=2e-5, atol=1e-9)


class TestNativeBindingChecks:
    """The binding checks everything before touching memory: a direct call with bad input
    raises instead of reading or writing out of bounds."""

    def setup_method(self):
        self._C = pytest.importorskip("pyfast._C")
        self.x = np.random.default_rng(15).standard_normal((4, 5, 1)).astype(np.float32)
        self.y = np.array([[0], [1], [4], [2]])
        self.g = np.zeros_like(self.x)
        self.losses = np.zeros((4, 1), np.float32)

    def call(self, **kw):
        args = dict(logits=self.x, labels=self.y, weight=None, ignore_index=-100,
                    smoothing=0.0, grad_scale=1.0, dlogits=self.g, losses=self.losses) | kw
        return self._C.softmax_xent(**args)

    def test_labels_out_of_range_touch_nothing(self):
        before = self.x.copy()
        for bad in (5, -1, 1 << 40):
            y = self.y.copy()
            y[2, 0] = bad
            with pytest.raises(ValueError, match=rf"labels\[2, 0\] is {bad}"):
                self.call(labels=y, dlogits=self.x)  # in place: the logits must survive
            np.testing.assert_array_equal(self.x, before)
            assert not self.g.any() and not self.losses.any()
        self.call(labels=np.array([[0], [-7], [4], [2]]), ignore_index=-7)  # ignored: fine

    def test_shapes_types_and_layout(self):
        with pytest.raises(ValueError, match=r"labels must have shape \(4, 1\)"):
            self.call(labels=self.y[:3])
        with pytest.raises(ValueError, match="labels must have dtype int64"):
            self.call(labels=self.y.astype(np.int32))
        with pytest.raises(ValueError, match=r"dlogits must have shape \(4, 5, 1\)"):
            self.call(dlogits=np.zeros((4, 6, 1), np.float32))
        with pytest.raises(ValueError, match="dlogits must have dtype float32"):
            self.call(dlogits=self.g.astype(np.float64))
        with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
            self.call(weight=np.ones(4, np.float32))
        with pytest.raises(ValueError, match="losses must be C-contiguous"):
            self.call(losses=np.zeros((4, 2), np.float32)[:, :1])
        readonly = self.g.copy()
        readonly.flags.writeable = False
        with pytest.raises(ValueError, match="dlogits is read-only"):
            self.call(dlogits=readonly)
        with pytest.raises(ValueError, match="logits must be 3-D"):
            self.call(logits=self.x[..., 0])
        with pytest.raises(ValueError, match="smoothing must be in"):
            self.call(smoothing=float("nan"))
        with pytest.raises(TypeError, match="logits must be float32 or float64"):
            self.call(logits=self.x.astype(np.float16))

    def test_softmax_and_pointwise(self):
        with pytest.raises(ValueError, match=r"out must have shape \(4, 5, 1\)"):
            self._C.softmax(self.x, np.zeros((4, 5, 2), np.float32), False)
        x = np.zeros(12, np.float32)
        with pytest.raises(ValueError, match="weight must be 1-D with a size that divides 12"):
            self._C.bce_with_logits(x, x, np.ones(5, np.float32), None, 1.0, x.copy(), None)
        with pytest.raises(ValueError, match=r"grad must have shape \(12,\)"):
            self._C.mse(x, x, 1.0, np.zeros(11, np.float32), None)
        with pytest.raises(ValueError, match="grad_scale must be finite"):
            self._C.mse(x, x, float("inf"), x.copy(), None)


# ---------------------------------------------------------------------------- numba-cuda, GPU

@pytest.mark.cudasim
@pytest.mark.parametrize("options", OPTIONS[::2] + [OPTIONS[-1]], ids=option_id)
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 3), (1, 130)], ids=str)
def test_numba_cuda_cross_entropy_in_simulator(options, shape):
    from pyfast.kernels import cuda as kernels
    rng = np.random.default_rng(list(shape))
    x, y = logits_and_labels(rng, shape, np.float64, ignore_frac=0.3)
    n, c = shape[:2]
    s = x.size // (n * c)
    w = rng.uniform(0.5, 2, c) if options["weight"] else None
    e = options["label_smoothing"]
    got_g, got_l = np.empty_like(x), np.empty((n, s))
    kernels.softmax_xent(x.reshape(n, c, s), y.reshape(n, s), w, -100, e, 0.5,
                         got_g.reshape(n, c, s), got_l)
    ref = importlib.import_module("pyfast.backends.reference.softmax_xent")
    want_g, want_l = np.empty_like(x), np.empty((n, s))
    ref.softmax_xent(x.reshape(n, c, s), y.reshape(n, s), w, -100, e, 0.5,
                     want_g.reshape(n, c, s), want_l)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got_l, want_l, rtol=1e-10, atol=1e-13)


@pytest.mark.cudasim
def test_numba_cuda_softmax_and_pointwise_in_simulator():
    from pyfast.kernels import cuda as kernels
    ref = importlib.import_module("pyfast.backends.reference.softmax_xent")
    rng = np.random.default_rng(16)
    for shape in [(3, 7, 1), (2, 5, 3)]:
        x = rng.standard_normal(shape).astype(np.float32) * 4
        for log in (False, True):
            got, want = np.empty_like(x), np.empty_like(x)
            kernels.softmax(x, got, log)
            ref.softmax(x, want, log)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    x = rng.standard_normal(12).astype(np.float32) * 4
    t = rng.uniform(0, 1, 12).astype(np.float32)
    w, pw = rng.uniform(0.5, 2, 4).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)
    for losses in (None, np.empty_like(x)):
        got_g, want_g = np.empty_like(x), np.empty_like(x)
        want_l = None if losses is None else np.empty_like(x)
        got = kernels.bce_with_logits(x, t, w, pw, 0.25, got_g, losses)
        want = ref.bce_with_logits(x, t, w, pw, 0.25, want_g, want_l)
        np.testing.assert_allclose(got_g, want_g, rtol=1e-5, atol=1e-7)
        if losses is None:
            assert got == pytest.approx(want, rel=1e-5)
        else:
            np.testing.assert_allclose(losses, want_l, rtol=1e-5, atol=1e-7)
        got = kernels.mse(x, t, 0.25, got_g, losses)
        want = ref.mse(x, t, 0.25, want_g, want_l)
        np.testing.assert_allclose(got_g, want_g, rtol=1e-6)
        if losses is None:
            assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cuda"))
@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
@pytest.mark.parametrize("shape", [(1, 2), (33, 1000), (1000, 37), (4, 5, 3, 7), (7, 50000)],
                         ids=str)
def test_cuda_cross_entropy_matches_reference(backend, options, shape):
    import cupy
    rng = np.random.default_rng([len(shape), *shape])
    x, y = logits_and_labels(rng, shape, np.float32, ignore_frac=0.2, ignore_index=3)
    weight = rng.uniform(0.2, 2.0, shape[1]).astype(np.float32) if options["weight"] else None
    kw = dict(label_smoothing=options["label_smoothing"], reduction=options["reduction"],
              ignore_index=3)
    loss, grad = pf.ops.softmax_cross_entropy(
        cupy.asarray(x), cupy.asarray(y), weight=None if weight is None else cupy.asarray(weight),
        backend=backend, **kw)
    assert isinstance(grad, cupy.ndarray)
    want_loss, want_grad = torch_xent(x, y, weight, **kw)
    np.testing.assert_allclose(cupy.asnumpy(loss), want_loss, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(cupy.asnumpy(grad), want_grad, rtol=2e-5, atol=2e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("softmax_xent", "cuda"))
def test_cuda_softmax_pointwise_inplace_and_nan(backend):
    import cupy
    rng = np.random.default_rng(17)
    x = (rng.standard_normal((9, 301)) * 5).astype(np.float32)
    for log, fn in ((False, torch.softmax), (True, torch.log_softmax)):
        for axis in (0, 1):
            got = (pf.ops.log_softmax if log else pf.ops.softmax)(cupy.asarray(x), axis=axis,
                                                                  backend=backend)
            np.testing.assert_allclose(cupy.asnumpy(got), fn(torch.tensor(x), dim=axis).numpy(),
                                       rtol=1e-5, atol=1e-6)
    y = rng.integers(0, 301, 9)
    want = torch_xent(x, y)
    buf = cupy.asarray(x)
    loss, grad = pf.ops.softmax_cross_entropy(buf, cupy.asarray(y), inplace=True, backend=backend)
    assert grad is buf
    np.testing.assert_allclose(cupy.asnumpy(grad), want[1], rtol=1e-5, atol=1e-7)
    b, t = rng.standard_normal((6, 7)).astype(np.float32), rng.uniform(0, 1, (6, 7)).astype(np.float32)
    pw = rng.uniform(0.5, 3, 7).astype(np.float32)
    for reduction in ("mean", "none"):
        loss, grad = pf.ops.binary_cross_entropy_with_logits(
            cupy.asarray(b), cupy.asarray(t), pos_weight=cupy.asarray(pw), reduction=reduction,
            backend=backend)
        want_loss, want_grad = torch_bce(b, t, None, pw, reduction)
        np.testing.assert_allclose(cupy.asnumpy(loss), want_loss, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(cupy.asnumpy(grad), want_grad, rtol=2e-5, atol=1e-7)
    xn = x.copy()
    xn[2, 5] = np.nan
    loss, grad = pf.ops.softmax_cross_entropy(cupy.asarray(xn), cupy.asarray(y), reduction="none",
                                              backend=backend)
    loss = cupy.asnumpy(loss)
    assert np.isnan(loss[2]) and np.isfinite(np.delete(loss, 2)).all()


@pytest.mark.cuda
def test_native_cuda_binding_never_indexes_with_a_bad_label():
    import cupy
    _cuda = pytest.importorskip("pyfast._cuda")
    x = cupy.asarray(np.random.default_rng(18).standard_normal((3, 4, 1)).astype(np.float32))
    g, losses = cupy.zeros_like(x), cupy.zeros((3, 1), np.float32)
    labels = cupy.asarray(np.array([[0], [9], [3]]))
    _cuda.softmax_xent(x, labels, None, -100, 0.0, 1.0, g, losses,
                       stream=cupy.cuda.get_current_stream().ptr)
    got = cupy.asnumpy(losses)[:, 0]
    assert np.isnan(got[1]) and np.isfinite(got[[0, 2]]).all()
    assert np.isnan(cupy.asnumpy(g)[1]).all()
    with pytest.raises(TypeError, match="labels must be int64"):
        _cuda.softmax_xent(x, labels.astype(np.int32), None, -100, 0.0, 1.0, g, losses, stream=0)
