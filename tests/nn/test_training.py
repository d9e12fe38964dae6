"""End to end: a small CNN (conv-bn-relu-pool-linear) trained with a hand-written SGD loop
reaches near-zero loss on a toy problem; residual and dense blocks built from modules give
torch's gradients; no_grad inference leaves no graph."""

import numpy as np

import pyfast as pf
from pyfast import nn
from pyfast.nn import functional as F
from tests.nn.helpers import assert_close, assert_grads_close, copy_params, to_torch, torch


def toy_images(n=64, seed=0):
    """Class 0: bright top half; class 1: bright bottom half; plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, label in enumerate(y):
        x[i, 0, (4 if label else 0):(8 if label else 4)] += 1.0
    return x, y


def test_small_cnn_trains_to_near_zero_loss():
    pf.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 2))
    x, y = toy_images()
    losses = []
    for step in range(60):
        for p in model.parameters():
            p.grad = None
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        for p in model.parameters():
            p.data -= 0.1 * p.grad.data        # plain SGD, in place
        losses.append(loss.item())
    assert losses[-1] < 0.05 < losses[0], losses[::10]
    model.eval()
    with pf.no_grad():
        pred = model(x).numpy().argmax(1)
    assert (pred == y).mean() == 1.0


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class TorchResidual(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def test_residual_and_dense_blocks_match_torch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
    ours, theirs = Residual(4), TorchResidual(4)
    copy_params(ours, theirs)
    dense_ours, dense_theirs = nn.Conv2d(8, 4, 1), torch.nn.Conv2d(8, 4, 1)
    copy_params(dense_ours, dense_theirs)
    xp_, xt = pf.tensor(x, requires_grad=True), to_torch(x, True)
    # x feeds the residual block, the dense concatenation and the final sum: three uses
    yp = dense_ours(pf.cat([ours(xp_), xp_], 1)) + xp_
    yt = dense_theirs(torch.cat([theirs(xt), xt], 1)) + xt
    assert_close(yp, yt, 1e-4, 1e-5)
    g = rng.standard_normal(yt.shape).astype(np.float32)
    yp.backward(g)
    yt.backward(to_torch(g))
    assert_close(xp_.grad, xt.grad, 1e-4, 1e-5, "input")
    assert_grads_close(ours, theirs, 1e-4, 1e-4)


def test_no_grad_inference_records_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with pf.no_grad():
        y = model(np.ones((2, 3), np.float32))
    assert y.grad_fn is None and not y.requires_grad
