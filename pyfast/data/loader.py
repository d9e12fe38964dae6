"""DataLoader: batches ``(x, y)`` from any dataset with ``len`` and ``[i] -> (x, y)``.

For an ArrayDataset a batch is one slice (in order) or one fancy index (shuffled) per
array; other datasets are read sample by sample and collated with ``np.stack``.

Randomness is per pass: every pass (epoch) takes its own entropy, ``(seed, epoch)`` when
the loader has a ``seed`` and otherwise a number drawn from ``pf.manual_seed``'s generator
when the pass starts. The pass's order and each batch's augmentation generator derive from
that entropy and the batch index, so a run restored from ``state_dict()`` (even in the
middle of an epoch) yields the batches the uninterrupted run would have.
"""

from __future__ import annotations

import numbers

import numpy as np

from pyfast._arrays import is_cupy, normalise_device, to_device
from pyfast._memory import scope_enter, scope_exit
from pyfast.data.dataset import ArrayDataset

def _check_count(v, name, minimum):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return int(v)


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size``.

    shuffle: a new order every pass; with ``seed`` the order of pass ``e`` is a function of
      ``(seed, e)`` only, otherwise it is drawn from the generator ``pf.manual_seed`` seeds.
    drop_last: leave out a final batch smaller than ``batch_size``.
    transform: ``transform(x, y, rng) -> (x, y)`` applied to every batch (see
      ``pf.data.transforms``); ``rng`` is a numpy Generator private to that batch.
    device: None (batches live where the dataset's arrays do), ``"cpu"`` (numpy) or
      ``"cuda"`` / ``"cuda:N"`` (cupy; the batch is copied to the current GPU, or GPU N,
      after the transform).
    sampler: the dataset indices of a pass, in order (a DistributedSampler, or any object
      with ``__iter__`` and ``__len__``); excludes ``shuffle``. A sampler with ``set_epoch``
      has the pass number as its epoch: the loader reads it when a pass starts and moves it
      to the next epoch, so ``sampler.set_epoch(e)`` before a pass picks that pass's order.

    ``len(loader)`` is the number of batches in a pass. ``epoch`` is the pass the next
    ``iter()`` starts; ``set_epoch(e)`` chooses it. ``state_dict()``/``load_state_dict()``
    save and restore the position, including part way through a pass.
    """

    def __init__(self, dataset, batch_size, shuffle=False, drop_last=False, seed=None, *,
                 transform=None, device=None, sampler=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"dataset must support len() and [i] -> (x, y), got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        if sampler is not None:
            if not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
                raise TypeError(f"sampler must be iterable and have len(), got "
                                f"{type(sampler).__name__}")
            if shuffle:
                raise ValueError("sampler and shuffle=True exclude each other (the sampler "
                                 "decides the order)")
        self.sampler = sampler
        self.batch_size = _check_count(batch_size, "batch_size", 1)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = None if seed is None else _check_count(seed, "seed", 0)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        device = normalise_device(device)
        if device is not None and device != "cpu":
            _cupy()  # fail here, not at the first batch
        self.device = device
        self._epoch = 0
        # The pass in progress, for state_dict: [epoch, batches yielded, entropy draw].
        self._pass = None
        self._resume = None

    def __len__(self):
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def epoch(self):
        """The pass the next ``iter()`` starts."""
        return self._next_epoch() if self._resume is None else self._resume[0]

    def _next_epoch(self):
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            return int(getattr(self.sampler, "epoch", self._epoch))
        return self._epoch

    def set_epoch(self, epoch):
        """Make the next pass number ``epoch`` (its order, with a seed, is fixed by it)."""
        self._epoch = _check_count(epoch, "epoch", 0)
        self._resume = None
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self._epoch)

    def state_dict(self):
        """Where the loader is: ``{"epoch", "batch", "draw"}`` (ints). ``batch`` counts the
        batches the pass in progress has yielded (0 between passes); ``draw`` is the entropy
        that pass took from the global generator (-1 when it took none)."""
        if self._resume is not None:
            epoch, batch, draw = self._resume
        elif self._pass is not None:
            epoch, batch, draw = self._pass
        else:
            epoch, batch, draw = self._next_epoch(), 0, None
        if batch >= len(self) > 0:  # every batch handed out: the pass is over
            epoch, batch, draw = epoch + 1, 0, None
        return {"epoch": int(epoch), "batch": int(batch), "draw": -1 if draw is None else int(draw)}

    def load_state_dict(self, state):
        """Resume from ``state_dict()``: the next ``iter()`` continues that pass."""
        try:
            epoch = _check_count(int(state["epoch"]), "state['epoch']", 0)
            batch = _check_count(int(state["batch"]), "state['batch']", 0)
            draw = int(state.get("draw", -1))
        except (KeyError, TypeError) as e:
            raise ValueError(f"DataLoader state must hold ints 'epoch' and 'batch', got "
                             f"{state!r}") from e
        self._pass = None
        if batch == 0 and draw < 0:
            self.set_epoch(epoch)
        else:
            self._resume = (epoch, batch, None if draw < 0 else draw)

    def __iter__(self):
        if self._resume is not None:
            epoch, start, draw = self._resume
            self._resume = None
        else:
            epoch, start, draw = self._next_epoch(), 0, None
            if self.seed is None and (self.shuffle or self.transform is not None):
                from pyfast import _random
                draw = int(_random.generator().integers(2 ** 63))
        self._epoch = epoch + 1
        entropy = [self.seed, epoch] if self.seed is not None else ([] if draw is None else [draw])
        order = self._sampler_order(epoch) if self.sampler is not None else None
        state = [epoch, start, draw]
        self._pass = state
        return self._batches(entropy, start, state, order)

    def _sampler_order(self, epoch):
        """The sampler's indices for pass ``epoch``, taken now; the sampler then moves on."""
        sampler = self.sampler
        epochs = hasattr(sampler, "set_epoch")
        if epochs:
            sampler.set_epoch(epoch)
        if hasattr(sampler, "indices"):
            order = np.asarray(sampler.indices(), dtype=np.int64)
        else:
            order = np.fromiter((int(i) for i in sampler), dtype=np.int64)
        if epochs:
            sampler.set_epoch(epoch + 1)
        n = len(self.dataset)
        if order.size and (order.min() < 0 or order.max() >= n):
            raise ValueError(f"sampler yielded an index outside [0, {n}) for a dataset of "
                             f"{n} samples")
        return order

    def _batches(self, entropy, start, state, order=None):
        bs = self.batch_size
        if order is None and self.shuffle:
            order = np.random.default_rng(entropy + [0]).permutation(len(self.dataset))
        n = len(self.dataset) if order is None else len(order)
        for b in range(start, len(self)):
            lo, hi = b * bs, min(n, (b + 1) * bs)
            token = scope_enter()   # batches come from pyfast's allocator (not across the yield)
            try:
                x, y = self._fetch(order[lo:hi] if order is not None else slice(lo, hi))
                if self.transform is not None:
                    x, y = self.transform(x, y, np.random.default_rng(entropy + [1, b]))
                if self.device is not None:
                    same = y is x
                    x = to_device(x, self.device)
                    y = x if same else to_device(y, self.device)
            finally:
                scope_exit(token)
            state[1] = b + 1
            yield x, y
        if self._pass is state:
            self._pass = None

    def _fetch(self, index):
        ds = self.dataset
        if isinstance(ds, ArrayDataset):
            x, y = ds.x, ds.targets
            if isinstance(index, slice):
                bx = x[index].copy()
                return bx, (bx if y is x else y[index].copy())
            if not isinstance(x, np.ndarray):
                index = _cupy().asarray(index)
            bx = x[index]
            return bx, (bx if y is x else y[index])
        rows = range(index.start, index.stop) if isinstance(index, slice) else index
        samples = []
        for i in rows:
            item = ds[int(i)]
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise TypeError(f"{type(ds).__name__}[{int(i)}] must be a pair (x, y), got "
                                f"{type(item).__name__}")
            samples.append(item)
        return _collate([s[0] for s in samples], "x"), _collate([s[1] for s in samples], "y")

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}"
                + (f", sampler={self.sampler!r})" if self.sampler is not None else ")"))


def _collate(items, name):
    if any(is_cupy(a) for a in items):
        return _cupy().stack(items)
    try:
        return np.stack([np.asarray(a) for a in items])
    except ValueError as e:
        shapes = sorted({np.shape(a) for a in items})
        raise ValueError(f"cannot batch the samples' {name}: their shapes differ "
                         f"({', '.join(map(str, shapes[:4]))})") from e


def _cupy():
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("DataLoader(device='cuda') needs CuPy, which is not installed; "
                           "install pyfast[cuda12] or pyfast[cuda13]") from e
    return cupy

