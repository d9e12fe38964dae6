"""Backend choice, fall-through and errors (docs/api.md section 1)."""

import types

import numpy as np
import pytest

import pyfast as pf
from pyfast import backends


def test_available_reports_every_backend():
    report = pf.backends.available()
    assert set(report) == set(backends.NAMES)
    for name, entry in report.items():
        assert set(entry) == {"loaded", "reason", "families", "reasons"}
        assert set(entry["reasons"]) <= {"cpu", "cuda"}
        assert set(entry["families"]) == {"cpu", "cuda"}
        for fams in entry["families"].values():
            assert set(fams) <= set(backends.FAMILIES)
        if not entry["loaded"]:
            assert entry["reason"]
    assert report["reference"]["loaded"] and "gemm" in report["reference"]["families"]["cpu"]


def test_choice_precedence(monkeypatch):
    monkeypatch.delenv("PYFAST_BACKEND", raising=False)
    assert backends.select("gemm", "cpu", "reference")[0] == "reference"
    monkeypatch.setenv("PYFAST_BACKEND", "reference")
    assert backends.select("gemm", "cpu")[0] == "reference"
    with pf.use_backend("reference"):
        assert backends.current() == "reference"
    monkeypatch.delenv("PYFAST_BACKEND")
    with pf.use_backend("reference"):
        assert backends.select("gemm", "cpu")[0] == "reference"
        # the call argument beats the context
        native = backends._load("native", "cpu")
        if not isinstance(native, backends.Unavailable):
            assert backends.select("gemm", "cpu", "native")[0] == "native"
    assert backends.current() is None


def test_unknown_names_raise_value_error(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'gpu'; valid names are native, numba, reference"):
        with pf.use_backend("gpu"):
            pass
    monkeypatch.setenv("PYFAST_BACKEND", "turbo")
    with pytest.raises(ValueError, match="unknown backend 'turbo'"):
        pf.ops.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))


def test_explicit_backend_that_cannot_run_raises(monkeypatch):
    monkeypatch.setitem(backends._loaded, ("numba", "cpu"), backends.Unavailable("numba is not installed"))
    monkeypatch.setattr(backends, "_chosen", {})
    with pytest.raises(RuntimeError, match="backend 'numba' cannot run on cpu: numba is not installed"):
        pf.ops.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), backend="numba")
    # the default order skips it silently
    assert backends.select("gemm", "cpu")[0] in ("native", "reference")


def test_backend_without_the_family_falls_through(monkeypatch):
    monkeypatch.setitem(backends._loaded, ("numba", "cpu"), types.SimpleNamespace(FAMILIES=()))
    monkeypatch.setattr(backends, "_chosen", {})
    assert backends.select("gemm", "cpu", "numba")[0] == "reference"


def test_num_threads():
    before = pf.get_num_threads()
    try:
        pf.set_num_threads(1)
        assert pf.get_num_threads() == 1
        native = backends._load("native", "cpu")
        if not isinstance(native, backends.Unavailable):
            assert native.get_num_threads() == 1
    finally:
        pf.set_num_threads(before)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive int"):
            pf.set_num_threads(bad)
