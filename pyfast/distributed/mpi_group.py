"""The MPI process group behind pf.distributed: COMM_WORLD's collectives (host arrays, CuPy
arrays staged through the host), DataParallel's non-blocking bucket reducer, and the two
guards that keep one rank's failure from leaving the others waiting (the excepthook that
aborts the job, the watchdog that times blocking collectives; see comm.py's module doc).

comm.py builds the group in ``init`` and nccl.py's group extends it, so both import this
module and neither imports the other's internals.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

import numpy as np

from pyfast._arrays import describe, is_cupy

OPS = ("sum", "mean", "max")

WATCHED = {}      # code object of a blocking collective -> its name, for the watchdog


def watched(name):
    """Register a function as a blocking wait the watchdog times (returns it unchanged)."""
    def register(fn):
        WATCHED[fn.__code__] = name
        return fn
    return register




class MPIGroup:
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
    @watched("all_reduce")
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
            raise buffer_error("all_reduce", array, exc) from None
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

    @watched("broadcast")
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
            raise buffer_error("broadcast", array, exc) from None
        return array

    @watched("barrier")
    def barrier(self):
        self.comm.Barrier()

    @watched("all_gather_object")
    def all_gather_object(self, obj):
        return self.comm.allgather(obj)

    def _check_root(self, root):
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or \
                not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in [0, {self.size}), got {root!r}")
        return int(root)

    # -- non-blocking all-reduce of gradient buckets (DataParallel) --------------------
    def bucket_reducer(self):
        return MPIReducer(self)


class MPIReducer:
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

    @watched("a gradient all-reduce")
    def wait_all(self):
        if not self.requests:
            return
        self.group.MPI.Request.Waitall(self.requests)
        self.requests, self.buffers = [], []


def buffer_error(what, array, exc):
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
    ``WATCHED``, on any thread's stack) lasts longer than ``group.timeout``."""
    tick = min(1.0, group.timeout / 4)
    me = threading.get_ident()
    seen = {}                          # thread -> (the watched frame, first seen at)
    while True:
        time.sleep(tick)
        now = time.monotonic()
        for thread, frame in sys._current_frames().items():
            while frame is not None and frame.f_code not in WATCHED:
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
            what = WATCHED[frame.f_code]
            sys.stderr.write(f"pyfast.distributed: rank {group.rank} of {group.size}: {what} "
                             f"did not complete within {group.timeout:g} s; another rank has "
                             f"stopped taking part (a hang, an exit, or a collective it "
                             f"skipped). Aborting every rank.\n")
            sys.stderr.flush()
            try:
                group.MPI.COMM_WORLD.Abort(2)
            finally:
                os._exit(2)
