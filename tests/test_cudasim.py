"""Runs the numba-cuda kernel tests (marker ``cudasim``) in the CUDA simulator.

The simulator must be switched on before numba is first imported, so it gets a process of
its own; it proves indexing and logic on tiny shapes, not speed."""

import os
import subprocess
import sys

import pytest

from tests.conftest import CUDASIM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(CUDASIM, reason="already inside the simulator process")
def test_numba_cuda_kernels_in_simulator():
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cudasim", "-p", "no:cacheprovider",
                          os.path.join(ROOT, "tests", "kernels")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-3000:]
