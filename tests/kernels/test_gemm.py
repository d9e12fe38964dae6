"""gemm family: every backend against the float64 reference, torch for semantics, and the
argument checks of pf.ops.matmul and of the native bindings."""

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params, dot_tolerance

SIZES = (1, 7, 33, 257, 1000)
# (m, n, k): every size appears in every position, plus a few square-ish ones.
SHAPES = [(1, 1, 1), (7, 33, 257), (33, 257, 1000), (257, 1000, 7), (1000, 7, 33),
          (1, 257, 33), (257, 1, 7), (33, 7, 1), (64, 64, 64), (100, 300, 130)]


def reference(a, b, trans_a=False, trans_b=False, bias=None, relu=False):
    a64 = (a.T if trans_a else a).astype(np.float64)
    b64 = (b.T if trans_b else b).astype(np.float64)
    r = a64 @ b64
    if bias is not None:
        r += bias
    return np.maximum(r, 0) if relu else r


def assert_matmul_close(got, a, b, trans_a=False, trans_b=False, bias=None, relu=False):
    want = reference(a, b, trans_a, trans_b, bias, relu)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    tol = dot_tolerance(op_a, op_b, op_a.shape[1], 0.0 if bias is None else bias)
    assert got.shape == want.shape and got.dtype == a.dtype
    bad = np.abs(got - want) > tol
    assert not bad.any(), (f"{bad.sum()} of {bad.size} elements off; worst "
                           f"{np.abs(got - want).max():.3g} (tolerance {tol.min():.3g}..)")


def operands(rng, m, n, k, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


@pytest.mark.parametrize("backend", backend_params("gemm", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_float64_reference(backend, dtype, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng([m, n, k, trans_a, trans_b])
    a, b = operands(rng, m, n, k, trans_a, trans_b, dtype)
    got = pf.ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, backend=backend)
    assert_matmul_close(got, a, b, trans_a, trans_b)


@pytest.mark.parametrize("backend", backend_params("gemm", "cpu"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 33, 257), (257, 1000, 33), (130, 70, 300)])
def test_fused_bias_relu(backend, dtype, m, n, k):
    rng = np.random.default_rng([m, n, k])
    a, b = operands(rng, m, n, k, False, True, dtype)
    bias = rng.standard_normal(n).astype(dtype)
    got = pf.ops.matmul(a, b, trans_b=True, bias=bias, activation="relu", backend=backend)
    assert_matmul_close(got, a, b, trans_b=True, bias=bias, relu=True)
    assert (got >= 0).all() and (got == 0).any()
    got = pf.ops.matmul(a, b, trans_b=True, bias=bias, backend=backend)
    assert_matmul_close(got, a, b, trans_b=True, bias=bias)


@pytest.mark.parametrize("backend", backend_params("gemm", "cpu"))
def test_strided_and_sliced_operands(backend):
    rng = np.random.default_rng(7)
    big = rng.standard_normal((400, 400)).astype(np.float32)
    cases = [
        (big[:33, :257], big[100:357, :19]),        # leading dimension > extent
        (big[::2, 1:258:1], big[1:258, ::3]),       # non-unit strides: copied at the boundary
        (np.asfortranarray(big[:40, :50]), big[:50, :60].T.copy().T),  # column-major
        (big[::-1, ::-1][:20, :30], big[:30, ::-1][:, :25]),          # negative strides
    ]
    for a, b in cases:
        assert_matmul_close(pf.ops.matmul(a, b, backend=backend), a, b)


@pytest.mark.parametrize("backend", backend_params("gemm", "cpu"))
def test_out_argument(backend):
    rng = np.random.default_rng(3)
    a, b = operands(rng, 65, 47, 31, False, False, np.float32)
    out = np.full((65, 47), np.nan, np.float32)
    assert pf.ops.matmul(a, b, out=out, backend=backend) is out
    assert_matmul_close(out, a, b)
    # a non-contiguous out is filled through a temporary, and the rest is left alone
    wide = np.zeros((65, 100), np.float32)
    assert pf.ops.matmul(a, b, out=wide[:, 10:57], backend=backend).base is wide
    assert_matmul_close(wide[:, 10:57], a, b)
    assert not wide[:, :10].any() and not wide[:, 57:].any()
    # out may alias an input
    sq = rng.standard_normal((40, 40)).astype(np.float32)
    want = reference(sq, sq)
    pf.ops.matmul(sq, sq, out=sq, backend=backend)
    assert np.allclose(sq, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", backend_params("gemm", "cpu"))
def test_empty_dimensions(backend):
    z = pf.ops.matmul(np.ones((0, 5), np.float32), np.ones((5, 3), np.float32), backend=backend)
    assert z.shape == (0, 3)
    bias = np.array([1.0, -2.0, 3.0], np.float32)
    r = pf.ops.matmul(np.ones((4, 0), np.float32), np.ones((0, 3), np.float32), bias=bias,
                      activation="relu", backend=backend)
    assert np.array_equal(r, np.tile([1.0, 0.0, 3.0], (4, 1)).astype(np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_native_threads_agree(threads):
    pytest.importorskip("pyfast._C")
    rng = np.random.default_rng(11)
    a, b = operands(rng, 517, 389, 611, False, False, np.float32)
    before = pf.get_num_threads()
    try:
        pf.set_num_threads(threads)
        assert_matmul_close(pf.ops.matmul(a, b, backend="native"), a, b)
    finally:
        pf.set_num_threads(before)


def test_native_every_isa_the_cpu_runs():
    _C = pytest.importorskip("pyfast._C")
    rng = np.random.default_rng(5)
    before = _C.isa()
    try:
        for isa in _C.supported_isas():
            _C.set_isa(isa)
            for dtype in (np.float32, np.float64):
                for m, n, k in [(1, 1, 1), (13, 37, 300), (300, 129, 515)]:
                    a, b = operands(rng, m, n, k, True, False, dtype)
                    bias = rng.standard_normal(n).astype(dtype)
                    got = pf.ops.matmul(a, b, trans_a=True, bias=bias, activation="relu",
                                        backend="native")
                    assert_matmul_close(got, a, b, trans_a=True, bias=bias, relu=True)
    finally:
        _C.set_isa(before)
    with pytest.raises(ValueError, match="unknown CPU code path"):
        _C.set_isa("sse9")


def test_semantics_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((17, 40)).astype(np.float32)
    w = rng.standard_normal((23, 40)).astype(np.float32)  # torch Linear layout (out, in)
    bias = rng.standard_normal(23).astype(np.float32)
    want = torch.relu(torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w),
                                                 torch.from_numpy(bias))).numpy()
    got = pf.ops.matmul(x, w, trans_b=True, bias=bias, activation="relu")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dlpack_in_and_out_without_copies():
    torch = pytest.importorskip("torch")
    a = torch.randn(9, 12)
    b = torch.randn(12, 5)
    got = pf.ops.matmul(a, b)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, (a @ b).numpy(), rtol=1e-5, atol=1e-5)
    out = torch.empty(9, 5)
    assert pf.ops.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out.numpy(), (a @ b).numpy(), rtol=1e-5, atol=1e-5)


class TestBadInput:
    a = np.ones((4, 3), np.float32)
    b = np.ones((3, 5), np.float32)

    def test_shapes(self):
        with pytest.raises(ValueError, match=r"inner dimensions differ.*\(4, 3\).*\(5, 3\)"):
            pf.ops.matmul(self.a, self.b.T.copy())
        with pytest.raises(ValueError, match=r"a must be 2-D, got shape \(4, 3, 1\)"):
            pf.ops.matmul(self.a[..., None], self.b)
        with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
            pf.ops.matmul(self.a, self.b, bias=np.ones(4, np.float32))
        with pytest.raises(ValueError, match=r"out must have shape \(4, 5\), got \(5, 4\)"):
            pf.ops.matmul(self.a, self.b, out=np.empty((5, 4), np.float32))

    def test_types(self):
        with pytest.raises(TypeError, match="b is float64 but a is float32"):
            pf.ops.matmul(self.a, self.b.astype(np.float64))
        with pytest.raises(TypeError, match="a must be float32 or float64.*int64"):
            pf.ops.matmul(np.ones((4, 3), np.int64), self.b)
        with pytest.raises(TypeError, match="a must be a numpy or cupy array.*list"):
            pf.ops.matmul([[1.0]], self.b)
        with pytest.raises(TypeError, match="out must be float32"):
            pf.ops.matmul(self.a, self.b, out=np.empty((4, 5), np.float64))

    def test_options(self):
        with pytest.raises(ValueError, match="activation must be one of"):
            pf.ops.matmul(self.a, self.b, activation="gelu")
        with pytest.raises(ValueError, match="unknown backend 'fast'.*native, numba, reference"):
            pf.ops.matmul(self.a, self.b, backend="fast")
        readonly = np.empty((4, 5), np.float32)
        readonly.flags.writeable = False
        with pytest.raises(ValueError, match="out is read-only"):
            pf.ops.matmul(self.a, self.b, out=readonly)

    def test_native_binding_checks_before_touching_memory(self):
        _C = pytest.importorskip("pyfast._C")
        out = np.empty((4, 5), np.float32)
        with pytest.raises(ValueError, match=r"out must have shape \(4, 5\)"):
            _C.matmul(self.a, self.b, np.empty((4, 6), np.float32), None, False)
        with pytest.raises(ValueError, match="inner dimensions differ"):
            _C.matmul(self.a, self.a, out, None, False)
        with pytest.raises(ValueError, match="b must have dtype float32"):
            _C.matmul(self.a, self.b.astype(np.float64), out, None, False)
        with pytest.raises(ValueError, match="out must be C-contiguous"):
            _C.matmul(self.a, self.b, np.empty((5, 4), np.float32).T, None, False)
        with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
            _C.matmul(self.a, self.b, out, np.ones(3, np.float32), False)
        with pytest.raises(TypeError, match="float32 or float64"):
            _C.matmul(self.a.astype(np.int32), self.b, out, None, False)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 33, 5), (33, 17, 40)])
def test_numba_cuda_kernel_in_simulator(dtype, trans_a, trans_b, m, n, k):
    from pyfast.kernels import cuda as kernels
    rng = np.random.default_rng([m, n, k])
    a, b = operands(rng, m, n, k, trans_a, trans_b, dtype)
    bias = rng.standard_normal(n).astype(dtype)
    out = np.empty((m, n), dtype)
    kernels.matmul(a.T if trans_a else a, b.T if trans_b else b, out, bias, True)
    assert_matmul_close(out, a, b, trans_a, trans_b, bias=bias, relu=True)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("gemm", "cuda"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
@pytest.mark.parametrize("m,n,k", SHAPES + [(1024, 1024, 1024), (4096, 96, 4096)])
def test_cuda_matches_float64_reference(backend, dtype, trans_a, trans_b, m, n, k):
    import cupy
    rng = np.random.default_rng([m, n, k])
    a, b = operands(rng, m, n, k, trans_a, trans_b, dtype)
    bias = rng.standard_normal(n).astype(dtype)
    got = pf.ops.matmul(cupy.asarray(a), cupy.asarray(b), trans_a=trans_a, trans_b=trans_b,
                        bias=cupy.asarray(bias), activation="relu", backend=backend)
    assert isinstance(got, cupy.ndarray)
    assert_matmul_close(cupy.asnumpy(got), a, b, trans_a, trans_b, bias=bias, relu=True)
