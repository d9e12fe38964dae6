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

    def test_aliased_buffers(self):
        """A buffer updated in place may not share memory with another argument: a param
        that is its own gradient or state, one array twice in a list, overlapping views."""
        p, g, m, v = self.p, self.g, self.m, self.v
        share = "share memory"
        cases = [
            (pf.ops.sgd_step, (p[0], p[0]), dict(lr=0.1), "param and grad " + share),
            (pf.ops.sgd_step, (p[0], g[0], p[0]), dict(lr=0.1, momentum=0.9),
             "param and momentum_buf " + share),
            (pf.ops.sgd_step, (p, g, [m[0], g[1]]), dict(lr=0.1, momentum=0.9),
             r"grad\[1\] and momentum_buf\[1\] " + share),
            (pf.ops.sgd_step, ([p[0], p[0]], [g[0], g[0]]), dict(lr=0.1),
             r"param\[0\] and param\[1\] " + share),
            (pf.ops.adam_step, (p, g, m, m), dict(step=1, lr=0.1),
             r"exp_avg\[[01]\] and exp_avg_sq\[[01]\] " + share),  # the first overlap met
            (pf.ops.adam_step, (p, g, m, v), dict(step=1, lr=0.1, amsgrad=True,
                                                  max_exp_avg_sq=[v[0].copy(), p[1]]),
             r"param\[1\] and max_exp_avg_sq\[1\] " + share),
            (pf.ops.rmsprop_step, (p[0], g[0], m[0]), dict(lr=0.1, centered=True,
                                                           grad_avg=m[0]),
             "square_avg and grad_avg " + share),
        ]
        for fn, args, kw, match in cases:
            with pytest.raises(ValueError, match=match):
                fn(*args, **kw)
            self.untouched()
        flat = np.zeros(8, np.float32)
        with pytest.raises(ValueError, match=r"param\[0\] and param\[1\] " + share):
            pf.ops.sgd_step([flat[:5], flat[4:]], [g[0], np.ones(4, np.float32)], lr=0.1)
        assert not flat.any()
        # views of one flat buffer that do not overlap are the optimizers' normal case, and
        # a gradient may be read for two parameters
        pf.ops.sgd_step([flat[:5], flat[5:]], [g[0], g[0][:3]], lr=0.5)
        np.testing.assert_array_equal(flat, -0.5)
        # memory that arrives through DLPack has no NumPy owner: compared by address
        t = torch.zeros(4)
        with pytest.raises(ValueError, match="param and grad " + share):
            pf.ops.sgd_step(t, t, lr=0.1)
        with pytest.raises(ValueError, match="param and momentum_buf " + share):
            pf.ops.sgd_step(t, torch.ones(4), t.numpy(), lr=0.1, momentum=0.9)


def test_native_kernels_take_numpy_lists_without_python_checks(monkeypatch):
    """The native binding checks every array before writing, so pf.ops hands it lists of
    NumPy arrays as they are; anything it refuses goes on to the full checks, which name
    the argument (the class above) or, as for a strided gradient, make it contiguous."""
    pytest.importorskip("pyfast._C")
    rng = np.random.default_rng(8)
    p = [rng.standard_normal(n).astype(np.float32) for n in (5, 3)]
    g = [rng.standard_normal(n).astype(np.float32) for n in (5, 3)]
    want = [a.copy() for a in p]
    pf.ops.sgd_step(want, [x.copy() for x in g], lr=0.5, backend="reference")
    strided = [np.repeat(g[0], 2)[::2], g[1]]
    got = [a.copy() for a in p]
    pf.ops.sgd_step(got, strided, lr=0.5, backend="native")  # refused, then copied
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    class NoChecks:
        def __init__(self, *args):
            raise AssertionError("pf.ops checked arrays the native kernels check")

    monkeypatch.setattr(pf.ops.optim, "_Buffers", NoChecks)
    got = [a.copy() for a in p]
    pf.ops.sgd_step(got, g, lr=0.5, backend="native")
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    m, v = [np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p]
    pf.ops.adam_step(got, g, m, v, step=1, lr=0.1, backend="native")
    pf.ops.rmsprop_step(got, g, v, lr=0.1, momentum=0.9, momentum_buf=m, backend="native")
    with pytest.raises(AssertionError, match="pf.ops checked"):  # aliased: the full checks
        pf.ops.sgd_step(got, [got[0], g[1]], lr=0.5, backend="native")


def test_native_overlap_search_agrees_with_python():
    """pf.ops.optim's two searches for shared memory (the native one on NumPy arrays, the
    Python one for everything else) find the same first pair on random mixes of views of a
    few buffers: overlapping and disjoint slices, strided and reversed views, empty ones,
    one array twice, read-only entries that may share."""
    from pyfast import _C
    from pyfast.ops.optim import _first_overlap
    rng = np.random.default_rng(11)
    found = 0
    for _ in range(400):
        buffers = [np.zeros(64, np.float32) for _ in range(rng.integers(1, 4))]
        entries = []
        for i in range(rng.integers(1, 7)):
            base = buffers[rng.integers(len(buffers))]
            lo = int(rng.integers(0, 64))
            hi = int(rng.integers(lo, 65))
            step = int(rng.choice([1, 1, 2, 3, -1, -2]))
            view = base[lo:hi:step] if step > 0 else base[lo:hi][::step]
            if rng.random() < 0.2:
                view = base.reshape(8, 8)[lo % 8:, ::2].T
            entries.append((("x", i), view, bool(rng.random() < 0.6)))
        want = _first_overlap(entries)
        got = _C.first_overlap([a for _, a, _ in entries], [w for _, _, w in entries])
        assert got == want, [(a.__array_interface__["data"][0], a.shape, a.strides, w)
                             for _, a, w in entries]
        found += want is not None
    assert 100 < found < 380  # both outcomes were exercised
    with pytest.raises(ValueError, match="written must have one flag per array"):
        _C.first_overlap([np.zeros(2)], [])
    with pytest.raises(TypeError, match=r"arrays\[0\] must be a numpy array"):
        _C.first_overlap([[1.0]], [True])


def _reference_steps(kind, params, grads, states, options, steps=1):
    """The reference backend's trajectory (float64 copies) for the given options."""
    ps = [p.astype(np.float64) for p in params]
    st = {k: [v.astype(np.float64) for v in vs] for k, vs in states.items()}
    fn = getattr(pf.ops, kind)
    for step in range(1, steps + 1):
        extra = {"step": step} if kind in ("adam_step", "sgd_step") else {}
        args = [st[k] for k in STATE_ARGS[kind] if k in st]
        fn(ps, [g.astype(np.float64) for g in grads], *args[:2 if kind == "adam_step" else 1],
           lr=0.01, backend="reference", **extra, **options,
           **{k: st[k] for k in STATE_KWARGS[kind] if k in st})
    return ps


STATE_ARGS = {"sgd_step": ["momentum_buf"], "rmsprop_step": ["square_avg"],
              "adam_step": ["exp_avg", "exp_avg_sq"]}
STATE_KWARGS = {"sgd_step": [], "rmsprop_step": ["momentum_buf", "grad_avg"],
                "adam_step": ["max_exp_avg_sq"]}
CASES = [("sgd_step", dict(momentum=0.9, nesterov=True), ["momentum_buf"]),
         ("rmsprop_step", dict(momentum=0.5, centered=True, weight_decay=0.01),
          ["square_avg", "momentum_buf", "grad_avg"]),
         ("adam_step", dict(amsgrad=True, weight_decay=0.1, decoupled=True),
          ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])]


def _run(kind, params, grads, states, options, backend, steps):
    fn = getattr(pf.ops, kind)
    for step in range(1, steps + 1):
        extra = {"step": step} if kind in ("adam_step", "sgd_step") else {}
        pos = [states[k] for k in STATE_ARGS[kind]]
        fn(params, grads, *pos, lr=0.01, backend=backend, **extra, **options,
           **{k: states[k] for k in STATE_KWARGS[kind] if k in states})


@pytest.mark.parametrize("backend", backend_params("optim", "cpu"))
@pytest.mark.parametrize("kind,options,names", CASES, ids=[c[0] for c in CASES])
def test_hundred_tensors_of_mixed_sizes_in_one_call(backend, kind, options, names):
    """One call over 100 tensors (sizes 0 to 20000, 360K elements: the parallel path, with
    thread ranges starting and ending inside tensors) against the float64 reference."""
    rng = np.random.default_rng(7)
    sizes = rng.integers(0, 20_000, 100)
    sizes[:3] = (0, 1, 17)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    # square averages well above grad_avg^2, so the centered sqrt is well conditioned
    states = {k: [(0.5 + np.abs(rng.standard_normal(n)) if k != "grad_avg"
                   else 0.1 * rng.standard_normal(n)).astype(np.float32) for n in sizes]
              for k in names}
    want = _reference_steps(kind, params, grads, states, options, steps=2)
    _run(kind, params, grads, states, options, backend, steps=2)
    for got, ref in zip(params, want):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's inf / inf
@pytest.mark.parametrize("backend", backend_params("optim", "cpu"))
def test_nan_and_inf_gradients_as_torch(backend):
    """A NaN or inf gradient lands in its own parameter exactly as torch's step puts it."""
    g = np.array([0.5, np.nan, np.inf, -np.inf, -0.25, 1.0], np.float32)
    p0 = np.linspace(-1, 1, 6).astype(np.float32)
    for cls, fn, kw in ((torch.optim.SGD, "sgd_step", dict(momentum=0.9)),
                        (torch.optim.RMSprop, "rmsprop_step", {}),
                        (torch.optim.Adam, "adam_step", {})):
        want = run_torch(cls, [p0], [[g]], lr=0.1, **kw)[0]
        p = p0.copy()
        states = [np.zeros_like(p) for _ in range(2 if fn == "adam_step" else 1)]
        extra = {"step": 1} if fn != "rmsprop_step" else {}
        getattr(pf.ops, fn)(p, g, *states, lr=0.1, backend=backend, **kw, **extra)
        np.testing.assert_array_equal(np.isnan(p), np.isnan(want), err_msg=fn)
        np.testing.assert_allclose(p[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-6,
                                   atol=1e-6, err_msg=fn)
        np.testing.assert_array_equal(p[np.isinf(want)], want[np.isinf(want)], err_msg=fn)


def test_native_every_isa_and_thread_count_agree():
    """Each SIMD path the CPU runs against the reference; 1 and 2 threads bit for bit."""
    _C = pytest.importorskip("pyfast._C")
    rng = np.random.default_rng(8)
    sizes = (70_001, 5, 3)
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    p0 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    isa, threads = _C.isa(), pf.get_num_threads()
    try:
        for name in _C.supported_isas():
            _C.set_isa(name)
            for kind, options, names in CASES:
                runs = []
                for n in (1, 2):
                    pf.set_num_threads(n)
                    params = [p.copy() for p in p0]
                    states = {k: [np.full(s, 0.01, np.float32) for s in sizes] for k in names}
                    _run(kind, params, grads, states, options, "native", steps=3)
                    runs.append(params)
                for a, b in zip(*runs):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} {kind}: 1 vs 2 threads")
                states = {k: [np.full(s, 0.01, np.float32) for s in sizes] for k in names}
                want = _reference_steps(kind, p0, grads, states, options, steps=3)
                for got, ref in zip(runs[0], want):
                    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6,
                                               err_msg=f"{name} {kind}")
    finally:
        _C.set_isa(isa)
        pf.set_num_threads(threads)


class TestNativeBindingChecks:
    """Direct calls of the bindings: every argument checked before any buffer is touched."""

    def setup_method(self):
        self._C = pytest.importorskip("pyfast._C")
        self.p = [np.ones(4, np.float32), np.ones(3, np.float32)]
        self.g = [np.ones(4, np.float32), np.ones(3, np.float32)]
        self.m = [np.zeros(4, np.float32), np.zeros(3, np.float32)]
        self.v = [np.zeros(4, np.float32), np.zeros(3, np.float32)]

    def adam(self, **kw):
        args = dict(params=self.p, grads=self.g, exp_avgs=self.m, exp_avg_sqs=self.v,
                    max_exp_avg_sqs=None, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, decoupled=False, amsgrad=False) | kw
        self._C.adam_step(**args)

    def untouched(self):
        for a in self.p:
            assert (a == 1).all()
        for a in self.m + self.v:
            assert not a.any()

    @pytest.mark.parametrize("kw,match", [
        (dict(lr=-0.1), "lr must be a finite number"),
        (dict(lr=float("nan")), "lr must be a finite number"),
        (dict(eps=float("inf")), "eps must be a finite number"),
        (dict(beta1=1.0), "beta1 must be a finite number"),
        (dict(step=0), "step must be >= 1"),
        (dict(amsgrad=True), "max_exp_avg_sqs is required"),
    ])
    def test_hyper_parameters(self, kw, match):
        with pytest.raises(ValueError, match=match):
            self.adam(**kw)
        self.untouched()

    def test_lists(self):
        with pytest.raises(ValueError, match="grads has 1 arrays but params has 2"):
            self.adam(grads=self.g[:1])
        with pytest.raises(ValueError, match=r"exp_avgs\[1\] must have shape \(3,\), got \(4,\)"):
            self.adam(exp_avgs=[self.m[0], np.zeros(4, np.float32)])
        with pytest.raises(ValueError, match=r"grads\[0\] must have dtype float32"):
            self.adam(grads=[self.g[0].astype(np.float64), self.g[1]])
        with pytest.raises(ValueError, match=r"params\[1\] must be C-contiguous"):
            self.adam(params=[self.p[0], np.ones(6, np.float32)[::2]])
        readonly = np.zeros(3, np.float32)
        readonly.flags.writeable = False
        with pytest.raises(ValueError, match=r"exp_avg_sqs\[1\] is read-only"):
            self.adam(exp_avg_sqs=[self.v[0], readonly])
        with pytest.raises(TypeError, match="params must be a list of numpy arrays"):
            self.adam(params=self.p[0])
        with pytest.raises(ValueError, match="params is an empty list"):
            self.adam(params=[], grads=[])
        self.untouched()
        with pytest.raises(ValueError, match="momentum_bufs is required with momentum > 0"):
            self._C.sgd_step(self.p, self.g, None, 0.1, 0.9, 0.0, False, 0.0, True)
        with pytest.raises(ValueError, match="nesterov needs momentum > 0"):
            self._C.sgd_step(self.p, self.g, self.m, 0.1, 0.0, 0.0, True, 0.0, True)
        with pytest.raises(ValueError, match="grad_avgs is required with centered=True"):
            self._C.rmsprop_step(self.p, self.g, self.v, None, None, 0.1, 0.99, 1e-8, 0.0,
                                 0.0, True)
        self.untouched()


@pytest.mark.cudasim
@pytest.mark.parametrize("kind,options,names", CASES + [
    ("sgd_step", dict(weight_decay=0.1), []),
    ("rmsprop_step", dict(), ["square_avg"]),
    ("adam_step", dict(weight_decay=0.1), ["exp_avg", "exp_avg_sq"])])
def test_numba_cuda_kernels_in_simulator(kind, options, names):
    from pyfast.kernels import cuda as kernels
    rng = np.random.default_rng(9)
    sizes = (5, 1, 9)
    p0 = [rng.standard_normal(n) for n in sizes]
    grads = [rng.standard_normal(n) for n in sizes]
    states = {k: [np.full(n, 0.01) for n in sizes] for k in names}
    want = _reference_steps(kind, p0, grads, states, options, steps=2)
    params = [p.copy() for p in p0]
    lists = {k: [s.copy() for s in v] for k, v in states.items()}
    for step in (1, 2):
        if kind == "sgd_step":
            kernels.sgd_step(params, grads, lists.get("momentum_buf"), 0.01,
                             options.get("momentum", 0.0), 0.0, options.get("nesterov", False),
                             options.get("weight_decay", 0.0), step == 1)
        elif kind == "rmsprop_step":
            kernels.rmsprop_step(params, grads, lists["square_avg"], lists.get("momentum_buf"),
                                 lists.get("grad_avg"), 0.01, 0.99, 1e-8,
                                 options.get("weight_decay", 0.0), options.get("momentum", 0.0),
                                 options.get("centered", False))
        else:
            kernels.adam_step(params, grads, lists["exp_avg"], lists["exp_avg_sq"],
                              lists.get("max_exp_avg_sq"), step, 0.01, 0.9, 0.999, 1e-8,
                              options.get("weight_decay", 0.0), options.get("decoupled", False),
                              options.get("amsgrad", False))
    for got, ref in zip(params, want):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("optim", "cuda"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_trajectories_match_torch(backend, dtype):
    import cupy
    params, grads = trajectory(10, dtype)
    for cls, kind, options in ((torch.optim.SGD, "sgd_step", dict(momentum=0.9, nesterov=True)),
                               (torch.optim.RMSprop, "rmsprop_step", dict(centered=True, momentum=0.5)),
                               (torch.optim.AdamW, "adam_step", dict(weight_decay=0.1, amsgrad=True))):
        want = run_torch(cls, params, grads[:10], lr=0.01, **options)
        dp = [cupy.asarray(p) for p in params]
        states = {"momentum_buf": [cupy.zeros_like(p) for p in dp],
                  "grad_avg": [cupy.zeros_like(p) for p in dp]}
        sq, m, v, vmax = ([cupy.zeros_like(p) for p in dp] for _ in range(4))
        for step, g in enumerate(grads[:10], 1):
            dg = [cupy.asarray(x) for x in g]
            if kind == "sgd_step":
                pf.ops.sgd_step(dp, dg, states["momentum_buf"], lr=0.01, step=step,
                                backend=backend, **options)
            elif kind == "rmsprop_step":
                pf.ops.rmsprop_step(dp, dg, sq, lr=0.01, momentum_buf=states["momentum_buf"],
                                    grad_avg=states["grad_avg"], backend=backend, **options)
            else:
                pf.ops.adam_step(dp, dg, m, v, step=step, lr=0.01, decoupled=True,
                                 max_exp_avg_sq=vmax, backend=backend, **options)
        assert_trajectory_close([cupy.asnumpy(p) for p in dp], want, dtype)
