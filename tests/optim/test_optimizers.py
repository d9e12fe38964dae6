"""pf.optim against torch.optim: same updates over 50 steps for every option, the same
defaults and errors, state dicts in torch's layout that round-trip, and the flat-buffer
contract (one kernel call per group, one fill per zero_grad, views that never orphan)."""

import inspect

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params

torch = pytest.importorskip("torch")

SHAPES = [(7, 5), (5,), (3, 1, 3), (1,)]

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.5, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, momentum=0.5)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.005, alpha=0.9, centered=True, momentum=0.9, weight_decay=0.05)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
]


def _ids(cfg):
    name, kw = cfg
    return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


def _params(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [pf.nn.Parameter(a.copy()) for a in init]
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    return ours, theirs


def _feed(ours, theirs, rng, dtype):
    grads = [rng.standard_normal(p.shape).astype(dtype) for p in ours]
    for p, g in zip(ours, grads):
        p.grad.data[...] += g           # as backward does: into the existing gradient
    for p, g in zip(theirs, grads):
        p.grad = torch.from_numpy(g.copy())


def _close(ours, theirs, dtype):
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.data, q.detach().numpy(), **tol)


def _run(name, kw, ours, theirs, steps, rng, dtype, groups=None):
    opt = getattr(pf.optim, name)(groups(ours) if groups else ours, **kw)
    ref = getattr(torch.optim, name)(groups(theirs) if groups else theirs, **kw)
    for _ in range(steps):
        opt.zero_grad()
        ref.zero_grad()
        _feed(ours, theirs, rng, dtype)
        opt.step()
        ref.step()
    return opt, ref


@pytest.mark.parametrize("backend", backend_params("optim", "cpu"))
@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_matches_torch_over_50_steps(cfg, backend):
    name, kw = cfg
    ours, theirs = _params()
    with pf.use_backend(backend):
        _run(name, kw, ours, theirs, 50, np.random.default_rng(1), np.float32)
    _close(ours, theirs, np.float32)


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c[1]], ids=_ids)
def test_matches_torch_in_float64(cfg):
    name, kw = cfg
    ours, theirs = _params(np.float64)
    _run(name, kw, ours, theirs, 50, np.random.default_rng(2), np.float64)
    _close(ours, theirs, np.float64)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW"])
def test_param_groups_with_their_own_options(name):
    ours, theirs = _params()
    extra = {"momentum": 0.5} if name in ("SGD", "RMSprop") else {"weight_decay": 0.2}

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.003, **extra}]

    opt, _ = _run(name, {"lr": 0.02}, ours, theirs, 30, np.random.default_rng(3), np.float32,
                  groups)
    _close(ours, theirs, np.float32)
    assert [g["lr"] for g in opt.param_groups] == [0.02, 0.003]


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW"])
def test_constructor_defaults_are_torchs(name):
    ours = inspect.signature(getattr(pf.optim, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    assert list(ours) == list(theirs)
    for key, p in theirs.items():
        if key != "params":
            assert ours[key].default == p.default, key
            assert ours[key].kind == p.kind, key
    p = [pf.nn.Parameter(np.ones(2, np.float32))]
    q = [torch.nn.Parameter(torch.ones(2))]
    assert pf_group(getattr(pf.optim, name)(p)) == pf_group(getattr(torch.optim, name)(q))


def pf_group(opt):
    return {k: v for k, v in opt.state_dict()["param_groups"][0].items()}


def test_mlp_trained_with_pf_autograd_follows_torch():
    """Gradients from pf's tape on a two-layer MLP, fed to both optimizers each step."""
    pf.manual_seed(0)
    model = pf.nn.Sequential(pf.nn.Linear(6, 16), pf.nn.ReLU(), pf.nn.Linear(16, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    opt = pf.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    ref = torch.optim.Adam(twin.parameters(), lr=0.01, weight_decay=0.01)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = rng.standard_normal((32, 3)).astype(np.float32)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        losses.append(float(loss.item()))
        loss.backward()
        ref.zero_grad()
        tloss = ((twin(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean()
        tloss.backward()
        for p, q in zip(model.parameters(), twin.parameters()):
            np.testing.assert_allclose(p.grad.data, q.grad.numpy(), rtol=1e-3, atol=1e-5)
        opt.step()
        ref.step()
    for (k, v), q in zip(model.state_dict().items(), twin.state_dict().values()):
        np.testing.assert_allclose(v, q.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    assert losses[-1] < 0.9 * losses[0]


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kw", [
    ("SGD", dict(lr=-0.1)), ("SGD", dict(momentum=-0.5)), ("SGD", dict(weight_decay=-1)),
    ("SGD", dict(nesterov=True)), ("SGD", dict(nesterov=True, momentum=0.9, dampening=0.1)),
    ("SGD", dict(lr=float("nan"))),
    ("RMSprop", dict(lr=-1)), ("RMSprop", dict(eps=-1e-8)), ("RMSprop", dict(alpha=-0.1)),
    ("RMSprop", dict(momentum=-0.1)), ("RMSprop", dict(weight_decay=-0.1)),
    ("Adam", dict(lr=-1e-3)), ("Adam", dict(eps=-1.0)), ("Adam", dict(betas=(1.0, 0.999))),
    ("Adam", dict(betas=(0.9, -0.1))), ("Adam", dict(weight_decay=-0.1)),
    ("Adam", dict(betas=(0.9,))), ("AdamW", dict(betas=(0.9, 1.5))),
])
def test_bad_hyper_parameters_raise_value_error_like_torch(name, kw):
    p = pf.nn.Parameter(np.ones(3, np.float32))
    with pytest.raises(ValueError):
        getattr(pf.optim, name)([p], **kw)
    # torch lets a NaN lr through (NaN < 0 is False); pyfast refuses non-finite values
    if ("betas" not in kw or len(kw["betas"]) == 2) and kw.get("lr") == kw.get("lr"):
        with pytest.raises(ValueError):
            getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(3))], **kw)


def test_bad_params_raise():
    p = pf.nn.Parameter(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        pf.optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        pf.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="only optimize Tensors"):
        pf.optim.SGD([np.ones(3)], lr=0.1)
    with pytest.raises(TypeError, match="float32/float64"):
        pf.optim.SGD([pf.tensor(np.ones(3, np.int64))], lr=0.1)
    with pytest.raises(TypeError, match="sets"):
        pf.optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        pf.optim.SGD([{"params": [p]}, {"params": [p], "lr": 0.2}], lr=0.1)
    with pytest.raises(ValueError, match="duplicate"):
        pf.optim.SGD([p, p], lr=0.1)
    tied = pf.nn.Parameter(np.ones(3, np.float32))
    tied.data = p.data   # a second Tensor over p's array would be packed as an untied copy
    for params in ([p, tied], [{"params": [p]}, {"params": [tied]}]):
        with pytest.raises(ValueError, match="parameter 0 and parameter 1 share memory"):
            pf.optim.Adam(params, lr=0.1)
    opt = pf.optim.SGD([p], lr=0.1)
    half = pf.nn.Parameter(np.ones(2, np.float32))
    half.data = p.data[1:]   # a view into the optimizer's packed buffer
    with pytest.raises(ValueError, match="parameter 0 and parameter 1 share memory"):
        opt.add_param_group({"params": [half]})
    with pytest.raises(ValueError, match="learning rate"):
        pf.optim.SGD([{"params": [p], "lr": -1.0}], lr=0.1)
    with pytest.raises(TypeError):
        pf.optim.SGD([p], lr="0.1")
    q = pf.nn.Parameter(np.ones(2, np.float32))
    opt = pf.optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [p]})
    opt.add_param_group({"params": [q], "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["momentum"] == 0


# -- the flat-buffer contract ---------------------------------------------------------------

def test_params_and_grads_are_views_of_one_buffer_per_group():
    ours, _ = _params()
    opt = pf.optim.Adam([{"params": ours[:3]}, {"params": ours[3:], "lr": 0.1}])
    assert len(opt._buckets) == 2
    flat, gflat = opt._buckets[0].data, opt._buckets[0].grad
    for p in ours[:3]:
        assert np.shares_memory(p.data, flat) and np.shares_memory(p.grad.data, gflat)
    assert flat.size == sum(p.data.size for p in ours[:3])


def test_step_is_one_kernel_call_per_group(monkeypatch):
    calls = []
    real = pf.ops.adam_step

    def counting(param, *args, **kw):
        calls.append(param)
        return real(param, *args, **kw)

    monkeypatch.setattr(pf.ops, "adam_step", counting)
    ours, _ = _params()
    opt = pf.optim.Adam([{"params": ours[:3]}, {"params": ours[3:], "lr": 0.1}])
    for _ in range(3):
        opt.step()
    assert len(calls) == 6
    assert all(isinstance(c, np.ndarray) and c.ndim == 1 for c in calls)


def test_mixed_dtypes_make_one_bucket_each(monkeypatch):
    calls = []
    real = pf.ops.sgd_step
    monkeypatch.setattr(pf.ops, "sgd_step",
                        lambda *a, **k: (calls.append(a[0].dtype), real(*a, **k)))
    ps = [pf.nn.Parameter(np.ones(3, np.float32)), pf.nn.Parameter(np.ones(2, np.float64)),
          pf.nn.Parameter(np.ones(4, np.float32))]
    opt = pf.optim.SGD(ps, lr=0.5)
    for p in ps:
        p.grad.data[...] = 1
    opt.step()
    assert sorted(map(str, calls)) == ["float32", "float64"]
    for p in ps:
        np.testing.assert_array_equal(p.data, 0.5)


def test_zero_grad_is_one_fill_of_the_flat_buffer():
    ours, _ = _params()
    opt = pf.optim.SGD(ours, lr=0.1)
    for p in ours:
        p.grad.data[...] = 3.0
    grads = [p.grad for p in ours]
    opt.zero_grad()
    assert not opt._buckets[0].grad.any()
    assert all(p.grad is g for p, g in zip(ours, grads))   # zeroed in place, not replaced


def test_frozen_params_are_left_alone_and_join_when_unfrozen():
    ours, _ = _params()
    ours[1].requires_grad = False
    before = ours[1].data.copy()
    opt = pf.optim.SGD(ours, lr=0.1, weight_decay=0.5)
    assert ours[1].grad is None
    opt.step()
    np.testing.assert_array_equal(ours[1].data, before)
    ours[1].requires_grad = True           # unfreeze: packed at the next step
    ours[1].grad = np.ones(ours[1].shape, np.float32)
    opt.step()
    np.testing.assert_allclose(ours[1].data, before - 0.1 * (1 + 0.5 * before), rtol=1e-6)
    assert np.shares_memory(ours[1].data, opt._buckets[0].data)


def test_rebound_data_and_grads_are_copied_back_into_the_buffers():
    ours, _ = _params()
    opt = pf.optim.SGD(ours, lr=1.0)
    ours[0].data = np.full(SHAPES[0], 2.0, np.float32)     # a view orphaned
    ours[1].grad = np.full(SHAPES[1], 0.5, np.float32)     # a gradient replaced
    ours[2].grad = None                                    # a gradient dropped
    ours[2].data[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(ours[0].data, 2.0)
    np.testing.assert_array_equal(ours[1].data, _params()[0][1].data - 0.5)
    np.testing.assert_array_equal(ours[2].data, 1.0)
    for p in ours:
        assert np.shares_memory(p.data, opt._buckets[0].data)
        assert np.shares_memory(p.grad.data, opt._buckets[0].grad)


def test_module_zero_grad_set_to_none_and_load_state_dict_keep_the_views():
    pf.manual_seed(1)
    model = pf.nn.Linear(4, 2)
    opt = pf.optim.SGD(model.parameters(), lr=0.1)
    model.load_state_dict({"weight": np.ones((2, 4), np.float32), "bias": np.zeros(2, np.float32)})
    assert np.shares_memory(model.weight.data, opt._buckets[0].data)
    model.zero_grad(set_to_none=True)
    x = np.ones((3, 4), np.float32)
    model(x).sum().backward()
    assert np.shares_memory(model.weight.grad.data, opt._buckets[0].grad)
    opt.step()
    np.testing.assert_allclose(model.weight.data, 1 - 0.1 * 3, rtol=1e-6)
    np.testing.assert_allclose(model.bias.data, -0.1 * 3, rtol=1e-6)


def test_moving_a_model_after_building_the_optimizer_repacks():
    pf.manual_seed(1)
    model = pf.nn.Linear(3, 2)
    opt = pf.optim.Adam(model.parameters(), lr=0.1)
    model(np.ones((1, 3), np.float32)).sum().backward()
    opt.step()
    model.double()
    model(np.ones((1, 3), np.float64)).sum().backward()
    opt.step()
    assert opt._buckets[0].data.dtype == np.float64
    assert np.shares_memory(model.weight.data, opt._buckets[0].data)
    assert opt._buckets[0].step == 2 and opt._buckets[0].state["exp_avg"].any()


# -- state dicts ----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [CONFIGS[3], CONFIGS[8], CONFIGS[12], CONFIGS[15]], ids=_ids)
def test_state_dict_round_trip_through_a_file_continues_identically(cfg, tmp_path):
    pytest.importorskip("safetensors")
    name, kw = cfg
    rng = np.random.default_rng(5)
    ours, theirs = _params()
    opt, ref = _run(name, kw, ours, theirs, 10, rng, np.float32)
    sd = opt.state_dict()
    tsd = ref.state_dict()
    assert sd["param_groups"] == [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
                                  for g in tsd["param_groups"]]
    assert {i: sorted(s) for i, s in sd["state"].items()} == \
           {i: sorted(s) for i, s in tsd["state"].items()}
    pf.save({"optimizer": sd, "params": [p.data for p in ours]}, tmp_path / "opt.st")

    loaded = pf.load(tmp_path / "opt.st")
    clones = [pf.nn.Parameter(a.copy()) for a in loaded["params"]]
    twin = getattr(pf.optim, name)(clones, lr=123.0)        # options come from the state
    twin.load_state_dict(loaded["optimizer"])
    assert twin.param_groups[0]["lr"] == kw.get("lr", opt.param_groups[0]["lr"])
    for _ in range(10):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in ours]
        for o in (opt, twin):
            o.zero_grad()
        for p, q, g in zip(ours, clones, grads):
            p.grad.data[...] = g
            q.grad.data[...] = g
        opt.step()
        twin.step()
    for p, q in zip(ours, clones):
        np.testing.assert_array_equal(p.data, q.data)


def test_loads_torch_optimizer_state_and_continues_like_torch():
    rng = np.random.default_rng(7)
    ours, theirs = _params()
    ref = torch.optim.Adam(theirs, lr=0.01, amsgrad=True)
    for _ in range(5):
        ref.zero_grad()
        for p in theirs:
            p.grad = torch.randn(p.shape)
        ref.step()
    for p, q in zip(ours, theirs):
        p.data[...] = q.detach().numpy()
    opt = pf.optim.Adam(ours)
    opt.load_state_dict(ref.state_dict())
    assert opt.param_groups[0]["amsgrad"] and opt._buckets[0].step == 5
    for _ in range(5):
        opt.zero_grad()
        ref.zero_grad()
        _feed(ours, theirs, rng, np.float32)
        opt.step()
        ref.step()
    _close(ours, theirs, np.float32)


def test_state_dict_before_any_step_is_empty_like_torch():
    ours, theirs = _params()
    assert pf.optim.Adam(ours).state_dict()["state"] == {}
    assert torch.optim.Adam(theirs).state_dict()["state"] == {}
    assert pf.optim.SGD(ours, lr=0.1).state_dict()["state"] == {}


def test_load_state_dict_rejects_mismatches():
    ours, _ = _params()
    opt = pf.optim.Adam(ours)
    opt.step()
    sd = opt.state_dict()
    other = pf.optim.Adam(ours[:2])
    with pytest.raises(ValueError, match="size of optimizer's group"):
        other.load_state_dict(sd)
    two = pf.optim.Adam([{"params": ours[:2]}, {"params": ours[2:]}])
    with pytest.raises(ValueError, match="number of parameter groups"):
        two.load_state_dict(sd)
    bad = opt.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="shape"):
        pf.optim.Adam(ours).load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][1]["step"] = 7.0
    with pytest.raises(ValueError, match="step counts"):
        pf.optim.Adam(ours).load_state_dict(bad)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        pf.optim.Adam(ours).load_state_dict({"state": {}})


def test_add_param_group_keeps_existing_state():
    ours, theirs = _params()
    rng = np.random.default_rng(9)
    opt = pf.optim.Adam(ours[:2], lr=0.01)
    ref = torch.optim.Adam(theirs[:2], lr=0.01)
    for step in range(6):
        if step == 3:
            opt.add_param_group({"params": ours[2:], "lr": 0.02})
            ref.add_param_group({"params": theirs[2:], "lr": 0.02})
        n = 2 if step < 3 else 4
        opt.zero_grad()
        ref.zero_grad()
        _feed(ours[:n], theirs[:n], rng, np.float32)
        opt.step()
        ref.step()
    _close(ours, theirs, np.float32)


def test_state_property_is_keyed_by_parameter_like_torch():
    ours, theirs = _params()
    opt, ref = _run("Adam", dict(lr=0.01), ours, theirs, 3, np.random.default_rng(0), np.float32)
    for p, q in zip(ours, theirs):
        mine, torchs = opt.state[p], ref.state[q]
        assert sorted(mine) == sorted(torchs) and mine["step"] == float(torchs["step"])
        np.testing.assert_allclose(mine["exp_avg"], torchs["exp_avg"].numpy(), rtol=1e-5)
