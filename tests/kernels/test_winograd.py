"""The native Winograd F(4x4, 3x3) path of conv2d (csrc/cpu/conv/winograd.cpp): forward, input
gradient and weight gradient against the float64 reference, forced with algo="winograd" on
shapes with ragged tiles, padding 0/1/2, batch 1 and channel counts that fill no whole
vector, on every ISA the CPU runs; and where the planner sends it.

Error bound. The transforms mix the 6x6 input patch with weights up to 5 and the inverse sums
the 36 products with weights up to 8, so the rounding error does not follow the elementwise
bound of a direct sum; it stays within a small multiple of eps times the largest
sum |x| |w| of the layer (the reference convolution of |x| and |w|, which grows with C*9 and
the magnitudes of x and w). Measured in float32 (standard normal data): 3.5-15 eps times
that from 17 to 1024 channels, against 0.5-1.7 for the direct path; fewer channels sum fewer
products against the same transform error, up to 37 eps with one (found by the fuzzer,
tests/fuzz/test_fuzz_gemm_conv.py; the planner sends no layer under 32 channels here). The
weight gradient's sum runs over images and positions instead (the magnitude is the weight
gradient of |gy| and |x|), through the transforms of gy's tiles (weights up to 8) and of x's
patches, and G^T (weights down to 1/24): measured 1.2-14 eps times that (1 to 1024 channels,
4x4 to 40x40 images, 1 to 64 images), against 0.1-2.2 for the direct path. The bound is 64 eps
times the magnitude, per layer: a lost term, a wrong tap or a misplaced tile is off by O(1)
of it, some 10^5 eps.
"""

import numpy as np
import pytest

import pyfast as pf

_C = pytest.importorskip("pyfast._C")

KAPPA = 64

# (name, N, C, H, W, K, padding)
CASES = [
    ("7x9-pad1-c3", 1, 3, 7, 9, 5, 1),
    ("13x11-pad0-c17-k19", 2, 17, 13, 11, 19, 0),
    ("5x6-c33-k7", 3, 33, 5, 6, 7, 1),
    ("3x3-pad0-one-output", 2, 4, 3, 3, 3, 0),
    ("1x1-image-pad1", 1, 5, 1, 1, 6, 1),
    ("4x4-whole-tile", 2, 9, 4, 4, 10, 1),
    ("6x7-pad2", 1, 6, 6, 7, 4, 2),
    ("18x18-c40-k48", 2, 40, 18, 18, 48, 1),
    ("40x37-many-blocks", 3, 8, 40, 37, 9, 1),
]
IDS = [c[0] for c in CASES]


def data(case, dtype, seed):
    _, n, c, h, w, k, p = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    gy = rng.standard_normal((n, k, h + 2 * p - 2, w + 2 * p - 2)).astype(dtype)
    return x, wt, b, gy, p


def to_nhwc(a):
    """The same values in channels-last memory (strides of an NHWC array)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def ref(fn, *arrays, **kw):
    return fn(*[None if a is None else np.asarray(a, np.float64) for a in arrays],
              backend="reference", **kw)


def assert_layer_bound(got, want, magnitude, dtype, what):
    """|got - want| <= KAPPA * eps * max(magnitude) everywhere (the bound of the layer)."""
    bound = KAPPA * np.finfo(dtype).eps * float(magnitude.max()) + np.finfo(dtype).tiny
    err = np.abs(got.astype(np.float64) - want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert err.max() <= bound, (f"{what}: worst error {err.max():.3g} > bound {bound:.3g} "
                                f"({err.max() / bound * KAPPA:.1f} eps * max sum |x||w|)")


def forward(x, w, b, p, relu=False, algo="winograd"):
    n, _, h, wd = x.shape
    y = np.full((n, w.shape[0], h + 2 * p - 2, wd + 2 * p - 2), np.nan, x.dtype)
    path = _C.conv2d(x, w, b, y, (1, 1), (p, p), (1, 1), 1, relu, algo=algo)
    return y, path


def input_grad(gy, x, w, p, algo="winograd"):
    gx = np.full_like(x, np.nan)
    paths = _C.conv2d_backward(gy, None, w, gx, None, None, (1, 1), (p, p), (1, 1), 1,
                               algo=algo)
    return gx, paths[0]


def weight_grad(gy, x, w, p, algo="winograd"):
    gw = np.full_like(w, np.nan)
    paths = _C.conv2d_backward(gy, x, w, None, gw, None, (1, 1), (p, p), (1, 1), 1, algo=algo)
    return gw, paths[1]


def check_case(case, dtype, seed):
    x, w, b, gy, p = data(case, dtype, seed)
    for bias, relu in [(None, False), (b, True)]:
        y, path = forward(x, w, bias, p, relu)
        assert path == "winograd"
        want = ref(pf.ops.conv2d, x, w, bias, padding=p, activation="relu" if relu else None)
        mag = ref(pf.ops.conv2d, np.abs(x), np.abs(w), None if bias is None else np.abs(bias),
                  padding=p)
        assert_layer_bound(y, want, mag, dtype, f"forward bias={bias is not None} relu={relu}")
    gx, path = input_grad(gy, x, w, p)
    assert path == "winograd"
    want = ref(pf.ops.conv2d_backward, gy, x, w, padding=p, needs=("x",))[0]
    mag = ref(pf.ops.conv2d_backward, np.abs(gy), np.abs(x), np.abs(w), padding=p,
              needs=("x",))[0]
    assert_layer_bound(gx, want, mag, dtype, "input gradient")
    gw, path = weight_grad(gy, x, w, p)
    assert path == "winograd"
    want = ref(pf.ops.conv2d_backward, gy, x, w, padding=p, needs=("w",))[1]
    mag = ref(pf.ops.conv2d_backward, np.abs(gy), np.abs(x), np.abs(w), padding=p,
              needs=("w",))[1]
    assert_layer_bound(gw, want, mag, dtype, "weight gradient")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forced_winograd_matches_float64_reference(dtype, case):
    check_case(case, dtype, 1)


def test_error_scales_with_the_layer_not_a_global_tolerance():
    """Inputs of 1e3 and weights of 1e-2 (and a mean offset, as after a ReLU): the bound moves
    with the layer's magnitudes, so the same KAPPA holds."""
    rng = np.random.default_rng(5)
    x = (1e3 * (np.abs(rng.standard_normal((2, 64, 12, 12))) + 1)).astype(np.float32)
    w = (1e-2 * rng.standard_normal((24, 64, 3, 3))).astype(np.float32)
    y, path = forward(x, w, None, 1)
    assert path == "winograd"
    want = ref(pf.ops.conv2d, x, w, padding=1)
    mag = ref(pf.ops.conv2d, np.abs(x), np.abs(w), padding=1)
    assert_layer_bound(y, want, mag, np.float32, "scaled forward")
    # ... and the bound is tight enough to catch a single lost tap
    w_lost = w.copy()
    w_lost[3, 10, 1, 2] = 0
    y_lost, _ = forward(x, w_lost, None, 1)
    with pytest.raises(AssertionError):
        assert_layer_bound(y_lost, want, mag, np.float32, "a lost tap")


def test_on_every_isa_and_thread_count():
    """Every code path the CPU runs (AVX-512, AVX2, generic) at 1, 2 and 3 threads: one block
    per call, blocks spread over threads, and fewer blocks than threads."""
    before, threads = _C.isa(), _C.get_num_threads()
    try:
        for isa in _C.supported_isas():
            _C.set_isa(isa)
            for n in (1, 2, 3):
                _C.set_num_threads(n)
                for case in (CASES[1], CASES[7], CASES[8]):
                    check_case(case, np.float32, 7)
    finally:
        _C.set_isa(before)
        _C.set_num_threads(threads)


def test_threads_agree_exactly():
    """Each tile's sums run in the same order whatever the thread count, and so do the weight
    gradient's sums over the blocks of tiles."""
    x, w, b, gy, p = data(CASES[8], np.float32, 9)
    threads = _C.get_num_threads()
    try:
        _C.set_num_threads(1)
        one, _ = forward(x, w, b, p)
        gw_one, _ = weight_grad(gy, x, w, p)
        _C.set_num_threads(3)
        three, _ = forward(x, w, b, p)
        gw_three, _ = weight_grad(gy, x, w, p)
    finally:
        _C.set_num_threads(threads)
    np.testing.assert_array_equal(one, three)
    np.testing.assert_array_equal(gw_one, gw_three)


def test_planner_takes_winograd_where_it_pays():
    """float32 3x3 stride-1 layers with 32+ channels and enough tiles go to Winograd, all
    three passes (the path each call returns says so); float64, few channels, few tiles and
    other kernels do not."""
    threads = _C.get_num_threads()
    try:
        _C.set_num_threads(1)
        rng = np.random.default_rng(2)
        x = rng.standard_normal((4, 32, 16, 16)).astype(np.float32)  # 64 tiles
        w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
        y, path = forward(x, w, None, 1, algo=None)
        assert path == "winograd"
        gx, gpath = input_grad(y, x, w, 1, algo=None)
        assert gpath == "winograd"
        # the weight gradient wants 2^17 tile x channel x output-channel triples, 16+ tiles
        assert weight_grad(y, x, w, 1, algo=None)[1] != "winograd"  # 2^16
        wide = rng.standard_normal((4, 64, 16, 16)).astype(np.float32)
        ww = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
        assert weight_grad(wide, wide, ww, 1, algo=None)[1] == "winograd"
        assert weight_grad(wide.astype(np.float64), wide.astype(np.float64),
                           ww.astype(np.float64), 1, algo=None)[1] != "winograd"
        tiny = np.ascontiguousarray(wide[:, :, :4, :4])  # 4 tiles
        assert weight_grad(tiny, tiny, ww, 1, algo=None)[1] != "winograd"
        assert forward(x.astype(np.float64), w.astype(np.float64), None, 1, algo=None)[1] != \
            "winograd"
        few = np.ascontiguousarray
        assert forward(few(x[:, :16]), few(w[:, :16]), None, 1, algo=None)[1] != "winograd"
        assert forward(few(x[:3, :, :12, :12]), w, None, 1, algo=None)[1] != "winograd"  # 27 tiles
        _C.set_num_threads(5)  # 64 tiles, but fewer than 16 for each thread
        assert forward(x, w, None, 1, algo=None)[1] != "winograd"
    finally:
        _C.set_num_threads(threads)


def test_shapes_it_cannot_take_are_refused():
    x = np.zeros((1, 4, 8, 8), np.float32)
    for w_shape, stride, dilation, groups, out in [
            ((4, 4, 5, 5), 1, 1, 1, (1, 4, 6, 6)), ((4, 4, 3, 3), 2, 1, 1, (1, 4, 4, 4)),
            ((4, 4, 3, 3), 1, 2, 1, (1, 4, 6, 6)), ((4, 2, 3, 3), 1, 1, 2, (1, 4, 8, 8))]:
        with pytest.raises(ValueError, match="Winograd path needs a 3x3 kernel"):
            _C.conv2d(x, np.zeros(w_shape, np.float32), None, np.zeros(out, np.float32),
                      (stride, stride), (1, 1), (dilation, dilation), groups, False,
                      algo="winograd")
        with pytest.raises(ValueError, match="weight gradient.*Winograd path needs a 3x3"):
            _C.conv2d_backward(np.zeros(out, np.float32), x, np.zeros(w_shape, np.float32),
                               None, np.zeros(w_shape, np.float32), None, (stride, stride),
                               (1, 1), (dilation, dilation), groups, algo="winograd")


def test_empty_sums_give_zero_weight_gradients():
    """No images: the weight gradient is zeros, not the buffer's old contents."""
    w = np.zeros((6, 5, 3, 3), np.float32)
    gw, path = weight_grad(np.ones((0, 6, 8, 8), np.float32), np.ones((0, 5, 8, 8), np.float32),
                           w, 1)
    assert path == "winograd"
    np.testing.assert_array_equal(gw, 0)


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_transposed_convolution_with_bias(padding):
    """conv_transpose2d of a 3x3 stride-1 kernel runs the input gradient, bias included."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 21, 9, 7)).astype(np.float32)
    w = rng.standard_normal((21, 13, 3, 3)).astype(np.float32)
    b = rng.standard_normal(13).astype(np.float32)
    out = np.full((2, 13, 11 - 2 * padding, 9 - 2 * padding), np.nan, np.float32)
    path = _C.conv_transpose2d(x, w, b, out, (1, 1), (padding, padding), (1, 1), 1,
                               algo="winograd")
    assert path == "winograd"
    want = ref(pf.ops.conv_transpose2d, x, w, b, padding=padding)
    mag = ref(pf.ops.conv_transpose2d, np.abs(x), np.abs(w), np.abs(b), padding=padding)
    assert_layer_bound(out, want, mag, np.float32, "conv_transpose2d")


def test_public_api_forces_and_reports_the_path(monkeypatch):
    """pf.ops: algo="winograd" or PYFAST_CONV_ALGO=winograd forces it, last_conv_path() says
    which path each pass ran; channels-last arrays run it on NCHW copies."""
    x, w, b, gy, p = data(CASES[7], np.float32, 13)
    y = pf.ops.conv2d(x, w, b, padding=p, algo="winograd", backend="native")
    assert pf.ops.last_conv_path() == {"forward": "winograd"}
    monkeypatch.setenv("PYFAST_CONV_ALGO", "winograd")
    np.testing.assert_array_equal(pf.ops.conv2d(x, w, b, padding=p, backend="native"), y)
    assert pf.ops.last_conv_path() == {"forward": "winograd"}
    gx, gw, _ = pf.ops.conv2d_backward(gy, x, w, padding=p, needs=("x", "w"), backend="native")
    assert pf.ops.last_conv_path() == {"input_grad": "winograd", "weight_grad": "winograd"}
    monkeypatch.delenv("PYFAST_CONV_ALGO")
    last = pf.ops.conv2d_backward(to_nhwc(gy), to_nhwc(x), w, padding=p, needs=("x", "w"),
                                  algo="winograd", backend="native")
    assert pf.ops.last_conv_path() == {"input_grad": "winograd", "weight_grad": "winograd"}
    np.testing.assert_allclose(last[0], gx, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(last[1], gw)
    threads = _C.get_num_threads()
    try:
        pf.set_num_threads(1)
        big = np.random.default_rng(3).standard_normal((4, 64, 16, 16)).astype(np.float32)
        wb = np.random.default_rng(4).standard_normal((64, 64, 3, 3)).astype(np.float32)
        pf.ops.conv2d_backward(pf.ops.conv2d(big, wb, padding=1, backend="native"), big, wb,
                               padding=1, backend="native")
        assert pf.ops.last_conv_path() == {"input_grad": "winograd", "weight_grad": "winograd"}
    finally:
        pf.set_num_threads(threads)
