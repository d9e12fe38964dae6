"""The "nccl" backend: CuPy arrays through NCCL (``cupy.cuda.nccl``), host arrays through MPI.

MPI bootstraps it: rank 0 makes the NCCL unique id and broadcasts it. Each rank takes GPU
``local_rank % device count``. Collectives are enqueued on CuPy's current stream, so they are
ordered after the kernels that produced their input and before those that read the result,
without a host synchronisation (as torch's NCCL process group). DataParallel's bucket
all-reduces run on a stream of their own, each after an event recorded on the compute stream
when the bucket's gradients were complete, so they overlap the rest of backward; the compute
stream waits for them at the end of backward.

This file has not run on a GPU yet (no GPU was available where it was written): treat it as
unproven until the 1-rank NCCL test (tests/distributed/test_nccl.py) has passed on one.
"""

from __future__ import annotations

import numpy as np

from pyfast._arrays import describe, is_cupy

from .mpi_group import MPIGroup, MPIReducer

__all__ = ["NCCLGroup"]


def _dtypes(nccl):
    table = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
             np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int32): nccl.NCCL_INT32,
             np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.int8): nccl.NCCL_INT8,
             np.dtype(np.uint8): nccl.NCCL_UINT8}
    for name, np_name in (("NCCL_UINT32", np.uint32), ("NCCL_UINT64", np.uint64)):
        if hasattr(nccl, name):
            table[np.dtype(np_name)] = getattr(nccl, name)
    return table


class NCCLGroup(MPIGroup):
    name = "nccl"

    def __init__(self, MPI, timeout):
        super().__init__(MPI, timeout)
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as exc:
            raise ImportError(f"backend 'nccl' needs CuPy with NCCL (pip install "
                              f"\"pyfast[cuda13]\"; NCCL comes with CuPy's wheels): {exc}") \
                from None
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            raise RuntimeError("backend 'nccl' needs a CUDA GPU; none is visible")
        self.cupy, self.nccl = cupy, nccl
        self.device = cupy.cuda.Device(self.local_rank % count)
        self.device.use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = _dtypes(nccl)
        self._nccl_ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX}
        # NCCL_AVG (NCCL >= 2.10) gives the mean in the collective itself
        self.has_avg = hasattr(nccl, "NCCL_AVG") and nccl.get_version() >= 21000
        if self.has_avg:
            self._nccl_ops["mean"] = nccl.NCCL_AVG

    def _device_args(self, array, what):
        if not array.flags.c_contiguous:
            raise ValueError(f"{what}: array must be C-contiguous (it is reduced in place), "
                             f"got {describe(array)}")
        kind = self._types.get(array.dtype)
        if kind is None:
            raise TypeError(f"{what}: NCCL cannot carry {describe(array)}")
        return array.data.ptr, array.size, kind

    def _all_reduce_other(self, array, op):
        if not is_cupy(array):
            return super()._all_reduce_other(array, op)
        if op == "mean" and array.dtype.kind != "f":
            raise TypeError(f"all_reduce: op='mean' needs a floating array, got {array.dtype}")
        ptr, count, kind = self._device_args(array, "all_reduce")
        stream = self.cupy.cuda.get_current_stream().ptr
        nccl_op = self._nccl_ops.get(op, self.nccl.NCCL_SUM)
        self.nccl_comm.allReduce(ptr, ptr, count, kind, nccl_op, stream)
        if op == "mean" and not self.has_avg:
            array /= self.size
        return array

    def broadcast(self, array, root):
        if not is_cupy(array):
            return super().broadcast(array, root)
        root = self._check_root(root)
        ptr, count, kind = self._device_args(array, "broadcast")
        self.nccl_comm.bcast(ptr, count, kind, root, self.cupy.cuda.get_current_stream().ptr)
        return array

    def barrier(self):
        self.cupy.cuda.get_current_stream().synchronize()
        super().barrier()

    def bucket_reducer(self):
        return _NCCLReducer(self)


class _NCCLReducer:
    """Bucket all-reduces on a side stream (see the module doc); host buffers go to MPI."""

    def __init__(self, group):
        self.group = group
        self.host = MPIReducer(group)
        cupy = group.cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pending_device = False

    def start(self, buf):
        """Start summing ``buf`` over the ranks; True when the collective averages instead
        (NCCL_AVG), so the caller must not scale it."""
        if not is_cupy(buf):
            return self.host.start(buf)
        cupy, nccl = self.group.cupy, self.group.nccl
        ready = cupy.cuda.get_current_stream().record()
        self.stream.wait_event(ready)
        ptr, count, kind = self.group._device_args(buf, "DataParallel")
        op = nccl.NCCL_AVG if self.group.has_avg else nccl.NCCL_SUM
        self.group.nccl_comm.allReduce(ptr, ptr, count, kind, op, self.stream.ptr)
        self.pending_device = True
        return self.group.has_avg

    def progress(self):
        self.host.progress()

    def wait_all(self):
        self.host.wait_all()
        if self.pending_device:
            done = self.stream.record()
            self.group.cupy.cuda.get_current_stream().wait_event(done)
            self.pending_device = False
