"""Every layer against torch with copied weights: forward, input and parameter gradients
(float32 tolerance), running statistics, state-dict keys and shapes, default
initialisation, and bad input errors. Finite-difference checks in float64 live in
test_gradcheck.py."""

import math

import numpy as np
import pytest

import pyfast as pf
from pyfast import nn
from tests.nn.helpers import assert_close, compare_module, to_torch, torch

tnn = torch.nn


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng([seed, *shape]).standard_normal(shape).astype(dtype)


# (pyfast layer, torch layer, input shape)
CASES = {
    "linear": (lambda: nn.Linear(7, 5), lambda: tnn.Linear(7, 5), (4, 7)),
    "linear-3d-nobias": (lambda: nn.Linear(7, 5, bias=False), lambda: tnn.Linear(7, 5, bias=False),
                         (2, 3, 7)),
    "relu": (nn.ReLU, tnn.ReLU, (3, 4, 5)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), lambda: tnn.LeakyReLU(0.2), (3, 4, 5)),
    "sigmoid": (nn.Sigmoid, tnn.Sigmoid, (3, 9)),
    "tanh": (nn.Tanh, tnn.Tanh, (3, 9)),
    "bn1d": (lambda: nn.BatchNorm1d(6), lambda: tnn.BatchNorm1d(6), (9, 6)),
    "bn1d-3d": (lambda: nn.BatchNorm1d(6), lambda: tnn.BatchNorm1d(6), (4, 6, 5)),
    "bn2d": (lambda: nn.BatchNorm2d(5), lambda: tnn.BatchNorm2d(5), (3, 5, 7, 6)),
    "bn2d-noaffine": (lambda: nn.BatchNorm2d(5, affine=False, momentum=0.3),
                      lambda: tnn.BatchNorm2d(5, affine=False, momentum=0.3), (3, 5, 4, 3)),
    "bn2d-notrack": (lambda: nn.BatchNorm2d(5, track_running_stats=False),
                     lambda: tnn.BatchNorm2d(5, track_running_stats=False), (3, 5, 4, 3)),
    "maxpool": (lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2), (2, 3, 8, 7)),
    "maxpool-3s2p1": (lambda: nn.MaxPool2d(3, 2, 1), lambda: tnn.MaxPool2d(3, 2, 1), (2, 3, 9, 10)),
    "maxpool-ceil-dil": (lambda: nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
                         lambda: tnn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), (2, 2, 11, 8)),
    "avgpool": (lambda: nn.AvgPool2d(2), lambda: tnn.AvgPool2d(2), (2, 3, 8, 7)),
    "avgpool-pad-ceil": (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True),
                         lambda: tnn.AvgPool2d(3, 2, 1, ceil_mode=True), (2, 3, 10, 9)),
    "avgpool-nopad-count": (lambda: nn.AvgPool2d((3, 2), (2, 1), (1, 1), count_include_pad=False),
                            lambda: tnn.AvgPool2d((3, 2), (2, 1), (1, 1), count_include_pad=False),
                            (2, 3, 7, 6)),
    "avgpool-divisor": (lambda: nn.AvgPool2d(2, divisor_override=3),
                        lambda: tnn.AvgPool2d(2, divisor_override=3), (1, 2, 6, 6)),
    "adaptive-1": (lambda: nn.AdaptiveAvgPool2d(1), lambda: tnn.AdaptiveAvgPool2d(1), (3, 4, 5, 7)),
    "adaptive-3x2": (lambda: nn.AdaptiveAvgPool2d((3, 2)), lambda: tnn.AdaptiveAvgPool2d((3, 2)),
                     (2, 3, 7, 5)),
    "upsample-nearest": (lambda: nn.Upsample(scale_factor=2), lambda: tnn.Upsample(scale_factor=2),
                         (2, 3, 4, 5)),
    "upsample-nearest-odd": (lambda: nn.Upsample(scale_factor=1.7),
                             lambda: tnn.Upsample(scale_factor=1.7), (2, 3, 5, 6)),
    "upsample-nearest-size": (lambda: nn.Upsample(size=(7, 3)), lambda: tnn.Upsample(size=(7, 3)),
                              (1, 2, 5, 6)),
    "upsample-bilinear": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
                          lambda: tnn.Upsample(scale_factor=2, mode="bilinear"), (2, 3, 4, 5)),
    "upsample-bilinear-ac": (lambda: nn.Upsample(scale_factor=2, mode="bilinear",
                                                 align_corners=True),
                             lambda: tnn.Upsample(scale_factor=2, mode="bilinear",
                                                  align_corners=True), (2, 3, 4, 5)),
    "upsample-bilinear-odd": (lambda: nn.Upsample(size=(7, 4), mode="bilinear"),
                              lambda: tnn.Upsample(size=(7, 4), mode="bilinear"), (1, 2, 5, 9)),
    "conv": (lambda: nn.Conv2d(3, 4, 3), lambda: tnn.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    "conv-s2p1-nobias": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
                         lambda: tnn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
                         (2, 4, 9, 8)),
    "conv-groups-dil": (lambda: nn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2),
                        lambda: tnn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2),
                        (1, 4, 8, 7)),
    "conv-same": (lambda: nn.Conv2d(2, 3, 3, padding="same"),
                  lambda: tnn.Conv2d(2, 3, 3, padding="same"), (2, 2, 5, 6)),
    "convT-2x2s2": (lambda: nn.ConvTranspose2d(4, 3, 2, stride=2),
                    lambda: tnn.ConvTranspose2d(4, 3, 2, stride=2), (2, 4, 5, 6)),
    "convT-odd": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                             groups=2, bias=False, dilation=1),
                  lambda: tnn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                              groups=2, bias=False, dilation=1), (1, 4, 4, 5)),
    "conv-relu-fused": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                              nn.Linear(6, 2)),
                        lambda: tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU(),
                                               tnn.Linear(6, 2)), (2, 3, 5, 6)),
    "flatten": (nn.Flatten, tnn.Flatten, (2, 3, 4, 5)),
    "identity": (nn.Identity, tnn.Identity, (2, 3)),
    "sequential": (lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                         nn.Linear(8, 3)),
                   lambda: tnn.Sequential(tnn.Linear(6, 8), tnn.BatchNorm1d(8), tnn.ReLU(),
                                          tnn.Linear(8, 3)), (5, 6)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_layer_matches_torch(name):
    make_ours, make_theirs, shape = CASES[name]
    x = rand(*shape, seed=len(name))
    ours, theirs = make_ours(), make_theirs()
    compare_module(ours, theirs, x, train=True)
    # a second step (running statistics move again), then eval mode
    compare_module(ours, theirs, rand(*shape, seed=len(name) + 1), train=True)
    compare_module(ours, theirs, x, train=False)


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_keys_and_shapes_match_torch(name):
    make_ours, make_theirs, _ = CASES[name]
    ours, theirs = make_ours().state_dict(), make_theirs().state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        assert tuple(ours[k].shape) == tuple(theirs[k].shape), k
        assert str(ours[k].dtype) == str(theirs[k].dtype).replace("torch.", ""), k


def test_batchnorm_running_stats_and_momentum_none():
    ours, theirs = nn.BatchNorm2d(3, momentum=None), tnn.BatchNorm2d(3, momentum=None)
    for step in range(4):
        x = rand(4, 3, 5, 5, seed=step) * (step + 1) + step
        ours(x)
        theirs(to_torch(x))
    for k, v in theirs.state_dict().items():
        assert_close(ours.state_dict()[k], v, what=k)
    assert int(ours.num_batches_tracked.item()) == 4
    ours.eval()
    before = ours.running_mean.numpy().copy()
    ours(rand(4, 3, 5, 5, seed=9))
    assert np.array_equal(before, ours.running_mean.numpy())  # eval does not update


def test_batchnorm_errors():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="4D"):
        bn(rand(2, 3, 4))
    with pytest.raises(ValueError, match="num_features=3"):
        bn(rand(2, 4, 3, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(rand(1, 3))
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm1d(0)


def test_dropout_statistics_and_backward():
    pf.manual_seed(1)
    d = nn.Dropout(0.3)
    x = pf.tensor(np.ones((200, 500), np.float32), requires_grad=True)
    y = d(x)
    kept = y.numpy() != 0
    assert abs(kept.mean() - 0.7) < 0.01
    assert np.allclose(y.numpy()[kept], 1 / 0.7)
    y.backward(np.full(y.shape, 2.0, np.float32))
    assert np.array_equal(x.grad.numpy() != 0, kept)            # same mask in backward
    assert np.allclose(x.grad.numpy()[kept], 2 / 0.7)
    d.eval()
    assert d(x) is x
    assert not nn.Dropout(1.0)(x).numpy().any()
    pf.manual_seed(1)
    again = nn.Dropout(0.3)(np.ones((200, 500), np.float32))
    assert np.array_equal(again.numpy(), y.numpy())             # seeded: reproducible
    for p in (-0.1, 1.5, "a"):
        with pytest.raises(ValueError, match="between 0 and 1"):
            nn.Dropout(p)


@pytest.mark.parametrize("make,fan_in", [
    (lambda: nn.Linear(40, 30), 40),
    (lambda: nn.Conv2d(6, 8, 3), 6 * 9),
    (lambda: nn.Conv2d(6, 8, (3, 5), groups=2), 3 * 15),
    (lambda: nn.ConvTranspose2d(6, 8, 2, stride=2), 8 * 4),   # torch takes fan_in from dim 1
])
def test_default_initialisation_bounds(make, fan_in):
    pf.manual_seed(0)
    m = make()
    bound = 1 / math.sqrt(fan_in)
    w = m.weight.numpy()
    assert w.dtype == np.float32 and np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.9 * bound                         # uniform over the whole range
    assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound
    assert np.abs(m.bias.numpy()).max() <= bound
    pf.manual_seed(0)
    assert np.array_equal(make().weight.numpy(), w)              # seeded


def test_maxpool_ties_and_return_indices_match_torch():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 5.0                          # tie: first in scan order
    y, idx = nn.MaxPool2d(2, return_indices=True)(x)
    yt, it = tnn.MaxPool2d(2, return_indices=True)(to_torch(x))
    assert np.array_equal(idx.numpy(), it.numpy())
    xt = to_torch(x, True)
    tnn.MaxPool2d(2)(xt).sum().backward()
    xp_ = pf.tensor(x, requires_grad=True)
    nn.MaxPool2d(2)(xp_).sum().backward()
    assert np.array_equal(xp_.grad.numpy(), xt.grad.numpy())


def test_pool_and_upsample_errors():
    with pytest.raises(ValueError, match="at most half"):
        nn.MaxPool2d(2, padding=2)(rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="too small"):
        nn.MaxPool2d(5)(rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(C, H, W\)"):
        nn.AvgPool2d(2)(rand(4, 4))
    with pytest.raises(TypeError, match="kernel_size"):
        nn.MaxPool2d(2.5)(rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="mode"):
        nn.Upsample(scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="align_corners"):
        pf.nn.functional.interpolate(rand(1, 1, 2, 2), scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="4-D"):
        pf.nn.functional.interpolate(rand(1, 2, 2), scale_factor=2)
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.ReLU()(np.ones(3, np.int32))
    with pytest.raises(ValueError, match="in_features=7"):
        nn.Linear(7, 2)(rand(3, 6))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        nn.Conv2d(3, 4, 3)(rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="uneven"):
        nn.Conv2d(3, 4, 2, padding="same")(rand(1, 3, 4, 4))


def test_unbatched_pooling():
    x = rand(3, 8, 8)
    for ours, theirs in ((nn.MaxPool2d(2), tnn.MaxPool2d(2)), (nn.AvgPool2d(2), tnn.AvgPool2d(2)),
                         (nn.AdaptiveAvgPool2d(2), tnn.AdaptiveAvgPool2d(2))):
        compare_module(ours, theirs, x)


def test_interpolate_recompute_scale_factor_matches_torch():
    x = rand(1, 2, 5, 7)
    for kw in (dict(scale_factor=1.3, recompute_scale_factor=True),
               dict(scale_factor=(2.5, 0.6)), dict(size=4, mode="bilinear"),
               dict(scale_factor=0.5, mode="bilinear", align_corners=True)):
        got = pf.nn.functional.interpolate(x, **kw)
        want = torch.nn.functional.interpolate(to_torch(x), **kw)
        assert_close(got, want, what=str(kw))


def test_sequential_fuses_conv_relu_into_one_node():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())
    y = m(pf.tensor(rand(1, 2, 5, 5), requires_grad=True))
    assert type(y.grad_fn).__name__ == "_Conv2d" and y.grad_fn.y is not None
    assert (y.numpy() >= 0).all()


def test_conv_transpose_output_size_matches_torch():
    ours, theirs = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1), \
        tnn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = rand(1, 2, 4, 4)
    for size in [(7, 7), (8, 8), (1, 3, 8, 7)]:
        assert_close(ours(x, output_size=size), theirs(to_torch(x), output_size=size),
                     what=str(size))
    with pytest.raises(ValueError, match="not reachable"):
        ours(x, output_size=(10, 10))
