"""Tensor and the tape: arithmetic and shape ops against torch and finite differences,
gradient accumulation through reused tensors, no_grad, detach, DLPack, the in-place
gradient contract the optimizers rely on, and argument errors."""

import numpy as np
import pytest

import pyfast as pf
from tests.nn.helpers import assert_close, gradcheck, to_torch, torch


def rand(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng([seed, *shape]).standard_normal(shape).astype(dtype)


def test_tensor_factory_dtypes_and_copy():
    assert pf.tensor([1.0, 2.0]).dtype == np.float32          # Python floats: float32
    assert pf.tensor([1, 2]).dtype == np.int64
    a = np.ones(3, np.float64)
    t = pf.tensor(a)
    assert t.dtype == np.float64 and t.data is not a            # copies, keeps dtype
    assert pf.tensor(a, dtype="float32").dtype == np.float32
    assert pf.tensor(3.5).item() == 3.5 and pf.tensor(3.5).shape == ()
    assert t.device == "cpu" and t.requires_grad is False and t.grad is None
    with pytest.raises(TypeError, match="floating-point"):
        pf.tensor([1, 2], requires_grad=True)
    with pytest.raises(ValueError, match="device"):
        pf.tensor([1.0], device="tpu")


BINARY = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
]


@pytest.mark.parametrize("name,op", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1))])
def test_binary_ops_against_torch_with_broadcasting(name, op, sa, sb):
    a, b = rand(*sa, seed=1), rand(*sb, seed=2) + 3.0
    ta, tb = to_torch(a, True), to_torch(b, True)
    pa, pb = pf.tensor(a, requires_grad=True), pf.tensor(b, requires_grad=True)
    yt, yp = op(ta, tb), op(pa, pb)
    assert_close(yp, yt)
    g = rand(*yt.shape, seed=3)
    yt.backward(to_torch(g))
    yp.backward(g)
    assert_close(pa.grad, ta.grad, what="grad a")
    assert_close(pb.grad, tb.grad, what="grad b")


def test_scalars_and_reflected_operators_keep_float32():
    t = pf.tensor(np.ones((2, 2), np.float32), requires_grad=True)
    y = 2.0 - t * np.float64(3.0) + 1 / (t + 1) - (-t) ** 2
    assert y.dtype == np.float32
    y.sum().backward()
    # d/dt [2 - 3t + 1/(t+1) - t^2] at t = 1
    assert np.allclose(t.grad.numpy(), -3 - 0.25 - 2)
    arr = np.full((2, 2), 2.0, np.float32)
    assert np.allclose((arr * t).numpy(), 2.0) and isinstance(arr + t, pf.Tensor)


def test_gradcheck_elementwise_and_reductions():
    a, b = rand(3, 4, seed=4), rand(3, 4, seed=5) + 4.0
    gradcheck(lambda x, y: (x * y - x / y + x ** 3).sum(axis=1), a, b)
    gradcheck(lambda x: x.mean(axis=0, keepdims=True) * x.exp(), rand(2, 3, seed=6))
    gradcheck(lambda x: (x.abs() + 1).log().tanh().sigmoid(), rand(5, seed=7))
    gradcheck(lambda x: x.max(axis=1) + x.max(), rand(3, 5, seed=8))


def test_matmul_shapes_against_torch():
    for sa, sb in [((5, 3), (3, 4)), ((2, 5, 3), (3, 4)), ((3,), (3, 4)), ((2, 5, 3), (2, 3, 4)),
                   ((5, 3), (3,))]:
        a, b = rand(*sa, seed=9), rand(*sb, seed=10)
        ta, tb = to_torch(a, True), to_torch(b, True)
        pa, pb = pf.tensor(a, requires_grad=True), pf.tensor(b, requires_grad=True)
        yt, yp = ta @ tb, pa @ pb
        assert_close(yp, yt)
        g = rand(*yt.shape, seed=11)
        yt.backward(to_torch(g))
        yp.backward(g)
        assert_close(pa.grad, ta.grad, what=f"{sa}@{sb} grad a")
        assert_close(pb.grad, tb.grad, what=f"{sa}@{sb} grad b")


def test_shape_ops_and_indexing_against_torch():
    x = rand(2, 3, 4, seed=12)
    cases = [
        (lambda t: t.reshape(6, 4), lambda t: t.reshape(6, 4)),
        (lambda t: t.reshape(-1), lambda t: t.reshape(-1)),
        (lambda t: t.transpose(0, 2), lambda t: t.transpose(0, 2)),
        (lambda t: t.permute(2, 0, 1), lambda t: t.permute(2, 0, 1)),
        (lambda t: t.flatten(1), lambda t: t.flatten(1)),
        (lambda t: t[1, :, ::2], lambda t: t[1, :, ::2]),
        (lambda t: t[:, [0, 2, 0]], lambda t: t[:, [0, 2, 0]]),      # repeated index
        (lambda t: t[t > 0], lambda t: t[t > 0]),
        (lambda t: t.sum(dim=(0, 2)), lambda t: t.sum(dim=(0, 2))),
        (lambda t: t.mean(dim=1, keepdim=True), lambda t: t.mean(dim=1, keepdim=True)),
    ]
    for i, (fp, ft) in enumerate(cases):
        tt, tp = to_torch(x, True), pf.tensor(x, requires_grad=True)
        yt, yp = ft(tt), fp(tp)
        assert_close(yp, yt, what=f"case {i}")
        g = rand(*yt.shape, seed=13)
        yt.backward(to_torch(g))
        yp.backward(g)
        assert_close(tp.grad, tt.grad, what=f"case {i} grad")


def test_cat_and_stack():
    a, b = rand(2, 3, seed=14), rand(2, 5, seed=15)
    gradcheck(lambda x, y: pf.cat([x, y], axis=1) * 2, a, b)
    gradcheck(lambda x, y: pf.cat((x, y), dim=-1).sum(0), a, b)
    gradcheck(lambda x, y: pf.stack([x, y * 3]), a, a.copy())
    with pytest.raises(ValueError, match="along axis 0"):
        pf.cat([pf.tensor(a), pf.tensor(b)], axis=0)
    with pytest.raises(TypeError, match="float32"):
        pf.cat([pf.tensor(a), pf.tensor(a.astype(np.float32))])
    with pytest.raises(TypeError, match="list or tuple"):
        pf.cat(pf.tensor(a))
    # a constant in the list gets no gradient and does not block the others
    x = pf.tensor(a, requires_grad=True)
    pf.cat([x, pf.tensor(b)], 1).sum().backward()
    assert np.array_equal(x.grad.numpy(), np.ones_like(a))


def test_gradients_sum_when_a_tensor_is_used_twice():
    # residual: y = f(x) + x;  dense: cat of x with functions of x, reused again
    x0 = rand(4, 3, seed=16)
    xt, xp_ = to_torch(x0, True), pf.tensor(x0, requires_grad=True)
    for x, lib in ((xt, torch), (xp_, pf)):
        h = (x * 2).tanh()
        y = h + x                                   # residual
        d = lib.cat([x, y, h * x], 1)               # dense connection reusing x, h, y
        (d * d).sum().backward()
    assert_close(xp_.grad, xt.grad)
    gradcheck(lambda x: pf.cat([x, (x * 2).tanh() + x], 1) * x.sum(), x0)


def test_diamond_graph_runs_each_node_once():
    calls = []
    from pyfast.tensor import Function

    class Twice(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            calls.append(1)
            return (g * 2,)

    x = pf.tensor(np.ones(3), requires_grad=True)
    h = Twice.apply(x)
    (h * 3 + h * 5).sum().backward()
    assert calls == [1]
    assert np.array_equal(x.grad.numpy(), np.full(3, 16.0))


def test_leaf_gradient_accumulates_in_place():
    x = pf.tensor(np.ones(4, np.float32), requires_grad=True)
    (x * 2).sum().backward()
    g = x.grad
    storage = g.data
    (x * 3).sum().backward()
    assert x.grad is g and x.grad.data is storage               # never rebound
    assert np.array_equal(storage, np.full(4, 5.0, np.float32))
    # a view of a flat buffer handed in by an optimizer stays the live gradient
    flat = np.zeros(10, np.float32)
    x.grad = flat[2:6]
    (x * 1).sum().backward()
    assert np.array_equal(flat[2:6], np.ones(4)) and not flat[:2].any()
    # and with grad dropped, backward writes into the parked grad_storage
    x.grad = None
    x.grad_storage = flat[6:10]
    (x * 7).sum().backward()
    assert x.grad.data is x.grad_storage and np.array_equal(flat[6:10], np.full(4, 7.0))


def test_first_gradient_is_a_fresh_array():
    # sum's gradient is a read-only broadcast and add hands the same array to both inputs;
    # leaves must get writable arrays of their own
    a = pf.tensor(np.ones(3), requires_grad=True)
    b = pf.tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()
    assert a.grad.data is not b.grad.data and a.grad.data.flags.writeable
    a.grad.data += 1
    assert np.array_equal(b.grad.numpy(), np.ones(3))


def test_grad_setter_checks():
    x = pf.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    x.grad = np.zeros((2, 3), np.float32)
    assert isinstance(x.grad, pf.Tensor)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        x.grad = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match="shape"):
        x.data = np.zeros((3, 2), np.float32)
    x.data = np.full((2, 3), 4.0, np.float32)                   # same shape and dtype: fine
    assert x.numpy()[0, 0] == 4.0


def test_no_grad_and_detach():
    x = pf.tensor(np.ones(3), requires_grad=True)
    with pf.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    z = (x * 2).detach()
    assert not z.requires_grad and z.data is not None
    w = x * 2
    assert w.detach().data is w.data                             # shares storage

    @pf.no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad
    assert (x * 1).requires_grad                                # restored after the block
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_backward_errors():
    x = pf.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    y = (x * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(np.ones(4))


def test_dlpack_round_trip_with_torch():
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    p = pf.from_dlpack(t)
    assert p.shape == (2, 3) and p.dtype == np.float32
    p.data[0, 0] = 42.0                                          # shares memory
    assert t[0, 0].item() == 42.0
    back = torch.from_dlpack(p)
    assert back.data_ptr() == t.data_ptr()
    q = pf.tensor(t)                                             # pf.tensor copies
    q.data[0, 1] = -1.0
    assert t[0, 1].item() == 1.0
    assert p.__dlpack_device__()[0] == 1
    w = torch.ones(3, requires_grad=True)                      # torch exports only detached
    assert pf.from_dlpack(w).shape == (3,) and pf.tensor(w).dtype == np.float32


def test_item_numpy_to_and_repr():
    x = pf.tensor([[1.5]])
    assert x.item() == 1.5 and isinstance(x.numpy(), np.ndarray)
    assert x.to("cpu") is x
    y = pf.tensor(np.ones(2, np.float32), requires_grad=True)
    z = y.double()
    assert z.dtype == np.float64
    (z * 2).sum().backward()
    assert y.grad.dtype == np.float32 and np.array_equal(y.grad.numpy(), [2, 2])
    assert "requires_grad=True" in repr(y) and "grad_fn" in repr(z)
    with pytest.raises(ValueError, match="one element"):
        pf.tensor([1.0, 2.0]).item()


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = pf.tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    assert np.array_equal(x.grad.numpy(), [1.0, 1.0])
