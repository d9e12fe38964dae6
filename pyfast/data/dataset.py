"""ArrayDataset: samples stored as two arrays whose first axis is the sample index.

Keeping a whole data set in two arrays (rather than a list of samples) is what lets the
DataLoader build a batch with one slice or one fancy-index per array. ``y=None`` marks an
unsupervised set: every sample's target is its input (what an autoencoder trains against).
"""

from __future__ import annotations

import numbers

import numpy as np

from pyfast._arrays import array_module, describe, is_cupy, to_host


def _as_samples(a, name):
    if not (isinstance(a, np.ndarray) or is_cupy(a)):
        if hasattr(a, "__dlpack__"):
            from pyfast._arrays import as_array
            a = as_array(a, name)
        else:
            a = np.asarray(a)
    if a.ndim == 0:
        raise ValueError(f"{name} must have a sample axis first, got a 0-d array")
    return a


class ArrayDataset:
    """Samples ``(x[i], y[i])``; with ``y=None``, ``(x[i], x[i])``.

    ``x`` and ``y`` are numpy (or cupy) arrays, or anything ``np.asarray`` takes, with the
    sample index on the first axis. ``ds[i]`` gives one sample; a slice or an integer array
    gives a batch ``(x[idx], y[idx])``.
    """

    def __init__(self, x, y=None):
        x = _as_samples(x, "x")
        if y is not None:
            y = _as_samples(y, "y")
            if len(y) != len(x):
                raise ValueError(f"x and y must hold the same number of samples: x has shape "
                                 f"{tuple(x.shape)}, y has shape {tuple(y.shape)}")
            if array_module(x) is not array_module(y):
                raise ValueError(f"x and y must live on one device: x is {describe(x)} "
                                 f"({type(x).__module__}), y is {describe(y)} "
                                 f"({type(y).__module__})")
        self._x, self._y = x, y

    @property
    def x(self):
        return self._x

    @property
    def y(self):
        """The targets, or None for an unsupervised set (whose targets are ``x``)."""
        return self._y

    @property
    def targets(self):
        """What a batch's second element is drawn from: ``y``, or ``x`` when ``y`` is None."""
        return self._x if self._y is None else self._y

    def __len__(self):
        return len(self._x)

    def __getitem__(self, index):
        if isinstance(index, numbers.Integral) and not isinstance(index, bool):
            n = len(self._x)
            if not -n <= index < n:
                raise IndexError(f"index {index} is out of range for a dataset of {n} samples")
        elif not isinstance(index, (slice, np.ndarray, list)) and not is_cupy(index):
            raise TypeError(f"ArrayDataset indices are ints, slices or integer arrays, "
                            f"got {type(index).__name__}")
        return self._x[index], self.targets[index]

    def __repr__(self):
        y = "None" if self._y is None else f"{tuple(self._y.shape)} {self._y.dtype}"
        return f"ArrayDataset(x={tuple(self._x.shape)} {self._x.dtype}, y={y})"

    def subset(self, indices):
        """A new ArrayDataset of the samples at ``indices`` (copied)."""
        idx = np.asarray(indices)
        if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer) and idx.size:
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.intp, copy=False)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"indices must lie in [-{len(self)}, {len(self)}), got values "
                             f"from {idx.min()} to {idx.max()}")
        xp = array_module(self._x)
        take = idx if xp is np else xp.asarray(idx)
        return ArrayDataset(self._x[take], None if self._y is None else self._y[take])

    def split(self, fractions, seed=0, *, shuffle=True, stratify=False):
        """Split into disjoint ArrayDatasets, one per entry of ``fractions``.

        ``fractions``: floats summing to 1 (``(0.8, 0.1, 0.1)``), or ints summing to
        ``len(self)`` (sample counts). The samples are permuted with ``seed`` first (the
        same seed gives the same split on every run, whatever ``pf.manual_seed`` says);
        ``shuffle=False`` keeps the original order. ``stratify=True`` splits every class of
        the integer labels ``y`` separately, so each part keeps the class proportions.
        Returns a tuple; the samples are copied.
        """
        n = len(self)
        fractions = _check_fractions(fractions, n)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        rng = np.random.default_rng(seed)
        if stratify:
            groups = _class_groups(self._y)
        else:
            groups = [np.arange(n)]
        parts = [[] for _ in fractions]
        for members in groups:
            if shuffle:
                members = rng.permutation(members)
            for part, chunk in zip(parts, _cut(members, fractions)):
                part.append(chunk)
        out = []
        for chunks in parts:
            idx = np.concatenate(chunks) if chunks else np.empty(0, np.intp)
            if stratify:
                # Classes were laid one after another; interleave them again.
                idx = rng.permutation(idx) if shuffle else np.sort(idx)
            out.append(self.subset(idx))
        return tuple(out)


def _check_fractions(fractions, n):
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise TypeError(f"fractions must be a sequence of numbers, got {fractions!r}") from None
    if not values:
        raise ValueError("fractions must name at least one part")
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"fractions must be finite and non-negative, got {tuple(fractions)}")
    if all(isinstance(f, numbers.Integral) and not isinstance(f, bool) for f in fractions):
        if sum(values) != n:
            raise ValueError(f"sample counts {tuple(fractions)} add up to {int(sum(values))}, "
                             f"but the dataset has {n} samples")
        return [v / n if n else 0.0 for v in values]
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must add up to 1, got {tuple(fractions)} "
                         f"(sum {sum(values):.6g}); pass ints for sample counts")
    return values


def _cut(members, fractions):
    """Consecutive chunks of ``members`` with sizes proportional to ``fractions``; rounding
    the cumulative boundaries keeps the sizes summing to len(members) and within one of
    the exact share."""
    bounds = np.rint(np.cumsum([0.0] + list(fractions)) * len(members)).astype(np.intp)
    bounds[-1] = len(members)
    return [members[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _class_groups(y):
    if y is None:
        raise ValueError("stratify=True needs labels, but this dataset has y=None")
    labels = to_host(y)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"stratify=True needs one integer class label per sample, got y of "
                         f"shape {tuple(labels.shape)} and dtype {labels.dtype}")
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])
