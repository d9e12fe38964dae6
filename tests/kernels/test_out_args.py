"""``out=`` of the conv, softmax_xent and linear_xent functions: results written into the
caller's arrays (what pyfast.torch hands them), equal to the freshly allocated results."""

import numpy as np
import pytest

import pyfast as pf


def _rng():
    return np.random.default_rng(0)


def test_conv_out_arrays_are_written():
    r = _rng()
    x, w, b = (r.standard_normal(s).astype(np.float32) for s in ((2, 4, 7, 6), (6, 2, 3, 3), (6,)))
    want = pf.ops.conv2d(x, w, b, 2, 1, 1, 2)
    out = np.full(want.shape, np.nan, np.float32)
    assert pf.ops.conv2d(x, w, b, 2, 1, 1, 2, out=out) is out
    np.testing.assert_array_equal(out, want)
    gy = r.standard_normal(want.shape).astype(np.float32)
    fresh = pf.ops.conv2d_backward(gy, x, w, 2, 1, 1, 2)
    outs = (np.empty_like(x), None, np.empty(6, np.float32))
    got = pf.ops.conv2d_backward(gy, x, w, 2, 1, 1, 2, out=outs)
    assert got[0] is outs[0] and got[2] is outs[2]
    for g, f in zip(got, fresh):
        np.testing.assert_array_equal(g, f)
    with pytest.raises(ValueError, match="out\\[1\\]"):
        pf.ops.conv2d_backward(gy, x, w, 2, 1, 1, 2, out=(None, np.empty(3, np.float32), None))
    wt = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    want = pf.ops.conv_transpose2d(x, wt, None, 2, 1, 1)
    out = np.empty(want.shape, np.float32)
    assert pf.ops.conv_transpose2d(x, wt, None, 2, 1, 1, out=out) is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_softmax_cross_entropy_out(reduction):
    r = _rng()
    logits = r.standard_normal((5, 7)).astype(np.float32)
    labels = np.array([1, 0, 6, -100, 2])
    loss, grad = pf.ops.softmax_cross_entropy(logits, labels, reduction=reduction)
    outs = (np.empty(loss.shape, np.float32), np.empty_like(logits))
    got = pf.ops.softmax_cross_entropy(logits, labels, reduction=reduction, out=outs)
    assert got[0] is outs[0] and got[1] is outs[1]
    np.testing.assert_array_equal(got[0], loss)
    np.testing.assert_array_equal(got[1], grad)
    single = np.empty(7, np.float32)
    got = pf.ops.softmax_cross_entropy(logits[0], 1, out=(None, single))
    np.testing.assert_array_equal(single, pf.ops.softmax_cross_entropy(logits[0], 1)[1])


def test_linear_cross_entropy_out():
    r = _rng()
    h, w, b = (r.standard_normal(s).astype(np.float32) for s in ((6, 4), (9, 4), (9,)))
    labels = np.array([1, 8, 0, -100, 3, 3])
    want = pf.ops.linear_cross_entropy(h, w, labels, b)
    outs = (np.empty_like(h), np.empty_like(w), np.empty_like(b))
    got = pf.ops.linear_cross_entropy(h, w, labels, b, out=outs)
    assert all(g is o for g, o in zip(got[1:], outs))
    for g, f in zip(got, want):
        np.testing.assert_array_equal(g, f)
