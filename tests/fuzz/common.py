"""Shared ground of the property-based fuzz tests.

Each fuzz test draws a random geometry and options with hypothesis, runs one pf.ops entry
on a non-reference backend (native on a drawn SIMD path and thread count, numba) and checks
it against the reference backend fed float64 copies of the same inputs, within a bound on
the rounding error of the dtype.

Budget: PYFAST_FUZZ_EXAMPLES examples per test (default 20, so the fuzz tests stay well
inside 90 s of the default suite). The default run is derandomized (the same examples every
time, as a test suite should be); setting PYFAST_FUZZ_EXAMPLES (the sanitizer run, manual
runs) draws fresh examples, and hypothesis prints the seed of any failure to replay it.
"""

import contextlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import pyfast as pf
from tests.conftest import backend_params

_EXAMPLES = os.environ.get("PYFAST_FUZZ_EXAMPLES")
EXAMPLES = int(_EXAMPLES) if _EXAMPLES else 20

fuzz_settings = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=_EXAMPLES is None, database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])

DTYPES = st.sampled_from([np.float32, np.float64])


def backends_under_test(family):
    """Every backend but the oracle, skipped with the reason where it cannot run."""
    return [p for p in backend_params(family, "cpu") if p.values[0] != "reference"]


def _native_isas():
    ns = pf.backends._load("native", "cpu")
    if isinstance(ns, pf.backends.Unavailable):
        return ["generic"]
    from pyfast import _C
    return list(_C.supported_isas())


@st.composite
def machine(draw, backend):
    """The process-wide settings a kernel call runs under: the SIMD path (native only, every
    path this CPU has) and the thread count."""
    isa = draw(st.sampled_from(_native_isas())) if backend == "native" else None
    return isa, draw(st.sampled_from([1, 2, 3]))


@contextlib.contextmanager
def running_on(settings_):
    """Run the block with the drawn ISA and threads, restoring both afterwards."""
    isa, threads = settings_
    threads_before = pf.get_num_threads()
    isa_before = None
    if isa is not None:
        from pyfast import _C
        isa_before = _C.isa()
        _C.set_isa(isa)
    pf.set_num_threads(threads)
    try:
        yield
    finally:
        pf.set_num_threads(threads_before)
        if isa_before is not None:
            _C.set_isa(isa_before)


def rng_for(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def randn(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def f64(*arrays):
    out = [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]
    return out[0] if len(out) == 1 else out


def reference(fn, *args, **kw):
    """``fn`` on the reference backend with every float array argument as float64."""
    args = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
            for a in args]
    kw = {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
          for k, v in kw.items()}
    return fn(*args, backend="reference", **kw)


def assert_close(got, want, dtype, *, terms=1, magnitude=None, what=""):
    """|got - want| <= c * (terms + 2) * eps(dtype) * (|want| or the given magnitude) + tiny,
    with a small constant c for the few roundings outside the sum."""
    assert got is not None and want is not None, what
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == dtype, (what, got.dtype, dtype)
    mag = np.abs(want) if magnitude is None else np.asarray(magnitude)
    bound = 8 * (terms + 2) * np.finfo(dtype).eps * (mag + 1e-30) + 8 * np.finfo(dtype).tiny
    err = np.abs(got.astype(np.float64) - want)
    finite = np.isfinite(want)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN where the reference has none"
    bad = finite & ~(err <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0)),
                             err.shape)
        pytest.fail(f"{what}: {bad.sum()} of {bad.size} elements off; worst at {i}: got "
                    f"{got[i]!r}, want {want[i]!r} (bound {bound[i]:.3g})")
