"""pyfast.torch.optim against torch.optim: 30-step trajectories, state dicts that load into
each other, LR schedulers."""

import pytest

torch = pytest.importorskip("torch")
pft = pytest.importorskip("pyfast.torch")

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("Adam", dict()),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("Adam", dict(lr=1e-2, decoupled_weight_decay=True, weight_decay=0.1, maximize=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, amsgrad=True, weight_decay=0.05)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-2)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, centered=True)),
]


def _params(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 2, 3, 3)]
    ps = [torch.randn(*s, generator=g, dtype=dtype).requires_grad_() for s in shapes]
    ps.append(torch.randn(4, 6, generator=g, dtype=dtype).t().requires_grad_())  # strided
    return ps


def _grad_step(params, k):
    g = torch.Generator().manual_seed(100 + k)
    for i, p in enumerate(params):
        if k % 5 == 3 and i == 1:
            p.grad = None  # a step without this parameter's gradient
            continue
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype) + 0.1 * p.detach()


def _run(opt_cls, kw, steps, params=None, opt=None, start=0):
    params = params if params is not None else _params(0)
    opt = opt or opt_cls(params, **kw)
    for k in range(start, start + steps):
        _grad_step(params, k)
        opt.step()
    return params, opt


@pytest.mark.parametrize("name,kw", CASES, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}" for k in v) or "defaults")
def test_30_step_trajectory_matches_torch(name, kw):
    ours, theirs = getattr(pft.optim, name), getattr(torch.optim, name)
    assert issubclass(ours, theirs) and issubclass(ours, torch.optim.Optimizer)
    p1, o1 = _run(theirs, kw, 30)
    p2, o2 = _run(ours, kw, 30)
    for a, b in zip(p2, p1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i in s1["state"]:
        assert s1["state"][i].keys() == s2["state"][i].keys()
        for key in s1["state"][i]:
            torch.testing.assert_close(s2["state"][i][key], s1["state"][i][key], rtol=1e-5,
                                       atol=1e-5)


@pytest.mark.parametrize("name,kw", [CASES[1], CASES[5], CASES[8], CASES[10]],
                         ids=["sgd", "adam", "adamw", "rmsprop"])
def test_state_dict_loads_both_ways(name, kw):
    ours, theirs = getattr(pft.optim, name), getattr(torch.optim, name)
    for first, second in ((theirs, ours), (ours, theirs)):
        p_ref, o_ref = _run(first, kw, 10)
        _run(first, kw, 5, p_ref, o_ref, start=10)
        p, o = _run(first, kw, 10)
        saved = o.state_dict()
        p_new = [t.detach().clone().requires_grad_() for t in p]
        o_new = second(p_new, **kw)
        o_new.load_state_dict(saved)
        _run(second, kw, 5, p_new, o_new, start=10)
        for a, b in zip(p_new, p_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_step_counters_through_save_load_and_deepcopy():
    """The step counters are views of one flat tensor per list of params: they survive
    torch.save / torch.load and deepcopy, and step on as torch's own do."""
    import copy
    import io
    p_ref, o_ref = _run(torch.optim.Adam, {}, 14)
    p, o = _run(pft.optim.Adam, {}, 9)
    buf = io.BytesIO()
    torch.save(o.state_dict(), buf)
    twin = copy.deepcopy((p, o))
    for params, opt in ((p, o), twin):
        if opt is o:
            buf.seek(0)
            opt.load_state_dict(torch.load(buf))
        _run(None, {}, 5, params, opt, start=9)
        for a, b in zip(params, p_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        steps = [opt.state[q]["step"].item() for q in params]
        assert steps == [o_ref.state[q]["step"].item() for q in p_ref] == [14, 11, 14, 14]


def test_kept_views_follow_new_storage():
    """The NumPy views an optimizer keeps between steps are reused while they fit and
    remade when a parameter gets new storage (``p.data = ...``) or its state is replaced."""
    runs = []
    for cls in (torch.optim.Adam, pft.optim.Adam):
        params = _params(3)
        opt = cls(params, lr=1e-2)
        for k in range(8):
            if k == 3:
                params[0].data = params[0].data.clone()
                opt.state[params[2]]["exp_avg"] = opt.state[params[2]]["exp_avg"].clone()
            if k == 5 and cls is pft.optim.Adam:
                kept = dict(opt._views._kept)
            _grad_step(params, k)
            opt.step()
            if k == 5 and cls is pft.optim.Adam:
                again = opt._views._kept
                assert all(again[i][4] is kept[i][4] for i in kept if i in again)
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_step_matches_torch():
    """Under torch.compile the step takes the operator path (torch.ops.pyfast.adam_step),
    with the step counters and kept views still in play: the same trajectory as torch."""
    runs = []
    for cls, compiled in ((torch.optim.Adam, False), (pft.optim.Adam, True)):
        params = _params(4)
        opt = cls(params, lr=1e-2, weight_decay=1e-2)

        def step():
            opt.step()
        if compiled:
            step = torch.compile(step, backend="aot_eager")
        for k in range(4):
            _grad_step(params, k)
            step()
        runs.append((params, [opt.state[p]["step"].item() for p in params]))
    (want, want_steps), (got, got_steps) = runs
    assert got_steps == want_steps
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lr_scheduler_and_float64():
    trajectories = []
    for cls in (torch.optim.SGD, pft.optim.SGD):
        params = _params(1, torch.float64)
        opt = cls(params, lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        for k in range(12):
            _grad_step(params, k)
            opt.step()
            sched.step()
        trajectories.append(params)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)
    for a, b in zip(*trajectories):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_closure_param_groups_and_unsupported_flags():
    w = torch.zeros(3, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = pft.optim.Adam([{"params": [w]}, {"params": [b], "lr": 0.1}], lr=0.01)

    def closure():
        opt.zero_grad()
        loss = ((w.sum() + b - 1.0) ** 2).sum()
        loss.backward()
        return loss
    first = opt.step(closure)
    for _ in range(20):
        last = opt.step(closure)
    assert last < first
    with pytest.raises(ValueError, match="differentiable"):
        pft.optim.SGD([w], lr=0.1, differentiable=True)
