"""optim family: 50-step trajectories of every backend against torch.optim fed the same
gradients (every option), list-of-buffers calls, and bad input that must leave every
buffer untouched."""

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params

torch = pytest.importorskip("torch")

STEPS = 50
SIZES = (1, 7, 1000, 4099)  # one list call over tensors of these sizes

SGD = [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, dampening=0.3),
       dict(momentum=0.9, nesterov=True), dict(momentum=0.8, weight_decay=0.05),
       dict(weight_decay=0.1)]
RMSPROP = [dict(), dict(momentum=0.9), dict(centered=True), dict(centered=True, momentum=0.5),
           dict(weight_decay=0.05, alpha=0.9, eps=1e-6)]
ADAM = [dict(), dict(amsgrad=True), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled=True),
        dict(weight_decay=0.1, decoupled=True, amsgrad=True), dict(beta1=0.5, beta2=0.9, eps=1e-6)]


def ids(options):
    return ["-".join(f"{k}={v}" for k, v in o.items()) or "defaults" for o in options]


def trajectory(seed, dtype):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    grads = [[rng.standard_normal(n).astype(dtype) for n in SIZES] for _ in range(STEPS)]
    return params, grads


def run_torch(cls, params, grads, **options):
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = cls(tp, **options)
    for step in grads:
        for t, g in zip(tp, step):
            t.grad = torch.tensor(g)
        opt.step()
    return [t.detach().numpy() for t in tp]


def zeros(params):
    return [np.zeros_like(p) for p in params]


def assert_trajectory_close(got, want, dtype):
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **tol)


@pytest.mark.parametrize("backend", backend_params("optim", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", SGD, ids=ids(SGD))
def test_sgd_matches_torch(backend, dtype, options):
    params, grads = trajectory(1, dtype)
    want = run_torch(torch.optim.SGD, params, grads, lr=0.05, **options)
    bufs = zeros(params) if options.get("momentum") else None
    for step, g in enumerate(grads, 1):
        pf.ops.sgd_step(params, g, bufs, lr=0.05, step=step, backend=backend, **options)
    assert_trajectory_close(params, want, dtype)


@pytest.mark.parametrize("backend", backend_params("optim", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", RMSPROP, ids=ids(RMSPROP))
def test_rmsprop_matches_torch(backend, dtype, options):
    params, grads = trajectory(2, dtype)
    want = run_torch(torch.optim.RMSprop, params, grads, lr=0.01, **options)
    sq = zeros(params)
    extra = {}
    if options.get("momentum"):
        extra["momentum_buf"] = zeros(params)
    if options.get("centered"):
        extra["grad_avg"] = zeros(params)
    for g in grads:
        pf.ops.rmsprop_step(params, g, sq, lr=0.01, backend=backend, **options, **extra)
    assert_trajectory_close(params, want, dtype)


@pytest.mark.parametrize("backend", backend_params("optim", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", ADAM, ids=ids(ADAM))
def test_adam_matches_torch(backend, dtype, options):
    params, grads = trajectory(3, dtype)
    torch_options = dict(options)
    cls = torch.optim.AdamW if torch_options.pop("decoupled", False) else torch.optim.Adam
    betas = (torch_options.pop("beta1", 0.9), torch_options.pop("beta2", 0.999))
    torch_options.setdefault("weight_decay", 0.0)
    want = run_torch(cls, params, grads, lr=0.01, betas=betas, **torch_options)
    m, v = zeros(params), zeros(params)
    vmax = zeros(params) if options.get("amsgrad") else None
    for step, g in enumerate(grads, 1):
        pf.ops.adam_step(params, g, m, v, step=step, lr=0.01, max_exp_avg_sq=vmax,
                         backend=backend, **options)
    assert_trajectory_close(params, want, dtype)


@pytest.mark.parametrize("backend", backend_params("optim", "cpu"))
def test_single_array_equals_list_call(backend):
    params, grads = trajectory(4, np.float32)
    one = [p.copy() for p in params]
    m1, v1 = zeros(params), zeros(params)
    m2, v2 = zeros(params), zeros(params)
    for step in range(1, 4):
        pf.ops.adam_step(params, grads[step], m1, v1, step=step, lr=0.1, backend=backend)
        for i in range(len(one)):
            pf.ops.adam_step(one[i], grads[step][i], m2[i], v2[i], step=step, lr=0.1,
                             backend=backend)
    for a, b in zip(params, one):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", backend_params("optim", "cpu"))
def test_large_flat_buffer(backend):
    rng = np.random.default_rng(5)
    p = rng.standard_normal(300_001).astype(np.float32)
    g = rng.standard_normal(p.size).astype(np.float32)
    want = p.copy()
    m, v, mw, vw = (np.zeros_like(p) for _ in range(4))
    pf.ops.adam_step(p, g, m, v, step=1, lr=1e-3, weight_decay=0.01, decoupled=True,
                     backend=backend)
    pf.ops.adam_step(want, g.astype(np.float64).astype(np.float32), mw, vw, step=1, lr=1e-3,
                     weight_decay=0.01, decoupled=True, backend="reference")
    np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-7)


class TestBadInputLeavesBuffersUntouched:
    def setup_method(self):
        rng = np.random.default_rng(6)
        self.p = [rng.standard_normal(5).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
        self.g = [np.ones(5, np.float32), np.ones(3, np.float32)]
        self.m = [np.ones(5, np.float32), np.ones(3, np.float32)]
        self.v = [np.ones(5, np.float32), np.ones(3, np.float32)]
        self.before = [a.copy() for a in self.p + self.m + self.v]

    def untouched(self):
        for a, b in zip(self.p + self.m + self.v, self.before):
            np.testing.assert_array_equal(a, b)

    @pytest.mark.parametrize("kw,match", [
        (dict(lr=-1.0), "lr must be a finite number"),
        (dict(lr=float("nan")), "lr must be a finite number"),
        (dict(lr=float("inf")), "lr must be a finite number"),
        (dict(step=0), "step must be an int >= 1"),
        (dict(beta1=1.0), r"beta1 must be a finite number in \[0.0, 1.0\)"),
        (dict(beta2=-0.1), "beta2 must be"),
        (dict(eps=-1e-8), "eps must be"),
        (dict(weight_decay=float("nan")), "weight_decay must be"),
        (dict(amsgrad=True), "max_exp_avg_sq is required with amsgrad=True"),
    ])
    def test_adam(self, kw, match):
        args = dict(step=1, lr=0.1) | kw
        with pytest.raises(ValueError, match=match):
            pf.ops.adam_step(self.p, self.g, self.m, self.v, **args)
        self.untouched()

    def test_shapes_and_lengths(self):
        with pytest.raises(ValueError, match=r"grad\[1\] has shape \(4,\) but param\[1\] has shape \(3,\)"):
            pf.ops.adam_step(self.p, [self.g[0], np.ones(4, np.float32)], self.m, self.v, step=1, lr=0.1)
        with pytest.raises(ValueError, match="exp_avg must be a list of 2 like param, got a list of 1"):
            pf.ops.adam_step(self.p, self.g, self.m[:1], self.v, step=1, lr=0.1)
        with pytest.raises(TypeError, match=r"grad\[0\] is float64 but param\[0\] is float32"):
            pf.ops.sgd_step(self.p, [self.g[0].astype(np.float64), self.g[1]], lr=0.1)
        with pytest.raises(ValueError, match=r"param\[0\] must be C-contiguous"):
            pf.ops.sgd_step([np.ones(10, np.float32)[::2]], [np.ones(5, np.float32)], lr=0.1)
        self.untouched()

    def test_sgd_and_rmsprop(self):
        with pytest.raises(ValueError, match="momentum_buf is required with momentum=0.9"):
            pf.ops.sgd_step(self.p, self.g, lr=0.1, momentum=0.9)
        with pytest.raises(ValueError, match="nesterov needs momentum > 0 and dampening == 0"):
            pf.ops.sgd_step(self.p, self.g, self.m, lr=0.1, momentum=0.9, dampening=0.1,
                            nesterov=True)
        with pytest.raises(ValueError, match="grad_avg is required with centered=True"):
            pf.ops.rmsprop_step(self.p, self.g, self.v, lr=0.1, centered=True)
        with pytest.raises(ValueError, match="alpha must be"):
            pf.ops.rmsprop_step(self.p, self.g, self.v, lr=0.1, alpha=1.5)
        readonly = self.p[0].copy()
        readonly.flags.writeable = False
        with pytest.raises(ValueError, match="param is read-only"):
            pf.ops.sgd_step(readonly, self.g[0], lr=0.1)
        self.untouched()
