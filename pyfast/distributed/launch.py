"""Starting N ranks through the installed ``mpiexec`` (``pyfast train --nproc N``, the tests).

The MPI of ``pip install "pyfast[distributed]"`` is Open MPI, whose ``mpiexec`` sits beside
the Python executable; another ``mpiexec`` on PATH (MPICH, Intel MPI) works too. Open MPI
refuses to start more ranks than cores and to run as root unless told, so both are allowed
when they apply; ``--oversubscribe`` only when there are more ranks than usable cores,
because it also stops Open MPI binding each rank to a core of its own, and unbound ranks
that busy-poll for messages can share a core and slow each other down many times over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

__all__ = ["launched_by_mpi", "find_mpiexec", "mpiexec_command"]

# What mpiexec puts in each rank's environment (Open MPI, PMIx, MPICH/Hydra, Intel MPI).
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK",
                  "MPI_LOCALNRANKS")


def launched_by_mpi():
    """Whether this process was started by mpiexec (so it is one rank of a job)."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def find_mpiexec():
    """The path of mpiexec (beside this Python first, then on PATH), or None."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _is_open_mpi(mpiexec):
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = (out.stdout + out.stderr).lower()
    return "open mpi" in text or "open-mpi" in text or "openrte" in text or "prte" in text


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def mpiexec_command(nproc, argv, *, mpiexec=None, env=None):
    """(command, environment) that run ``argv`` (a list, starting with the program) as
    ``nproc`` ranks. Raises RuntimeError when no mpiexec is installed."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive int, got {nproc!r}")
    mpiexec = mpiexec or find_mpiexec()
    if mpiexec is None:
        from .comm import INSTALL_HINT
        raise RuntimeError(f"no mpiexec found beside {sys.executable} or on PATH; "
                           f"{INSTALL_HINT}")
    env = dict(os.environ if env is None else env)
    cmd = [mpiexec]
    if _is_open_mpi(mpiexec):
        if nproc > _usable_cores():
            cmd.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    cmd += ["-n", str(nproc), *argv]
    return cmd, env
