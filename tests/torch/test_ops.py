"""torch.ops.pyfast: every operator passes torch.library.opcheck (schema, autograd
registration, fake tensor, AOT dispatch) and writes into tensors torch allocated."""

import pytest

torch = pytest.importorskip("torch")
pft = pytest.importorskip("pyfast.torch")

ops = torch.ops.pyfast


def _t(*shape, grad=False, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype, requires_grad=grad)


def _cases():
    torch.manual_seed(0)
    x, w = _t(2, 4, 7, 6), _t(6, 2, 3, 3)  # groups=2
    gy = ops.conv2d(x, w, None, [2, 1], [1, 1], [1, 2], 2).detach()
    labels = torch.tensor([1, 0, 4, -100, 2])
    yield "matmul", ops.matmul.default, (_t(5, 3, grad=True), _t(4, 3, grad=True), False,
                                         True, _t(4, grad=True), "relu")
    yield "conv2d", ops.conv2d.default, (x.clone().requires_grad_(), w.clone().requires_grad_(),
                                         _t(6, grad=True), [2, 1], [1, 1], [1, 2], 2)
    yield "conv2d_backward", ops.conv2d_backward.default, (
        gy.requires_grad_(), x.clone().requires_grad_(), w.clone().requires_grad_(), [2, 1],
        [1, 1], [1, 2], 2, [True, True, True])
    yield "conv_transpose2d", ops.conv_transpose2d.default, (
        _t(2, 4, 5, 3, grad=True), _t(4, 3, 3, 2, grad=True), _t(6, grad=True), [2, 2],
        [1, 0], [1, 1], [1, 1], 2)
    yield "softmax_cross_entropy", ops.softmax_cross_entropy.default, (
        _t(5, 6, grad=True), labels, torch.rand(6), -100, 0.1, "mean")
    p = [_t(3, 4), _t(5)]
    g = [_t(3, 4), _t(5)]
    yield "sgd_step", ops.sgd_step.default, (p, g, [torch.zeros(3, 4), torch.zeros(5)], 0.1,
                                             0.9, 0.0, True, 0.01, 2)
    yield "adam_step", ops.adam_step.default, (
        [q.clone() for q in p], g, [torch.zeros_like(q) for q in p],
        [torch.zeros_like(q) for q in p], [torch.zeros_like(q) for q in p], 3, 1e-3, 0.9,
        0.999, 1e-8, 0.01, True, True)
    yield "rmsprop_step", ops.rmsprop_step.default, (
        [q.clone() for q in p], g, [torch.rand_like(q) for q in p],
        [torch.zeros_like(q) for q in p], [torch.zeros_like(q) for q in p], 1e-2, 0.99, 1e-8,
        0.0, 0.9, True)


@pytest.mark.parametrize("name,op,args", list(_cases()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


def test_linear_cross_entropy_opcheck():
    if not hasattr(pft._ops.pfops, "linear_cross_entropy"):
        pytest.skip("pf.ops.linear_cross_entropy is not merged into this branch")
    torch.manual_seed(1)
    args = (_t(6, 4, grad=True), _t(9, 4, grad=True), torch.tensor([1, 8, 0, -100, 3, 3]),
            _t(9, grad=True), -100, 0.05, "mean")
    torch.library.opcheck(ops.linear_cross_entropy.default, args)


def test_output_is_torch_allocated_and_kernel_wrote_it():
    a, b = torch.randn(8, 5), torch.randn(5, 3)
    out = ops.matmul(a, b, False, False, None, None)
    assert out._base is None and out.is_contiguous()
    torch.testing.assert_close(out, a @ b)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="inner dimensions"):
        ops.matmul(torch.randn(3, 4), torch.randn(5, 2), False, False, None, None)
    with pytest.raises(TypeError, match="bfloat16"):
        ops.matmul(torch.randn(3, 4, dtype=torch.bfloat16), torch.randn(4, 2), False, False,
                   None, None)
    with pytest.raises(ValueError, match="labels"):
        ops.softmax_cross_entropy(torch.randn(3, 4), torch.tensor([0, 9, 1]), None, -100, 0.0,
                                  "mean")
    with pytest.raises(ValueError):
        ops.conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 5, 5), None, [1, 1], [0, 0],
                   [1, 1], 1)


FUNCTIONAL_OPS = ("matmul", "conv2d", "conv2d_backward", "conv_transpose2d",
                  "softmax_cross_entropy", "linear_cross_entropy")


@pytest.mark.parametrize("name", FUNCTIONAL_OPS)
def test_cpu_and_cuda_kernels_registered(name):
    for key in ("CPU", "CUDA", "Autograd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pyfast::{name}", key), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_match_cpu():
    torch.manual_seed(2)
    a, b = torch.randn(33, 17), torch.randn(17, 9)
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    logits, t = torch.randn(6, 11), torch.randint(0, 11, (6,))
    cases = [(ops.matmul, (a, b, False, False, None, "relu")),
             (ops.conv2d, (x, w, None, [1, 1], [1, 1], [1, 1], 1)),
             (ops.softmax_cross_entropy, (logits, t, None, -100, 0.1, "mean"))]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # kernels go on torch's current stream
        for op, args in cases:
            want = op(*args)
            got = op(*[v.cuda() if isinstance(v, torch.Tensor) else v for v in args])
            torch.cuda.synchronize()
            for g, e in zip(got if isinstance(got, tuple) else (got,),
                            want if isinstance(want, tuple) else (want,)):
                assert g.is_cuda
                torch.testing.assert_close(g.cpu(), e, rtol=1e-4, atol=1e-4)
