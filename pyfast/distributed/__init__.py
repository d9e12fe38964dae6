"""pf.distributed: data-parallel training on MPI (CPU) and NCCL (GPU), docs/api.md section 12.

    pf.distributed.init()                       # under mpiexec -n N (or pyfast train --nproc N)
    model = pf.distributed.DataParallel(model)  # same weights everywhere, averaged gradients
    loader = pf.data.DataLoader(ds, 32, sampler=pf.data.DistributedSampler(ds))
    pf.train.fit(model, loader, ...)            # metrics reduced over ranks, rank 0 writes

Importing this package is cheap: mpi4py (and CuPy for NCCL) load in ``init``.
"""

from .comm import (abort, all_gather_object, all_reduce, backend, barrier, broadcast, init,
                   is_initialized, local_rank, rank, world_size)
from .data_parallel import DataParallel

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "backend",
           "all_reduce", "broadcast", "barrier", "all_gather_object", "abort", "DataParallel"]
