"""Module machinery: registration order, state dicts with torch's keys, load_state_dict
(in place, errors listing every bad key), train/eval, to(), calling with arrays."""

from collections import OrderedDict

import numpy as np
import pytest

import pyfast as pf
from pyfast import nn
from tests.nn.helpers import compare_module, torch


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(5, 3, bias=False)
        self.shared = self.fc1          # registered twice: parameters() lists it once
        self.scale = nn.Parameter(np.ones(3, np.float32))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 5)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(5, 3, bias=False)
        self.shared = self.fc1
        self.scale = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale


def test_registration_order_and_state_dict_keys_match_torch():
    ours, theirs = Block(), TorchBlock()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert len(list(ours.parameters())) == 4
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(c).__name__ for c in ours.children()] == ["Linear", "ReLU", "Linear"]


def test_custom_module_against_torch():
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    compare_module(Block(), TorchBlock(), x)


def test_load_state_dict_copies_in_place():
    m = nn.Linear(3, 2)
    w, b = m.weight.data, m.bias.data
    sd = {"weight": np.arange(6, dtype=np.float64).reshape(2, 3), "bias": torch.ones(2)}
    result = m.load_state_dict(sd)
    assert m.weight.data is w and m.bias.data is b
    assert w.dtype == np.float32 and np.array_equal(w, sd["weight"]) and np.array_equal(b, [1, 1])
    assert result.missing_keys == [] and result.unexpected_keys == []
    # a torch parameter (requires grad) is accepted too
    m.load_state_dict(torch.nn.Linear(3, 2).state_dict(keep_vars=True))


def test_load_state_dict_lists_every_problem_and_copies_nothing():
    m = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    bad = {"0.weight": np.zeros((2, 4)), "0.bias": np.zeros(2), "extra": np.zeros(1),
           "2.weight": np.zeros((2, 2))}
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(bad)
    msg = str(info.value)
    assert 'Missing key(s) in state_dict: "2.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "extra"' in msg
    assert "size mismatch for 0.weight" in msg and "(2, 4)" in msg and "(2, 3)" in msg
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), f"{k} was changed"
    # strict=False: missing/unexpected are reported, shape mismatches still raise
    ok = {"0.weight": np.ones((2, 3)), "extra": np.zeros(1)}
    res = m.load_state_dict(ok, strict=False)
    assert res.missing_keys == ["0.bias", "2.weight", "2.bias"] and res.unexpected_keys == ["extra"]
    assert np.array_equal(m[0].weight.numpy(), np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="size mismatch"):
        m.load_state_dict({"0.weight": np.ones((3, 3))}, strict=False)
    with pytest.raises(TypeError):
        m.load_state_dict([1, 2])


def test_train_eval_and_call_with_arrays():
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    assert m.training and m[1].training
    assert m.eval() is m and not m[1].training
    y = m(np.ones((1, 2), np.float32))
    assert isinstance(y, pf.Tensor)
    y2 = m(torch.ones(1, 2))                                     # DLPack input
    assert np.allclose(y.numpy(), y2.numpy())
    m.train()
    assert m[1].training


def test_zero_grad_and_requires_grad():
    m = nn.Linear(3, 2)
    m(np.ones((1, 3), np.float32)).sum().backward()
    g = m.weight.grad.data
    m.zero_grad(set_to_none=False)
    assert m.weight.grad.data is g and not g.any()
    m.zero_grad()
    assert m.weight.grad is None
    m.requires_grad_(False)
    assert not m(np.ones((1, 3), np.float32)).requires_grad


def test_to_double_rebinds_and_casts():
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    m.double()
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert m[1].running_mean.dtype == np.float64
    assert m[1].num_batches_tracked.dtype == np.int64            # integers are not cast
    assert m.to("cpu") is m
    with pytest.raises(ValueError, match="device"):
        m.to("tpu")


def test_assignment_rules():
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        m.weight = np.zeros((2, 2))
    m.bias = None
    assert "bias" not in m.state_dict()
    m.register_buffer("count", np.zeros(1), persistent=False)
    assert "count" not in m.state_dict() and len(list(m.buffers())) == 1
    with pytest.raises(AttributeError, match="__init__"):
        class Broken(nn.Module):
            def __init__(self):
                self.x = 1
        Broken()


def test_containers():
    seq = nn.Sequential(OrderedDict([("conv", nn.Linear(2, 3)), ("act", nn.ReLU())]))
    assert list(seq.state_dict()) == ["conv.weight", "conv.bias"]
    assert isinstance(seq[-1], nn.ReLU) and len(seq[:1]) == 1
    ml = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 1)])
    md = nn.ModuleDict({"a": nn.Linear(1, 2)})
    holder = nn.Module()
    holder.blocks, holder.heads = ml, md
    assert list(holder.state_dict()) == ["blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                                         "blocks.1.bias", "heads.a.weight", "heads.a.bias"]
    tm = torch.nn.Module()
    tm.blocks = torch.nn.ModuleList([torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)])
    tm.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(1, 2)})
    assert list(holder.state_dict()) == list(tm.state_dict())
    with pytest.raises(IndexError):
        ml[5]
