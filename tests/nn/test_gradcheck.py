"""Finite differences in float64: the gradients of every functional operation and of
small layers (parameters included), on small odd shapes."""

import numpy as np
import pytest

import pyfast as pf
from pyfast import nn
from pyfast.nn import functional as F
from tests.nn.helpers import gradcheck, numerical_gradient


def rand(*shape, seed=0):
    return np.random.default_rng([seed, *shape]).standard_normal(shape)


FUNCTIONS = {
    "linear": (lambda x, w, b: F.linear(x, w, b), [(3, 4), (5, 4), (5,)]),
    "linear-relu": (lambda x, w, b: F.linear(x, w, b, activation="relu"), [(3, 4), (5, 4), (5,)]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(2, 3, 5, 6), (4, 3, 3, 3),
                                                                        (4,)]),
    "conv2d-relu-groups": (lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2,
                                                    activation="relu"),
                           [(1, 4, 4, 5), (2, 2, 3, 2), (2,)]),
    "conv_transpose2d": (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1,
                                                            output_padding=1),
                         [(2, 3, 3, 4), (3, 2, 3, 3), (2,)]),
    "softmax": (lambda x: F.softmax(x, dim=1), [(3, 5)]),
    "log_softmax": (lambda x: F.log_softmax(x, dim=0), [(3, 5)]),
    "mse_loss": (lambda x, y: F.mse_loss(x, y), [(3, 4), (3, 4)]),
    "mse_loss-none": (lambda x, y: F.mse_loss(x, y, reduction="none"), [(3, 4), (3, 4)]),
    "dice_loss": (lambda x: F.dice_loss(x, np.random.default_rng(0).random((2, 1, 3, 3)) > 0.5),
                  [(2, 1, 3, 3)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, np.array([1, 0, 3])), [(3, 4)]),
    "cross_entropy-none-2d": (lambda x: F.cross_entropy(x, np.array([[1, 0], [2, 2]]),
                                                        reduction="none", label_smoothing=0.1),
                              [(2, 3, 2)]),
    "bce": (lambda x: F.binary_cross_entropy_with_logits(x, np.array([[0, 1, 1], [1, 0, 0.5]]),
                                                         pos_weight=np.array([1.0, 2.0, 0.5])),
            [(2, 3)]),
    "relu": (F.relu, [(4, 5)]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), [(4, 5)]),
    "sigmoid": (F.sigmoid, [(4, 5)]),
    "tanh": (F.tanh, [(4, 5)]),
    "batch_norm-train": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                         [(3, 2, 4, 3), (2,), (2,)]),
    "batch_norm-2d": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                      [(5, 3), (3,), (3,)]),
    "batch_norm-eval": (lambda x, w, b: F.batch_norm(x, np.linspace(-1, 1, 2), np.array([0.5, 2.0]),
                                                     w, b, training=False),
                        [(3, 2, 4, 3), (2,), (2,)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1), [(2, 2, 7, 6)]),
    "max_pool2d-dil-ceil": (lambda x: F.max_pool2d(x, 2, 2, 1, dilation=2, ceil_mode=True),
                            [(1, 2, 7, 8)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                   [(2, 2, 7, 6)]),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (3, 2)), [(2, 2, 7, 5)]),
    "nearest": (lambda x: F.interpolate(x, scale_factor=1.6), [(1, 2, 4, 5)]),
    "bilinear": (lambda x: F.interpolate(x, size=(7, 3), mode="bilinear"), [(1, 2, 4, 5)]),
    "bilinear-ac": (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear",
                                            align_corners=True), [(1, 2, 3, 4)]),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_functional_gradients(name):
    fn, shapes = FUNCTIONS[name]
    arrays = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    if name.startswith("max_pool"):  # separate values so no tie sits within eps
        arrays[0] = np.random.default_rng(0).permutation(arrays[0].size).reshape(shapes[0]) * 0.1
    gradcheck(fn, *arrays)


def test_dropout_gradient_is_the_mask():
    pf.manual_seed(3)
    x = rand(6, 7)
    t = pf.tensor(x, requires_grad=True)
    y = F.dropout(t, 0.4)
    y.sum().backward()
    assert np.allclose(t.grad.numpy() * x, y.numpy())


def test_layer_parameter_gradients_by_finite_differences():
    pf.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = rand(5, 4)
    w = rand(5, 3, seed=1)

    def loss():
        with pf.no_grad():
            return float((model(x).numpy() * w).sum())

    (model(x) * w).sum().backward()
    for name, p in model.named_parameters():
        num = numerical_gradient(loss, p.data)
        np.testing.assert_allclose(p.grad.numpy(), num, rtol=1e-5, atol=1e-7, err_msg=name)
