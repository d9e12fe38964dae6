"""Losses against torch: values and gradients for every reduction and option, the fused
cross-entropy gradient reaching the logits, dice loss against a direct formula, errors."""

import numpy as np
import pytest

import pyfast as pf
from pyfast import nn
from pyfast.nn import functional as F
from tests.nn.helpers import assert_close, to_torch, torch

TF = torch.nn.functional


def rand(*shape, seed=0):
    return np.random.default_rng([seed, *shape]).standard_normal(shape).astype(np.float32)


def check(ours, theirs, x, *extra, rtol=1e-5, atol=1e-6):
    xt, xp_ = to_torch(x, True), pf.tensor(x, requires_grad=True)
    lt, lp = theirs(xt, *extra[1::2]), ours(xp_, *extra[0::2])
    assert_close(lp, lt, rtol, atol, "loss")
    g = np.random.default_rng(1).standard_normal(lt.shape).astype(np.float32) + 1.0
    lt.backward(to_torch(g))
    lp.backward(g)
    assert_close(xp_.grad, xt.grad, rtol, atol, "gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2}, {"ignore_index": 2},
                                     {"weight": np.array([0.5, 1, 2, 1.5], np.float32)}])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
def test_cross_entropy(reduction, options, shape):
    x = rand(*shape, seed=2)
    labels = np.random.default_rng(3).integers(0, 4, (shape[0],) + shape[2:])
    topts = {k: (to_torch(v) if isinstance(v, np.ndarray) else v) for k, v in options.items()}
    check(lambda a, y: F.cross_entropy(a, y, reduction=reduction, **options),
          lambda a, y: TF.cross_entropy(a, y, reduction=reduction, **topts),
          x, labels, torch.from_numpy(labels))
    module = nn.CrossEntropyLoss(reduction=reduction, **options)
    check(module, torch.nn.CrossEntropyLoss(reduction=reduction, **topts), x, labels,
          torch.from_numpy(labels))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits(reduction):
    x = rand(5, 3, seed=4) * 3
    t = np.random.default_rng(5).random((5, 3)).astype(np.float32)
    w, pw = rand(3, seed=6) ** 2, rand(3, seed=7) ** 2 + 0.5
    check(lambda a, y: F.binary_cross_entropy_with_logits(a, y, w, reduction=reduction,
                                                          pos_weight=pw),
          lambda a, y: TF.binary_cross_entropy_with_logits(a, y, to_torch(w), reduction=reduction,
                                                           pos_weight=to_torch(pw)),
          x, t, to_torch(t))
    check(nn.BCEWithLogitsLoss(reduction=reduction),
          torch.nn.BCEWithLogitsLoss(reduction=reduction),
          x, t, to_torch(t))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_with_gradient_to_both_sides(reduction):
    x, y = rand(4, 5, seed=8), rand(4, 5, seed=9)
    check(lambda a, b: F.mse_loss(a, b, reduction=reduction),
          lambda a, b: TF.mse_loss(a, b, reduction=reduction), x, y, to_torch(y))
    yt, yp = to_torch(y, True), pf.tensor(y, requires_grad=True)
    TF.mse_loss(to_torch(x), yt, reduction=reduction).sum().backward()
    F.mse_loss(x, yp, reduction=reduction).sum().backward()
    assert_close(yp.grad, yt.grad)
    assert_close(nn.MSELoss()(x, y), TF.mse_loss(to_torch(x), to_torch(y)))


def test_legacy_reduction_arguments():
    x, y = rand(4, 5), rand(4, 5, seed=1)
    assert_close(F.mse_loss(x, y, size_average=False), TF.mse_loss(to_torch(x), to_torch(y),
                                                                   reduction="sum"))
    assert F.mse_loss(x, y, reduce=False).shape == (4, 5)
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(x, y, reduction="avg")


def test_dice_loss():
    logits = rand(3, 1, 6, 5, seed=10)
    target = (np.random.default_rng(11).random((3, 1, 6, 5)) > 0.5).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    inter = (p * target).sum(axis=(1, 2, 3))
    dice = (2 * inter + 1.0) / (p.sum(axis=(1, 2, 3)) + target.sum(axis=(1, 2, 3)) + 1.0)
    got = F.dice_loss(logits, target)
    assert abs(got.item() - (1 - dice.mean())) < 1e-6
    half = nn.DiceLoss(smooth=0.5)(logits, target).item()
    assert abs(half - F.dice_loss(logits, target, 0.5).item()) < 1e-7
    # a perfect, confident prediction has loss ~0
    assert F.dice_loss((target * 2 - 1) * 50, target).item() < 1e-6
    with pytest.raises(ValueError, match="shape"):
        F.dice_loss(logits, target[:, :, :3])


def test_cross_entropy_gradient_comes_from_the_fused_kernel(monkeypatch):
    calls = []
    real = pf.ops.softmax_cross_entropy
    monkeypatch.setattr(pf.ops, "softmax_cross_entropy",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    x = pf.tensor(rand(4, 3), requires_grad=True)
    F.cross_entropy(x, np.array([0, 1, 2, 1])).backward()
    assert calls == [1] and x.grad is not None                   # one kernel call, fwd+bwd


def test_loss_errors():
    x = rand(4, 3)
    with pytest.raises(ValueError):
        F.cross_entropy(x, np.array([0, 1, 5, 1]))               # label out of range
    with pytest.raises(ValueError):
        F.binary_cross_entropy_with_logits(x, rand(4, 2))
    with pytest.raises(ValueError):
        F.mse_loss(x, rand(3, 4))
