"""BatchNorm2d/BatchNorm1d with the fused ReLU and residual add (pf extensions
``activation="relu"``, ``residual=``): forward, every gradient and the running statistics
against torch's BatchNorm + add + relu and against pyfast's own unfused layers, in
training and eval, with momentum and the cumulative average (momentum=None)."""

import numpy as np
import pytest

import pyfast as pf
from pyfast import nn
from pyfast.nn import functional as F

from .helpers import assert_close, copy_params, to_torch, torch

tnn = torch.nn

CASES = [  # (pf layer, torch layer, shape)
    (lambda: nn.BatchNorm2d(5), lambda: tnn.BatchNorm2d(5), (3, 5, 7, 6)),
    (lambda: nn.BatchNorm2d(4), lambda: tnn.BatchNorm2d(4), (1, 4, 5, 3)),  # N = 1, H*W > 1
    (lambda: nn.BatchNorm2d(3, momentum=None), lambda: tnn.BatchNorm2d(3, momentum=None),
     (4, 3, 3, 5)),
    (lambda: nn.BatchNorm2d(3, affine=False, momentum=0.3),
     lambda: tnn.BatchNorm2d(3, affine=False, momentum=0.3), (2, 3, 4, 4)),
    (lambda: nn.BatchNorm1d(6), lambda: tnn.BatchNorm1d(6), (9, 6)),
]


def randomise(torch_layer, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if torch_layer.affine:
            torch_layer.weight.uniform_(0.5, 1.5, generator=g)
            torch_layer.bias.normal_(generator=g)
        if torch_layer.track_running_stats:
            torch_layer.running_mean.normal_(generator=g)
            torch_layer.running_var.uniform_(0.5, 2, generator=g)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("residual", [False, True])
def test_fused_layer_matches_torch_bn_add_relu(case, residual):
    make, make_torch, shape = CASES[case]
    ours, theirs = make(), make_torch()
    randomise(theirs, case)
    copy_params(ours, theirs)
    rng = np.random.default_rng(case)
    for step in range(3):   # running statistics over several steps, then eval
        training = step < 2
        ours.train(training)
        theirs.train(training)
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
        r = rng.standard_normal(shape).astype(np.float32) if residual else None
        gy = rng.standard_normal(shape).astype(np.float32)
        xt = to_torch(x, True)
        rt = to_torch(r, True) if residual else None
        z = theirs(xt) if rt is None else theirs(xt) + rt
        yt = torch.relu(z)
        yt.backward(to_torch(gy))
        xp = pf.tensor(x, requires_grad=True)
        rp = pf.tensor(r, requires_grad=True) if residual else None
        y = ours(xp, activation="relu", residual=rp)
        y.backward(gy)
        assert_close(y.data, yt, what=f"step {step} y")
        assert_close(xp.grad.data, xt.grad, rtol=1e-4, atol=1e-4, what=f"step {step} dx")
        if residual:
            assert_close(rp.grad.data, rt.grad, rtol=1e-6, atol=1e-6, what=f"step {step} dr")
        if theirs.affine:
            assert_close(ours.weight.grad.data, theirs.weight.grad, rtol=1e-4, atol=1e-4,
                         what="dweight")
            assert_close(ours.bias.grad.data, theirs.bias.grad, rtol=1e-4, atol=1e-4,
                         what="dbias")
            ours.zero_grad()
            theirs.zero_grad()
        for key, want in theirs.state_dict().items():
            assert_close(ours.state_dict()[key], want, rtol=1e-5, atol=1e-6,
                         what=f"step {step} {key}")


@pytest.mark.parametrize("momentum", [0.1, None])
def test_fused_running_stats_identical_to_unfused_layer(momentum):
    """The fused layer's statistics are those of the plain layer, bit for bit."""
    fused, plain = nn.BatchNorm2d(6, momentum=momentum), nn.BatchNorm2d(6, momentum=momentum)
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = (rng.standard_normal((4, 6, 5, 7)) * 3 - 1).astype(np.float32)
        r = rng.standard_normal(x.shape).astype(np.float32)
        yf = fused(x, activation="relu", residual=r)
        yp = F.relu(plain(x) + r)
        np.testing.assert_allclose(yf.data, yp.data, rtol=1e-6, atol=1e-6)
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(fused.state_dict()[key], value, err_msg=key)


def test_functional_fused_matches_composition_and_gradients():
    rng = np.random.default_rng(5)
    x = pf.tensor(rng.standard_normal((3, 4, 6, 5)), requires_grad=True)   # float64
    r = pf.tensor(rng.standard_normal((3, 4, 6, 5)), requires_grad=True)
    w = pf.tensor(rng.uniform(0.5, 1.5, 4), requires_grad=True)
    b = pf.tensor(rng.standard_normal(4), requires_grad=True)
    gy = rng.standard_normal((3, 4, 6, 5))
    grads = []
    for fused in (True, False):
        for t in (x, r, w, b):
            t.grad = None
        if fused:
            y = F.batch_norm(x, None, None, w, b, training=True, activation="relu", residual=r)
        else:
            y = F.relu(F.batch_norm(x, None, None, w, b, training=True) + r)
        y.backward(gy)
        grads.append([y.data] + [t.grad.data for t in (x, r, w, b)])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_residual_without_grad_and_errors():
    bn = nn.BatchNorm2d(2)
    x = pf.tensor(np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32),
                  requires_grad=True)
    r = np.ones((2, 2, 3, 3), np.float32)   # plain array: no gradient wanted
    bn(x, activation="relu", residual=r).sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError, match="residual of shape"):
        bn(x, residual=np.ones((2, 2, 3, 1), np.float32))
    with pytest.raises(ValueError, match="activation"):
        bn(x, activation="tanh")
