"""pyfast.torch's functions against torch.nn.functional: results, gradients, every option,
gradcheck in float64."""

import pytest

torch = pytest.importorskip("torch")
pft = pytest.importorskip("pyfast.torch")
F = torch.nn.functional


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _leaf(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype, requires_grad=True)


def _grads(fn, tensors):
    out = fn(*tensors)
    seed = torch.randn_like(out)
    return out, torch.autograd.grad(out, [t for t in tensors if t is not None], seed)


def _compare(ours, theirs, tensors, tol=1e-4):
    torch.manual_seed(7)
    a, ga = _grads(ours, tensors)
    torch.manual_seed(7)
    b, gb = _grads(theirs, tensors)
    _close(a, b, tol)
    for x, y in zip(ga, gb):
        _close(x, y, tol)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
@pytest.mark.parametrize("act", [None, "relu"])
def test_matmul(trans_a, trans_b, act):
    torch.manual_seed(0)
    a = _leaf(*((7, 5) if trans_a else (5, 7)))
    b = _leaf(*((3, 7) if trans_b else (7, 3)))
    bias = _leaf(3)

    def ref(a, b, bias):
        y = (a.T if trans_a else a) @ (b.T if trans_b else b) + bias
        return y.relu() if act else y
    _compare(lambda a, b, bias: pft.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias,
                                           activation=act), ref, (a, b, bias))


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6), (6,)])
def test_linear(shape):
    torch.manual_seed(1)
    _compare(pft.linear, F.linear, (_leaf(*shape), _leaf(5, 6), _leaf(5)))
    _compare(lambda x, w: pft.linear(x, w), lambda x, w: F.linear(x, w),
             (_leaf(*shape), _leaf(5, 6)))


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding=(2, 1),
                                dilation=(1, 2)), dict(groups=2, stride=(1, 2)),
                                dict(padding="same", dilation=2), dict(padding="valid"),
                                dict(padding="same")])
def test_conv2d(kw):
    torch.manual_seed(2)
    k = (3, 2) if kw.get("padding") == "same" and "dilation" not in kw else (3, 3)
    args = (_leaf(2, 4, 9, 8), _leaf(6, 4 // kw.get("groups", 1), *k), _leaf(6))
    _compare(lambda x, w, b: pft.conv2d(x, w, b, **kw), lambda x, w, b: F.conv2d(x, w, b, **kw),
             args)


def test_conv2d_unbatched_and_no_bias():
    torch.manual_seed(3)
    _compare(lambda x, w: pft.conv2d(x, w, padding=1), lambda x, w: F.conv2d(x, w, padding=1),
             (_leaf(3, 6, 5), _leaf(2, 3, 3, 3)))


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1, output_padding=1),
                                dict(groups=2, dilation=2), dict(stride=(2, 3), padding=(0, 1),
                                output_padding=(1, 2))])
def test_conv_transpose2d(kw):
    torch.manual_seed(4)
    args = (_leaf(2, 4, 5, 6), _leaf(4, 3, 3, 3), _leaf(3 * kw.get("groups", 1)))
    _compare(lambda x, w, b: pft.conv_transpose2d(x, w, b, **kw),
             lambda x, w, b: F.conv_transpose2d(x, w, b, **kw), args)


def test_conv_transpose2d_output_padding_past_stride():
    # output_padding >= stride (allowed with a larger dilation) reaches rows x never touched
    torch.manual_seed(5)
    kw = dict(stride=1, output_padding=1, dilation=2)
    _compare(lambda x, w: pft.conv_transpose2d(x, w, **kw),
             lambda x, w: F.conv_transpose2d(x, w, **kw), (_leaf(1, 2, 4, 4), _leaf(2, 3, 3, 3)))


XENT_CASES = [dict(), dict(reduction="sum"), dict(reduction="none"), dict(label_smoothing=0.2),
              dict(weight=True), dict(weight=True, label_smoothing=0.1, ignore_index=2),
              dict(ignore_index=0, reduction="none"), dict(weight=True, reduction="sum")]


@pytest.mark.parametrize("kw", XENT_CASES)
@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 2, 2)])
def test_cross_entropy(kw, shape):
    torch.manual_seed(6)
    kw = dict(kw)
    if kw.get("weight"):
        kw["weight"] = torch.rand(shape[1]) + 0.5
    x = _leaf(*shape)
    t = torch.randint(0, shape[1], (shape[0],) + shape[2:])
    _compare(lambda x: pft.cross_entropy(x, t, **kw), lambda x: F.cross_entropy(x, t, **kw),
             (x,))


def test_cross_entropy_unbatched_legacy_and_all_ignored():
    x = _leaf(5)
    _compare(lambda x: pft.cross_entropy(x, torch.tensor(3)),
             lambda x: F.cross_entropy(x, torch.tensor(3)), (x,))
    x, t = _leaf(4, 3), torch.tensor([0, 2, 1, 1])
    _close(pft.cross_entropy(x, t, size_average=False), F.cross_entropy(x, t, size_average=False))
    everything_ignored = torch.full((4,), -100)
    assert torch.isnan(pft.cross_entropy(x, everything_ignored))
    assert torch.isnan(F.cross_entropy(x, everything_ignored))


def test_cross_entropy_probability_targets_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="class indices"):
        pft.cross_entropy(torch.randn(3, 4), torch.softmax(torch.randn(3, 4), 1))


def test_gradcheck_float64():
    torch.manual_seed(8)
    d = torch.float64
    assert torch.autograd.gradcheck(
        lambda a, b, c: pft.matmul(a, b, trans_b=True, bias=c, activation="relu"),
        (_leaf(4, 3, dtype=d), _leaf(5, 3, dtype=d), _leaf(5, dtype=d)))
    assert torch.autograd.gradcheck(pft.linear, (_leaf(2, 3, 4, dtype=d), _leaf(3, 4, dtype=d),
                                                 _leaf(3, dtype=d)))
    conv = (_leaf(1, 4, 4, 3, dtype=d), _leaf(2, 2, 2, 2, dtype=d), _leaf(2, dtype=d))
    assert torch.autograd.gradcheck(
        lambda x, w, b: pft.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2), conv)
    # double backward: the registered gradient of conv2d_backward
    conv = (_leaf(1, 2, 3, 3, dtype=d), _leaf(2, 1, 2, 2, dtype=d), _leaf(2, dtype=d))
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: pft.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2), conv)
    assert torch.autograd.gradcheck(
        lambda x, w, b: pft.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
        (_leaf(1, 2, 2, 3, dtype=d), _leaf(2, 2, 3, 2, dtype=d), _leaf(2, dtype=d)))
    t = torch.tensor([1, 0, 3, -100, 2])
    w = torch.rand(4, dtype=d) + 0.5
    assert torch.autograd.gradcheck(
        lambda x: pft.cross_entropy(x, t, weight=w, label_smoothing=0.1), (_leaf(5, 4, dtype=d),))
    assert torch.autograd.gradcheck(
        lambda x: pft.cross_entropy(x, t, reduction="none"), (_leaf(5, 4, dtype=d),))


def test_linear_cross_entropy():
    torch.manual_seed(9)
    h, w, b = _leaf(6, 4), _leaf(7, 4), _leaf(7)
    t = torch.tensor([1, 6, 0, -100, 3, 3])

    def ref(h, w, b, target=t, **kw):
        return F.cross_entropy(F.linear(h, w, b), target, **kw)
    # reduction="none" is the unfused pair of pyfast kernels (no merge needed)
    _compare(lambda h, w, b: pft.linear_cross_entropy(h, w, t, b, reduction="none"),
             lambda h, w, b: ref(h, w, b, reduction="none"), (h, w, b))
    if not hasattr(pft._ops.pfops, "linear_cross_entropy"):
        pytest.skip("pf.ops.linear_cross_entropy is not merged into this branch")
    t3 = torch.where(t < 0, 3, t)
    for kw, target in ((dict(), t), (dict(reduction="sum", label_smoothing=0.1), t),
                       (dict(ignore_index=3), t3)):
        _compare(lambda h, w, b: pft.linear_cross_entropy(h, w, target, b, **kw),
                 lambda h, w, b: ref(h, w, b, target, **kw), (h, w, b))
    # leading dimensions are flattened
    _compare(lambda h, w: pft.linear_cross_entropy(h, w, t.reshape(2, 3)),
             lambda h, w: ref(h.reshape(6, 4), w, None), (h.detach().reshape(2, 3, 4)
                                                          .requires_grad_(), w))
    _compare(lambda h, w: pft.linear_cross_entropy(h, w, t), lambda h, w: ref(h, w, None), (h, w))
    d = torch.float64
    assert torch.autograd.gradcheck(
        lambda h, w, b: pft.linear_cross_entropy(h, w, t, b, label_smoothing=0.1),
        (_leaf(6, 4, dtype=d), _leaf(7, 4, dtype=d), _leaf(7, dtype=d)))


def _paths(fn, tensors):
    """fn's output, gradients and grad_fn name in eager mode and through the operator
    (which pyfast.torch's functions call while the profiler records)."""
    runs = []
    for profiled in (False, True):
        torch.manual_seed(10)
        if profiled:
            with torch.profiler.profile():
                out, grads = _grads(fn, tensors)
                name = type(fn(*tensors).grad_fn).__name__
        else:
            out, grads = _grads(fn, tensors)
            name = type(fn(*tensors).grad_fn).__name__
        runs.append((out, grads, name))
    return runs


@pytest.mark.parametrize("case", ["matmul", "conv2d", "conv_transpose2d", "cross_entropy",
                                  "linear_cross_entropy"])
def test_eager_path_matches_the_operator(case):
    """In eager mode the functions call the kernels and gradient formulas without the
    dispatcher (an autograd.Function of the same setup_context and backward); under the
    profiler, torch.compile or functorch they call torch.ops.pyfast. Both give the same
    values and gradients, bit for bit."""
    torch.manual_seed(11)
    t = torch.tensor([1, 0, 3, -100, 2])
    fns = {
        "matmul": (lambda a, b: pft.matmul(a, b, trans_b=True, activation="relu"),
                   (_leaf(5, 3), _leaf(4, 3))),
        "conv2d": (lambda x, w, b: pft.conv2d(x, w, b, padding=1), (_leaf(2, 3, 5, 5),
                                                                      _leaf(4, 3, 3, 3),
                                                                      _leaf(4))),
        "conv_transpose2d": (lambda x, w: pft.conv_transpose2d(x, w, stride=2),
                             (_leaf(2, 3, 4, 4), _leaf(3, 2, 3, 3))),
        "cross_entropy": (lambda x: pft.cross_entropy(x, t, label_smoothing=0.1),
                          (_leaf(5, 4),)),
        "linear_cross_entropy": (lambda h, w: pft.linear_cross_entropy(h, w, t),
                                 (_leaf(5, 3), _leaf(4, 3))),
    }
    fn, tensors = fns[case]
    (out, grads, eager), (op_out, op_grads, op) = _paths(fn, tensors)
    assert eager.endswith("_eagerBackward") and not op.endswith("_eagerBackward"), (eager, op)
    torch.testing.assert_close(out, op_out, rtol=0, atol=0)
    for g, h in zip(grads, op_grads):
        torch.testing.assert_close(g, h, rtol=0, atol=0)
    with torch.no_grad():  # no gradient needed: the kernel alone, no graph
        assert fn(*tensors).grad_fn is None


def test_cross_entropy_step_takes_no_memory_from_the_system():
    """A steady-state cross_entropy forward + backward reuses pyfast's cached blocks: the
    gradient comes from pf.memory (torch's allocator gives large blocks back, so each step
    faulted a fresh (N, C) gradient in), and the backward fills no zero gradient for the
    saved dlogits. Before, each step here faulted in two 38 MB tensors (18432 pages): above
    glibc's 32 MiB mmap threshold every block is mapped afresh."""
    resource = pytest.importorskip("resource")
    import pyfast as pf
    if not pf.memory.enabled():
        pytest.skip("pyfast's caching allocator is off (PYFAST_ALLOCATOR=0 or not built)")
    x = torch.randn(2048, 4608, requires_grad=True)
    t = torch.randint(0, 4608, (2048,))

    def step():
        x.grad = None
        pft.cross_entropy(x, t).backward()
    step()
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 920, faults  # a tenth of one gradient's pages, over three steps
    assert pf.memory.stats()["in_use"] >= x.grad.nbytes
