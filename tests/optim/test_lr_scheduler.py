"""Schedulers against torch.optim.lr_scheduler: the same lr (and momentum/beta1) sequence,
state dicts that resume the sequence, torch's errors."""

import numpy as np
import pytest

import pyfast as pf

torch = pytest.importorskip("torch")
LS = pf.optim.lr_scheduler
TLS = torch.optim.lr_scheduler


def _pair(opt_name="SGD", lrs=(0.1,), **kw):
    groups = [{"params": [pf.nn.Parameter(np.ones(2, np.float32))], "lr": lr} for lr in lrs]
    tgroups = [{"params": [torch.nn.Parameter(torch.ones(2))], "lr": lr} for lr in lrs]
    return getattr(pf.optim, opt_name)(groups, **kw), getattr(torch.optim, opt_name)(tgroups, **kw)


def _sequence(opt, sched, steps, key=None):
    out = []
    for _ in range(steps):
        opt.step()
        sched.step()
        row = list(sched.get_last_lr())
        if key == "momentum":
            row += [g["momentum"] for g in opt.param_groups]
        elif key == "betas":
            row += [g["betas"][0] for g in opt.param_groups]
        out.append(row)
    return out


CASES = [
    ("StepLR", dict(step_size=3), 12),
    ("StepLR", dict(step_size=1, gamma=0.5), 6),
    ("CosineAnnealingLR", dict(T_max=10), 25),          # past T_max: torch goes back up
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01), 20),
]


@pytest.mark.parametrize("name, kw, steps", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_epoch_schedulers_match_torch(name, kw, steps):
    opt, ref = _pair(lrs=(0.1, 0.03))
    ours, theirs = getattr(LS, name)(opt, **kw), getattr(TLS, name)(ref, **kw)
    assert ours.get_last_lr() == theirs.get_last_lr()
    assert _sequence(opt, ours, steps) == _sequence(ref, theirs, steps)


ONE_CYCLE = [
    ("SGD", dict(max_lr=0.5, total_steps=40), dict(momentum=0.9), "momentum"),
    ("SGD", dict(max_lr=[0.5, 0.2], epochs=4, steps_per_epoch=10, anneal_strategy="linear"),
     dict(momentum=0.9), "momentum"),
    ("SGD", dict(max_lr=0.5, total_steps=30, three_phase=True, pct_start=0.25), {}, "momentum"),
    ("Adam", dict(max_lr=0.01, total_steps=25, div_factor=10.0, final_div_factor=100.0), {},
     "betas"),
    ("RMSprop", dict(max_lr=0.01, total_steps=20, cycle_momentum=False), {}, None),
]


@pytest.mark.parametrize("opt_name, kw, opt_kw, key", ONE_CYCLE,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(ONE_CYCLE)])
def test_one_cycle_matches_torch_including_momentum(opt_name, kw, opt_kw, key):
    opt, ref = _pair(opt_name, lrs=(0.1, 0.03), **opt_kw)
    ours, theirs = LS.OneCycleLR(opt, **kw), TLS.OneCycleLR(ref, **kw)
    total = kw.get("total_steps") or kw["epochs"] * kw["steps_per_epoch"]
    np.testing.assert_allclose(_sequence(opt, ours, total - 1, key),
                               _sequence(ref, theirs, total - 1, key), rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="Tried to step"):
        for _ in range(3):
            ours.step()


def test_one_cycle_sets_what_torch_sets_in_the_groups():
    opt, ref = _pair("Adam")
    LS.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    TLS.OneCycleLR(ref, max_lr=0.01, total_steps=10)
    ours, theirs = opt.param_groups[0], ref.param_groups[0]
    for key in ("lr", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum", "betas"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-15), key


@pytest.mark.parametrize("make", [
    lambda o: LS.StepLR(o, step_size=2, gamma=0.5),
    lambda o: LS.CosineAnnealingLR(o, T_max=8, eta_min=0.001),
    lambda o: LS.OneCycleLR(o, max_lr=0.3, total_steps=20),
])
def test_state_dict_resumes_the_sequence_through_a_file(make, tmp_path):
    pytest.importorskip("safetensors")
    opt, _ = _pair(momentum=0.9)
    sched = make(opt)
    _sequence(opt, sched, 5, "momentum")
    pf.save({"sched": sched.state_dict(), "opt": opt.state_dict()}, tmp_path / "s.st")
    rest = _sequence(opt, sched, 10, "momentum")

    opt2, _ = _pair(momentum=0.9)
    sched2 = make(opt2)
    state = pf.load(tmp_path / "s.st")
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert _sequence(opt2, sched2, 10, "momentum") == rest


def test_errors():
    opt, _ = _pair()
    with pytest.raises(TypeError, match="not an Optimizer"):
        LS.StepLR(object(), step_size=2)
    with pytest.raises(ValueError, match="step_size"):
        LS.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        LS.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="total_steps OR"):
        LS.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="total_steps"):
        LS.OneCycleLR(opt, max_lr=0.1, total_steps=-3)
    with pytest.raises(ValueError, match="pct_start"):
        LS.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="anneal_strategy"):
        LS.OneCycleLR(opt, max_lr=0.1, total_steps=10, anneal_strategy="exp")
    with pytest.raises(ValueError, match="max_lr"):
        LS.OneCycleLR(opt, max_lr=[0.1, 0.2], total_steps=10)
    with pytest.raises(KeyError, match="initial_lr"):
        LS.StepLR(_pair()[0], step_size=2, last_epoch=3)
