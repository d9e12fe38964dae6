"""linear_xent family: linear_cross_entropy of every backend against torch's
F.cross_entropy(h @ w.T + b) with autograd gradients (every option), against the float64
reference, across block boundaries (N not a multiple of the block, blocks of one row), all
rows ignored, and the argument checks."""

import itertools

import numpy as np
import pytest

import pyfast as pf
from pyfast.ops import linear_xent as lx
from tests.conftest import backend_params

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
BACKENDS = backend_params("linear_xent", "cpu")


def problem(rng, n, d, v, dtype, bias=True, ignore_frac=0.2, ignore_index=-100):
    h = rng.standard_normal((n, d)).astype(dtype)
    w = (rng.standard_normal((v, d)) / np.sqrt(d) * 2).astype(dtype)
    b = rng.standard_normal(v).astype(dtype) if bias else None
    y = rng.integers(0, v, n)
    y[rng.random(n) < ignore_frac] = ignore_index
    return h, w, b, y


def torch_linear_xent(h, w, b, y, **options):
    th, tw = torch.tensor(h, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    z = th @ tw.T + (0 if tb is None else tb)
    loss = F.cross_entropy(z, torch.tensor(y), **options)
    loss.backward(torch.ones_like(loss))
    return (loss.detach().numpy(), th.grad.numpy(), tw.grad.numpy(),
            None if tb is None else tb.grad.numpy())


def check_same(got, want, dtype):
    assert len(got) == 4
    for g, e, name in zip(got, want, ("loss", "dh", "dw", "db")):
        if e is None:
            assert g is None, name
            continue
        assert g.dtype == dtype and g.shape == e.shape, name
        np.testing.assert_allclose(g, e, err_msg=name, **TOL[dtype])


OPTIONS = [dict(bias=b, label_smoothing=s, reduction=r)
           for b, s, r in itertools.product((False, True), (0.0, 0.15), ("mean", "sum", "none"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS,
                         ids=lambda o: f"{'b' if o['bias'] else 'nb'}-ls{o['label_smoothing']}"
                                       f"-{o['reduction']}")
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3), (45, 17, 131)], ids=str)
def test_matches_torch(backend, dtype, options, shape):
    rng = np.random.default_rng(list(shape))
    h, w, b, y = problem(rng, *shape, dtype, bias=options["bias"], ignore_index=5)
    kw = dict(label_smoothing=options["label_smoothing"], reduction=options["reduction"],
              ignore_index=5)
    got = pf.ops.linear_cross_entropy(h, w, y, b, backend=backend, **kw)
    check_same(got, torch_linear_xent(h, w, b, y, **kw), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows", [1, 3, 16, 41, 64])
def test_block_boundaries_against_float64_reference(backend, rows):
    """Blocks of any size, the last one partial, give the whole-matrix result."""
    rng = np.random.default_rng(rows)
    n, d, v = 41, 19, 203
    h, w, b, y = problem(rng, n, d, v, np.float32)
    ref = pf.ops.linear_cross_entropy(h.astype(np.float64), w.astype(np.float64), y,
                                      b.astype(np.float64), label_smoothing=0.05,
                                      reduction="sum", backend="reference")
    kernels = pf.backends.select("linear_xent", "cpu", backend)[1]
    losses, dh = np.full(n, np.nan, np.float32), np.full((n, d), np.nan, np.float32)
    dw, db = np.full((v, d), np.nan, np.float32), np.full(v, np.nan, np.float32)
    kernels.linear_xent(h, w, b, y.astype(np.int64), -100, 0.05, 1.0, losses, dh, dw, db,
                        np.empty((rows, v), np.float32))
    np.testing.assert_allclose(losses.sum(dtype=np.float64), ref[0], rtol=1e-5)
    for got, want in ((dh, ref[1]), (dw, ref[2]), (db, ref[3])):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_block_rows_stay_small():
    # the benchmark's shape: at most 5% of the logits, a block big enough for the GEMM
    rows = lx.block_rows(4096, 32000, 4)
    assert lx.MIN_BLOCK_ROWS <= rows and rows * 32000 <= 0.05 * 4096 * 32000
    assert lx.block_rows(5, 10, 4) == 3 and lx.block_rows(1, 10, 4) == 1  # never all rows of 2+
    assert lx.block_rows(10 ** 6, 256000, 4) * 256000 * 4 <= lx.MAX_WORKSPACE_BYTES


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_rows_ignored(backend, reduction):
    rng = np.random.default_rng(1)
    h, w, b, _ = problem(rng, 9, 4, 6, np.float32)
    y = np.full(9, -100)
    loss, dh, dw, db = pf.ops.linear_cross_entropy(h, w, y, b, reduction=reduction,
                                                   backend=backend)
    if reduction == "mean":
        assert np.isnan(loss)
    else:
        assert np.all(loss == 0)
    assert not dh.any() and not dw.any() and not db.any()
    want = torch_linear_xent(h, w, b, y, reduction=reduction)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(want[0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_foreign_arrays(backend):
    rng = np.random.default_rng(2)
    h, w, b, y = problem(rng, 12, 6, 11, np.float32)
    loss, dh, dw, db = pf.ops.linear_cross_entropy(h[:0], w, y[:0], b, reduction="sum",
                                                   backend=backend)
    assert loss == 0 and dh.shape == (0, 6) and not dw.any() and not db.any()
    got = pf.ops.linear_cross_entropy(torch.tensor(h), torch.tensor(w), torch.tensor(y),
                                      torch.tensor(b), backend=backend)
    check_same(got, torch_linear_xent(h, w, b, y), np.float32)
    # non-contiguous operands and int32 labels
    hs = np.asfortranarray(h)
    got = pf.ops.linear_cross_entropy(hs, w, y.astype(np.int32), b, backend=backend)
    check_same(got, torch_linear_xent(h, w, b, y), np.float32)


def test_large_logits_are_stable():
    rng = np.random.default_rng(3)
    h, w, b, y = problem(rng, 40, 8, 50, np.float32, ignore_frac=0)
    h *= 200  # logits in the thousands: a naive exp overflows
    got = pf.ops.linear_cross_entropy(h, w, y, b)
    want = torch_linear_xent(h, w, b, y)
    assert np.isfinite(got[0]) and np.all(np.isfinite(got[1]))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    rng = np.random.default_rng(4)
    h, w, b, y = problem(rng, 6, 4, 5, np.float32, ignore_frac=0)
    call = pf.ops.linear_cross_entropy
    with pytest.raises(ValueError, match="h must be 2-D"):
        call(h[0], w, y[:1], backend=backend)
    with pytest.raises(ValueError, match=r"w must be \(V, D\).*\(6, 4\).*\(5, 3\)"):
        call(h, w[:, :3], y, backend=backend)
    with pytest.raises(ValueError, match="bias"):
        call(h, w, y, b[:4], backend=backend)
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\)"):
        call(h, w, y[:5], backend=backend)
    with pytest.raises(ValueError, match=r"labels\[2\] is 5"):
        bad = y.copy()
        bad[2] = 5
        call(h, w, bad, backend=backend)
    with pytest.raises(TypeError, match="labels must be an integer"):
        call(h, w, y.astype(np.float32), backend=backend)
    with pytest.raises(TypeError):
        call(h, w.astype(np.float64), y, backend=backend)
    with pytest.raises(TypeError):
        call(h.astype(np.float16), w, y, backend=backend)
    with pytest.raises(ValueError, match="reduction"):
        call(h, w, y, reduction="avg", backend=backend)
    with pytest.raises(ValueError, match="label_smoothing"):
        call(h, w, y, label_smoothing=1.5, backend=backend)
    with pytest.raises(TypeError, match="ignore_index"):
        call(h, w, y, ignore_index=1.0, backend=backend)


def test_native_binding_checks_everything():
    kernels = pf.backends.select("linear_xent", "cpu", "native")[1] \
        if "linear_xent" in getattr(pf.backends._load("native", "cpu"), "FAMILIES", ()) \
        else pytest.skip("native linear_xent not built")
    h = np.ones((4, 3), np.float32)
    w = np.ones((5, 3), np.float32)
    out = dict(losses=np.empty(4, np.float32), dh=np.empty((4, 3), np.float32),
               dw=np.empty((5, 3), np.float32), db=None, workspace=np.empty((2, 5), np.float32))
    y = np.array([0, 1, 7, 2])
    with pytest.raises(ValueError, match=r"labels\[2\] is 7"):
        kernels.linear_xent(h, w, None, y, -100, 0.0, 1.0, **out)
    with pytest.raises(ValueError, match="workspace"):
        kernels.linear_xent(h, w, None, y[:2].repeat(2) * 0, -100, 0.0, 1.0,
                            **{**out, "workspace": np.empty((2, 4), np.float32)})
    with pytest.raises(ValueError, match="bias and db"):
        kernels.linear_xent(h, w, np.ones(5, np.float32), y * 0, -100, 0.0, 1.0, **out)
