"""DistributedSampler: each rank's share of a data set, the shares covering it once per epoch.

As torch.utils.data.DistributedSampler: the epoch's order (a permutation drawn from
``(seed, epoch)`` when shuffling, else 0..n-1) is padded by repeating its start until its
length divides by the number of ranks (or cut down to a multiple with ``drop_last``), and
rank r takes every ``num_replicas``-th index from position r. Every rank therefore draws the
same number of batches, which data-parallel training needs (each step is a collective).
The order depends on ``(seed, epoch)`` only, so all ranks agree without communicating.
The padding repeats up to ``num_replicas - 1`` samples, which a validation metric over the
shards then counts twice; a data set whose size divides by the number of ranks has none.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["DistributedSampler"]


def _int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class DistributedSampler:
    """Indices of ``dataset`` for one rank (``num_replicas``/``rank`` default to
    pf.distributed's world size and rank). ``set_epoch(e)`` picks the epoch's order; a
    DataLoader given this sampler moves it to the next epoch at each pass."""

    def __init__(self, dataset, shuffle=True, seed=0, drop_last=False, *, num_replicas=None,
                 rank=None):
        if not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must support len(), got {type(dataset).__name__}")
        if num_replicas is None or rank is None:
            from pyfast import distributed
            num_replicas = distributed.world_size() if num_replicas is None else num_replicas
            rank = distributed.rank() if rank is None else rank
        self.num_replicas = _int(num_replicas, "num_replicas", 1)
        self.rank = _int(rank, "rank", 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must lie in [0, num_replicas={self.num_replicas}), got "
                             f"{self.rank}")
        self.dataset = dataset
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = _int(seed, "seed", 0)
        self.epoch = 0

    @property
    def num_samples(self):
        n, w = len(self.dataset), self.num_replicas
        return n // w if self.drop_last else -(-n // w)

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        self.epoch = _int(epoch, "epoch", 0)

    def indices(self):
        """This rank's indices for the current epoch (an int64 array)."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        total = self.num_samples * self.num_replicas
        if total > n:
            order = np.resize(order, total)    # repeats the order's start
        return order[self.rank:total:self.num_replicas].astype(np.int64, copy=False)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __repr__(self):
        return (f"DistributedSampler({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"rank {self.rank} of {self.num_replicas}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last})")
