"""pyfast.jax: each function's values and gradients (jax.grad) against jax.numpy / jax.nn
written out, eagerly and under jax.jit, every cross-entropy option; trace-time argument
checks; and that `import pyfast` alone does not import jax."""

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
pfj = pytest.importorskip("pyfast.jax")

TOL = dict(rtol=2e-5, atol=2e-5)


def rand(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def check_value_and_grad(ours, theirs, args, argnums, eager=False):
    """ours and theirs agree in value and gradient under jax.jit (and eagerly if asked)."""
    want, want_grads = jax.value_and_grad(theirs, argnums=argnums)(*args)
    fns = [jax.jit(jax.value_and_grad(ours, argnums=argnums))]
    if eager:
        fns.append(jax.value_and_grad(ours, argnums=argnums))
    for fn in fns:
        got, got_grads = fn(*args)
        np.testing.assert_allclose(got, want, **TOL)
        for g, e in zip(got_grads, want_grads):
            np.testing.assert_allclose(g, e, **TOL)


@pytest.mark.parametrize("trans_a,trans_b,bias,activation", [
    (False, False, False, None), (True, False, True, "relu"), (False, True, False, "relu"),
    (True, True, True, None)])
def test_matmul(trans_a, trans_b, bias, activation):
    rng = np.random.default_rng([trans_a, trans_b, bias])
    m, k, n = 5, 7, 3
    a = rand(rng, k, m) if trans_a else rand(rng, m, k)
    b = rand(rng, n, k) if trans_b else rand(rng, k, n)
    c = rand(rng, n)
    weights = rand(rng, m, n)

    def ours(a, b, c):
        out = pfj.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=c if bias else None,
                         activation=activation)
        return (out * weights).sum()

    def theirs(a, b, c):
        out = (a.T if trans_a else a) @ (b.T if trans_b else b) + (c if bias else 0)
        return ((jax.nn.relu(out) if activation else out) * weights).sum()

    check_value_and_grad(ours, theirs, (a, b, c), (0, 1, 2) if bias else (0, 1),
                         eager=not trans_a and not trans_b)


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 2),
                                                            ((1, 2), (2, 1), (2, 1), 1)])
def test_conv2d(stride, padding, dilation, groups):
    rng = np.random.default_rng(groups)
    x, w, b = rand(rng, 2, 4, 9, 8), rand(rng, 6, 4 // groups, 3, 3), rand(rng, 6)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731

    def ours(x, w, b):
        return jnp.sin(pfj.conv2d(x, w, b, stride, padding, dilation, groups)).sum()

    def theirs(x, w, b):
        y = jax.lax.conv_general_dilated(
            x, w, pair(stride), [(p, p) for p in pair(padding)], rhs_dilation=pair(dilation),
            feature_group_count=groups, dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.sin(y + b[None, :, None, None]).sum()

    check_value_and_grad(ours, theirs, (x, w, b), (0, 1, 2))


def jax_cross_entropy(logits, labels, ignore_index, smoothing, reduction):
    """torch's cross_entropy written in jax.numpy, class axis 1."""
    c = logits.shape[1]
    logp = jax.nn.log_softmax(logits, axis=1)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    onehot = jnp.moveaxis(jax.nn.one_hot(safe, c), -1, 1)
    target = onehot * (1 - smoothing) + smoothing / c
    per = jnp.where(valid, -(target * logp).sum(axis=1), 0.0)
    if reduction == "none":
        return per
    return per.sum() / (valid.sum() if reduction == "mean" else 1)


@pytest.mark.parametrize("reduction,smoothing", [("mean", 0.2), ("sum", 0.0), ("none", 0.2)])
@pytest.mark.parametrize("shape", [(11, 7), (3, 5, 4)], ids=str)
def test_softmax_cross_entropy(reduction, smoothing, shape):
    rng = np.random.default_rng(len(shape))
    logits = rand(rng, *shape) * 3
    labels_shape = (shape[0],) + shape[2:]
    labels = rng.integers(0, shape[1], labels_shape)
    labels[rng.random(labels_shape) < 0.25] = 2 if shape[1] > 2 else -100
    labels = jnp.asarray(labels)
    weights = rand(rng, *labels_shape) if reduction == "none" else 1.0

    def ours(z):
        return (pfj.softmax_cross_entropy(z, labels, ignore_index=2, label_smoothing=smoothing,
                                          reduction=reduction) * weights).sum()

    def theirs(z):
        return (jax_cross_entropy(z, labels, 2, smoothing, reduction) * weights).sum()

    check_value_and_grad(ours, theirs, (logits,), (0,))


@pytest.mark.parametrize("reduction,bias", [("mean", True), ("sum", False), ("none", True)])
def test_linear_cross_entropy(reduction, bias):
    rng = np.random.default_rng([bias])
    n, d, v = 70, 9, 23  # 70 rows: more than one block of rows
    h, w, b = rand(rng, n, d), rand(rng, v, d), rand(rng, v)
    labels = rng.integers(0, v, n)
    labels[::7] = -100
    labels = jnp.asarray(labels)
    weights = rand(rng, n) if reduction == "none" else 1.0

    def ours(h, w, b):
        return (pfj.linear_cross_entropy(h, w, labels, b if bias else None,
                                         label_smoothing=0.1, reduction=reduction)
                * weights).sum()

    def theirs(h, w, b):
        z = h @ w.T + (b if bias else 0)
        return (jax_cross_entropy(z, labels, -100, 0.1, reduction) * weights).sum()

    check_value_and_grad(ours, theirs, (h, w, b), (0, 1, 2) if bias else (0, 1))


def test_vmap_and_value_and_grad():
    rng = np.random.default_rng(5)
    a, b = rand(rng, 3, 4, 5), rand(rng, 5, 2)
    got = jax.vmap(lambda x: pfj.matmul(x, b))(a)
    np.testing.assert_allclose(got, a @ b, **TOL)
    loss, g = jax.jit(jax.value_and_grad(lambda x: pfj.matmul(x, b).sum()))(a[0])
    np.testing.assert_allclose(loss, (a[0] @ b).sum(), **TOL)
    np.testing.assert_allclose(g, jnp.broadcast_to(b.sum(axis=1), (4, 5)), **TOL)


def test_bad_arguments_fail_at_trace_time():
    rng = np.random.default_rng(6)
    a, b = rand(rng, 3, 4), rand(rng, 5, 2)
    with pytest.raises(ValueError, match="inner dimensions"):
        jax.jit(pfj.matmul)(a, b)
    with pytest.raises(TypeError, match="float32 or float64"):
        pfj.matmul(a, jnp.ones((4, 2), jnp.float16))
    with pytest.raises(ValueError, match="reduction"):
        pfj.softmax_cross_entropy(a, jnp.zeros(3, jnp.int32), reduction="avg")
    with pytest.raises(TypeError, match="labels must be an integer"):
        pfj.softmax_cross_entropy(a, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        pfj.linear_cross_entropy(a, rand(rng, 6, 4), jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="input channels"):
        pfj.conv2d(rand(rng, 1, 3, 5, 5), rand(rng, 2, 2, 3, 3))


def test_import_pyfast_does_not_import_jax():
    code = "import sys, pyfast; assert 'jax' not in sys.modules, 'jax was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
