"""pf.nn.functional.ChannelStack (DenseNet's preallocated feature stack): views equal
pf.cat of the parts, gradients equal those of the pf.cat graph (float64), batch norm reads
a view in place (batch-strided input), and misuse raises."""

import numpy as np
import pytest

import pyfast as pf
from pyfast import nn
from pyfast.nn import functional as F
from tests.conftest import backend_params


def dense_graph(x, convs, norms, use_stack):
    """A small dense block: each layer sees the concatenation of everything before it."""
    if use_stack:
        stack = F.ChannelStack(x, x.shape[1] + sum(c.out_channels for c in convs))
        for conv, norm in zip(convs, norms):
            stack.append(conv(norm(stack.view(), activation="relu")))
        return stack.view()
    features = [x]
    for conv, norm in zip(convs, norms):
        features.append(conv(norm(pf.cat(features, 1), activation="relu")))
    return pf.cat(features, 1)


@pytest.mark.parametrize("batch", [1, 3])
def test_stack_matches_cat_forward_and_backward(batch):
    pf.manual_seed(0)
    c0, growth = 4, 3
    convs = [nn.Conv2d(c0 + i * growth, growth, 3, padding=1, dtype=np.float64)
             for i in range(3)]
    norms = [nn.BatchNorm2d(c0 + i * growth, dtype=np.float64) for i in range(3)]
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((batch, c0, 5, 6))
    gy = rng.standard_normal((batch, c0 + 3 * growth, 5, 6))
    results = []
    for use_stack in (True, False):
        x = pf.tensor(x0, requires_grad=True)
        for m in convs + norms:
            m.zero_grad()
        y = dense_graph(x, convs, norms, use_stack)
        y.backward(gy)
        results.append([y.data, x.grad.data] + [p.grad.data for m in convs + norms
                                                 for p in m.parameters()])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_stack_views_are_views_and_parts_copied_once():
    x = pf.tensor(np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3))
    stack = F.ChannelStack(x, 5)
    v1 = stack.view()
    part = pf.tensor(np.ones((2, 3, 3, 3), np.float32))
    stack.append(part)
    v2 = stack.view()
    assert v2.data.flags.c_contiguous and np.shares_memory(v1.data, v2.data)
    np.testing.assert_array_equal(v2.data, np.concatenate([x.data, part.data], 1))
    np.testing.assert_array_equal(v1.data, x.data)
    assert stack.channels == 5


def test_stack_errors():
    x = pf.tensor(np.ones((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="total_channels"):
        F.ChannelStack(x, 1)
    with pytest.raises(ValueError, match="4-D"):
        F.ChannelStack(np.ones((2, 3), np.float32), 4)
    stack = F.ChannelStack(x, 3)
    with pytest.raises(ValueError, match="does not fit"):
        stack.append(np.ones((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        stack.append(np.ones((2, 1, 3, 4), np.float32))


def test_stack_out_of_order_gradient_raises():
    """A part appended without depending on the earlier view breaks the order the stack
    relies on; the backward refuses instead of dropping a contribution."""
    x = pf.tensor(np.ones((2, 1, 2, 2)), requires_grad=True)
    stack = F.ChannelStack(x, 2)
    early = stack.view()
    stack.append(pf.tensor(np.ones((2, 1, 2, 2)), requires_grad=True))
    late = stack.view()
    loss = (early * 2.0).sum() + late.sum()
    try:
        loss.backward()
    except RuntimeError as exc:
        assert "ChannelStack" in str(exc)
    else:  # the tape ran the views in the safe order: then the result must be right
        np.testing.assert_allclose(x.grad.data, 3.0)


@pytest.mark.parametrize("backend", backend_params("norm", "cpu"))
def test_batch_norm_reads_a_channel_prefix_in_place(backend):
    rng = np.random.default_rng(2)
    buf = rng.standard_normal((3, 7, 4, 5)).astype(np.float32)
    x = buf[:, :4]                        # batch stride 7 * 20, samples contiguous
    assert not x.flags.c_contiguous
    gy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    got = pf.ops.batch_norm(x, w, None, training=True, activation="relu", backend=backend)
    want = pf.ops.batch_norm(x.copy(), w, None, training=True, activation="relu",
                             backend=backend)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    ga = pf.ops.batch_norm_backward(gy, x, w, got[1], got[2], activation="relu", y=got[0],
                                    backend=backend)
    gb = pf.ops.batch_norm_backward(gy, x.copy(), w, got[1], got[2], activation="relu",
                                    y=got[0], backend=backend)
    for a, b in zip(ga, gb):
        np.testing.assert_array_equal(a, b)
    rows = rng.standard_normal((6, 9)).astype(np.float32)[:, :5]   # the rows layout too
    got = pf.ops.batch_norm(rows, training=True, backend=backend)
    want = pf.ops.batch_norm(rows.copy(), training=True, backend=backend)
    np.testing.assert_array_equal(got[0], want[0])
