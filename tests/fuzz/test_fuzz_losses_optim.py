"""Fuzz: softmax_cross_entropy with every option (weight, ignore_index, label smoothing,
reductions, label dtypes, spatial and unbatched logits, inplace), softmax/log_softmax on any
axis, and the optimizer steps with every option over lists of buffers and several steps,
against the float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyfast as pf
from tests.fuzz.common import (DTYPES, assert_close, backends_under_test, f64, fuzz_settings,
                               machine, randn, reference, rng_for, running_on)

pytestmark = pytest.mark.fuzz

LABEL_DTYPES = [np.int64, np.int32, np.int16, np.uint8]


@pytest.mark.parametrize("backend", backends_under_test("softmax_xent"))
@fuzz_settings
@given(data=st.data())
def test_softmax_cross_entropy(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    c = draw(st.integers(1, 40))
    layout = draw(st.sampled_from(["rows", "spatial", "unbatched"]))
    n = draw(st.integers(1, 9))
    shape = {"rows": (n, c), "spatial": (n, c, draw(st.integers(1, 5)), draw(st.integers(1, 4))),
             "unbatched": (c,)}[layout]
    label_shape = shape[:1] + shape[2:] if layout != "unbatched" else ()
    label_dtype = draw(st.sampled_from(LABEL_DTYPES))
    ignore_index = draw(st.sampled_from([-100, -1, 0, c - 1, 255]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    smoothing = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    weight = rng.uniform(0.1, 2.0, c).astype(dtype) if draw(st.booleans()) else None
    inplace = draw(st.booleans())
    logits = randn(rng, shape, dtype, scale=draw(st.sampled_from([0.1, 3.0, 30.0])))
    labels = rng.integers(0, c, label_shape)
    representable = np.iinfo(label_dtype).min <= ignore_index <= np.iinfo(label_dtype).max
    if representable and labels.ndim:
        labels = np.where(rng.random(label_shape) < draw(st.sampled_from([0.0, 0.3, 1.0])),
                          ignore_index, labels)
    elif not representable:
        ignore_index = -100
    labels = np.asarray(labels).astype(label_dtype)
    kw = dict(weight=weight, ignore_index=ignore_index, label_smoothing=smoothing,
              reduction=reduction)
    given_logits = logits.copy()
    with running_on(draw(machine(backend))):
        loss, dlogits = pf.ops.softmax_cross_entropy(given_logits, labels, inplace=inplace,
                                                     backend=backend, **kw)
    if inplace:
        assert np.shares_memory(dlogits, given_logits)  # written over the logits
    else:
        np.testing.assert_array_equal(given_logits, logits)
    want_loss, want_d = reference(pf.ops.softmax_cross_entropy, logits, labels, **kw)
    rows = max(1, labels.size)
    scale = np.max(np.abs(f64(logits))) + 1
    what = f"softmax_cross_entropy {shape} {kw}"
    assert_close(loss, want_loss, dtype, terms=c + rows, what=what + " loss",
                 magnitude=np.abs(want_loss) + scale * (1 if reduction == "none" else rows))
    wmax = 1.0 if weight is None else float(weight.max())
    assert_close(dlogits, want_d, dtype, terms=c + rows, what=what + " dlogits",
                 magnitude=np.abs(want_d) + wmax * scale / (1 if reduction != "mean" else rows))


@pytest.mark.parametrize("backend", backends_under_test("linear_xent"))
@fuzz_settings
@given(data=st.data())
def test_linear_cross_entropy(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    n, d, v = draw(st.integers(1, 70)), draw(st.integers(1, 40)), draw(st.integers(1, 90))
    h = randn(rng, (n, d), dtype, scale=draw(st.sampled_from([0.1, 1.0, 5.0])))
    w = randn(rng, (v, d), dtype, scale=draw(st.sampled_from([0.1, 1.0])))
    bias = randn(rng, (v,), dtype) if draw(st.booleans()) else None
    ignore_index = draw(st.sampled_from([-100, 0, v - 1]))
    labels = rng.integers(0, v, n)
    labels = np.where(rng.random(n) < draw(st.sampled_from([0.0, 0.3, 1.0])), ignore_index,
                      labels).astype(draw(st.sampled_from(LABEL_DTYPES[:2])))
    kw = dict(ignore_index=ignore_index, label_smoothing=draw(st.sampled_from([0.0, 0.1, 1.0])),
              reduction=draw(st.sampled_from(["mean", "sum", "none"])))
    with running_on(draw(machine(backend))):
        got = pf.ops.linear_cross_entropy(h, w, labels, bias, backend=backend, **kw)
    want = reference(pf.ops.linear_cross_entropy, h, w, labels, bias, **kw)
    # a logit sums d products: its error is ~d eps times s, the largest sum of |h||w| (+|b|);
    # every gradient is a sum over the vocabulary or the rows of (p - target) times h or w
    s = float(np.max(np.abs(f64(h)) @ np.abs(f64(w)).T)) + 1.0 + \
        (0.0 if bias is None else float(np.max(np.abs(bias))))
    terms = d + v + n
    what = f"linear_cross_entropy n={n} d={d} v={v} bias={bias is not None} {kw}"
    names = ("loss", "dh", "dw", "db")
    scales = (s * n, s * float(np.max(np.abs(w))), s * float(np.sum(np.abs(h), 0).max()), s * n)
    for name, g, want_, scale in zip(names, got, want, scales):
        if want_ is None:
            assert g is None, what + f" {name}"
            continue
        assert_close(g, want_, dtype, terms=terms, what=f"{what} {name}",
                     magnitude=np.abs(want_) + scale)


@pytest.mark.parametrize("backend", backends_under_test("softmax_xent"))
@fuzz_settings
@given(data=st.data())
def test_softmax_and_log_softmax(backend, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=3)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    x = randn(rng, shape, dtype, scale=draw(st.sampled_from([0.1, 3.0, 30.0])))
    with running_on(draw(machine(backend))):
        got = pf.ops.softmax(x, axis, backend=backend)
        got_log = pf.ops.log_softmax(x, axis, backend=backend)
    terms = shape[axis] + 4
    assert_close(got, reference(pf.ops.softmax, x, axis), dtype, terms=terms, what="softmax",
                 magnitude=np.abs(reference(pf.ops.softmax, x, axis)) + np.finfo(dtype).eps)
    want_log = reference(pf.ops.log_softmax, x, axis)
    assert_close(got_log, want_log, dtype, terms=terms, what="log_softmax",
                 magnitude=np.abs(want_log) + np.max(np.abs(f64(x))) + 1)


def buffers(rng, sizes, dtype, listed):
    arrays = [randn(rng, s, dtype) for s in sizes]
    return arrays if listed else arrays[0]


def as64(value):
    if value is None:
        return None
    if isinstance(value, list):
        return [v.astype(np.float64) for v in value]
    return value.astype(np.float64)


def check_buffers(got, want, dtype, steps, lr, what, kappa):
    got = got if isinstance(got, list) else [got]
    want = want if isinstance(want, list) else [want]
    for i, (g, w) in enumerate(zip(got, want)):
        # each step rounds a handful of products; updates are O(lr) per step; every state is
        # built from the rounded g + wd * p, so it inherits that sum's cancellation
        assert_close(g, w, dtype, terms=12 * steps,
                     magnitude=(np.abs(w) + lr * steps + 1e-3) * kappa[i],
                     what=f"{what}[{i}]")


def cancellation(kappa, params, grads, weight_decay):
    """Grow each element's condition number of the coupled weight-decay gradient g + wd * p:
    the kernel rounds that sum in its own precision, so where it cancels (|g + wd p| much
    below |g| + wd |p|) its relative error, and that of every state built from it, grows by
    (|g| + wd |p|) / |g + wd p| (capped at 1e7, about 1/eps of float32: past it the element carries no information)."""
    for k, p, g in zip(kappa, params, grads):
        p, g = p.astype(np.float64), g.astype(np.float64)
        size = np.abs(g) + weight_decay * np.abs(p)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(size > 0, size / np.abs(g + weight_decay * p), 1.0)
        np.maximum(k, np.minimum(ratio, 1e7), out=k)


OPTIMIZERS = {"sgd": pf.ops.sgd_step, "rmsprop": pf.ops.rmsprop_step, "adam": pf.ops.adam_step}


@st.composite
def optimizer_options(draw, name):
    lr = draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0]))
    wd = draw(st.sampled_from([0.0, 0.0, 0.01, 0.5]))
    if name == "sgd":
        momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
        nesterov = momentum > 0 and draw(st.booleans())
        dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.3]))
        return dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                    weight_decay=wd), ("momentum_buf",) if momentum else ()
    if name == "rmsprop":
        momentum = draw(st.sampled_from([0.0, 0.9]))
        centered = draw(st.booleans())
        opts = dict(lr=lr, alpha=draw(st.sampled_from([0.5, 0.9, 0.99])),
                    eps=draw(st.sampled_from([1e-8, 1e-6, 1e-2])), weight_decay=wd,
                    momentum=momentum, centered=centered)
        state = ("square_avg",) + (("momentum_buf",) if momentum else ()) + \
            (("grad_avg",) if centered else ())
        return opts, state
    amsgrad = draw(st.booleans())
    opts = dict(lr=lr, beta1=draw(st.sampled_from([0.0, 0.5, 0.9])),
                beta2=draw(st.sampled_from([0.9, 0.999])),
                eps=draw(st.sampled_from([1e-8, 1e-6, 1e-2])), weight_decay=wd,
                decoupled=draw(st.booleans()), amsgrad=amsgrad)
    return opts, ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend", backends_under_test("optim"))
@fuzz_settings
@given(data=st.data())
def test_optimizer_steps(backend, name, data):
    draw = data.draw
    dtype, rng = draw(DTYPES), rng_for(draw)
    fn = OPTIMIZERS[name]
    opts, state_names = draw(optimizer_options(name))
    listed = draw(st.booleans())
    sizes = draw(st.lists(st.integers(1, 3000), min_size=1, max_size=4 if listed else 1))
    steps = draw(st.integers(1, 4))
    params = buffers(rng, sizes, dtype, listed)
    states = {s: [np.zeros_like(p) for p in params] if listed else np.zeros_like(params)
              for s in state_names}
    params64, states64 = as64(params), {k: as64(v) for k, v in states.items()}
    settings_ = draw(machine(backend))
    coupled = 0.0 if opts.get("decoupled") else opts["weight_decay"]
    kappa = [np.ones(n) for n in sizes]
    for step in range(1, steps + 1):
        grads = buffers(rng, sizes, dtype, listed)
        cancellation(kappa, params if listed else [params], grads if listed else [grads], coupled)
        kw = dict(opts, **({"step": step} if name != "rmsprop" else {}))
        with running_on(settings_):
            fn(params, grads, backend=backend, **states, **kw)
        fn(params64, as64(grads), backend="reference", **states64, **kw)
    what = f"{name} {opts} sizes={sizes} steps={steps}"
    check_buffers(params, params64, dtype, steps, opts["lr"], what + " param", kappa)
    for s in state_names:
        check_buffers(states[s], states64[s], dtype, steps, 1.0, what + f" {s}", kappa)
