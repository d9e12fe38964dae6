"""Shared test machinery: the backend matrix, GPU detection, the float64 oracle's tolerance.

Every kernel test is parametrised over the backends that load on this machine (others are
reported as skipped with the reason they did not load). Tests marked ``cuda`` need a real
GPU with CuPy; tests marked ``cudasim`` run only in a process started with
NUMBA_ENABLE_CUDASIM=1 (tests/test_cudasim.py starts one).
"""

import os

import numpy as np
import pytest

import pyfast as pf

CUDASIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def gpu_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    no_gpu = None if gpu_available() else pytest.mark.skip(reason="needs a CUDA GPU and CuPy")
    no_sim = None if CUDASIM else pytest.mark.skip(
        reason="runs in its own process with NUMBA_ENABLE_CUDASIM=1 (tests/test_cudasim.py)")
    for item in items:
        if no_gpu and "cuda" in item.keywords:
            item.add_marker(no_gpu)
        if no_sim and "cudasim" in item.keywords:
            item.add_marker(no_sim)
        if CUDASIM and "cudasim" not in item.keywords:
            item.add_marker(pytest.mark.skip(reason="simulator process runs cudasim tests only"))


def backend_params(family, device):
    """pytest params, one per backend name, skipped (with the reason) where it cannot run."""
    params = []
    for name in pf.backends.NAMES:
        ns = pf.backends._load(name, device)
        if isinstance(ns, pf.backends.Unavailable):
            mark = pytest.mark.skip(reason=f"{name} on {device}: {ns}")
        elif family not in ns.FAMILIES:
            mark = pytest.mark.skip(reason=f"{name} on {device} has no {family} kernels")
        else:
            mark = ()
        params.append(pytest.param(name, marks=mark, id=name))
    return params


def dot_tolerance(a, b, k, extra=0.0):
    """Elementwise bound on the rounding error of a float32/float64 product a @ b summed
    over k terms in any order: (k + 2) * eps * (|a| @ |b| + |extra|)."""
    eps = np.finfo(a.dtype).eps
    mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    return (k + 2) * eps * (mag + np.abs(extra)) + np.finfo(a.dtype).tiny
