"""Shared checks of the layer tests: forward and gradients against torch with copied
weights, and against central finite differences in float64."""

import numpy as np
import pytest

import pyfast as pf

torch = pytest.importorskip("torch")


def to_torch(a, requires_grad=False):
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad)


def copy_params(pf_module, torch_module):
    """Load torch's weights into the pyfast module (both state dicts share keys)."""
    sd = {k: v.detach().numpy() for k, v in torch_module.state_dict().items()}
    pf_module.load_state_dict(sd)


def assert_close(got, want, rtol=1e-4, atol=1e-5, what=""):
    got = got.numpy() if hasattr(got, "numpy") and not isinstance(got, np.ndarray) else got
    if isinstance(want, torch.Tensor):
        want = want.detach().numpy()
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def assert_grads_close(pf_module, torch_module, rtol, atol, relative_atol=0.0):
    """Every parameter's gradient equals that of torch's parameter of the same name, to
    ``rtol`` and ``atol + relative_atol * max |that gradient|``."""
    torch_params = dict(torch_module.named_parameters())
    for name, p in pf_module.named_parameters():
        want = torch_params[name].grad.detach().numpy()
        assert_close(p.grad, want, rtol, atol + relative_atol * np.abs(want).max(),
                     f"gradient of {name}")


def compare_module(pf_module, torch_module, x, rtol=1e-4, atol=1e-5, train=True, seed=0):
    """Same weights, same input: outputs, input gradient and every parameter gradient
    (for a random upstream gradient) must agree."""
    copy_params(pf_module, torch_module)
    pf_module.train(train)
    torch_module.train(train)
    xt = to_torch(x, True)
    xp_ = pf.tensor(x, requires_grad=True)
    yt = torch_module(xt)
    yp = pf_module(xp_)
    assert_close(yp, yt, rtol, atol, "forward")
    gy = np.random.default_rng(seed).standard_normal(yt.shape).astype(x.dtype)
    yt.backward(to_torch(gy))
    yp.backward(gy)
    assert_close(xp_.grad, xt.grad, rtol, atol, "input gradient")
    assert_grads_close(pf_module, torch_module, rtol, atol)
    for name, b in torch_module.named_buffers():
        assert_close(pf_module.state_dict()[name], b, rtol, atol, f"buffer {name}")
    return yp, yt


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar f at x (float64, perturbed in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def gradcheck(fn, *arrays, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Analytic gradients of sum(fn(*tensors) * w) (w random) against finite differences,
    for every float64 input array."""
    tensors = [pf.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    w = np.random.default_rng(seed).standard_normal(out.shape)
    (out * w).sum().backward()
    for i, (a, t) in enumerate(zip(arrays, tensors)):
        def f():
            with pf.no_grad():
                return float((fn(*[pf.tensor(b) for b in arrays]).numpy() * w).sum())
        num = numerical_gradient(f, a, eps)
        np.testing.assert_allclose(t.grad.numpy(), num, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")
