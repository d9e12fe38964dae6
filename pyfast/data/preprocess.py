"""Feature scaling fitted on a training split and applied unchanged to the others.

Statistics computed over a whole data set leak the validation and test samples into
training; fit them on the training part only: ``train, val = pf.data.standardise(train,
val)``. Scalers are per feature for tabular data (N, F) and per channel for images
(N, C, H, W), and also work as DataLoader transforms (they touch ``x`` only).
"""

from __future__ import annotations

import numpy as np

from pyfast._arrays import array_module, to_host


def _reduce_axes(x):
    if x.ndim < 2:
        raise ValueError(f"scaling needs samples with features, got x of shape {tuple(x.shape)}")
    # (N, F): per feature; (N, C, ...): per channel.
    return (0,) + tuple(range(2, x.ndim))


def _keepdims_shape(stat, x):
    return (1, stat.shape[0]) + (1,) * (x.ndim - 2)


class _Scaler:
    def __init__(self, shift, scale):
        self.shift = np.asarray(shift, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if self.shift.shape != self.scale.shape:
            raise ValueError(f"statistics disagree in length: {self.shift.shape} and "
                             f"{self.scale.shape}")
        if not (np.isfinite(self.shift).all() and np.isfinite(self.scale).all()):
            raise ValueError("statistics must be finite")
        if (self.scale <= 0).any():
            raise ValueError("scales must be positive")

    def apply(self, x):
        """``(x - shift) / scale`` per feature/channel, as a new float array."""
        xp = array_module(x)
        if x.ndim < 2 or x.shape[1] != self.shift.shape[0]:
            raise ValueError(f"{type(self).__name__} was fitted on {self.shift.shape[0]} "
                             f"features/channels, got x of shape {tuple(x.shape)}")
        dtype = x.dtype if xp.issubdtype(x.dtype, xp.floating) else np.float32
        shape = _keepdims_shape(self.shift, x)
        shift = xp.asarray(self.shift.astype(dtype).reshape(shape))
        scale = xp.asarray(self.scale.astype(dtype).reshape(shape))
        return ((x.astype(dtype, copy=False) - shift) / scale).astype(dtype, copy=False)

    def __call__(self, x, y=None, rng=None):
        out = self.apply(x)
        return out, (out if y is x else y)

    def apply_to(self, *datasets):
        """New ArrayDatasets with ``x`` scaled (targets kept; an unsupervised set's
        target follows its scaled input)."""
        from pyfast.data.dataset import ArrayDataset
        return tuple(ArrayDataset(self.apply(d.x), d.y) for d in datasets)

    def state_dict(self):
        return {"shift": self.shift.copy(), "scale": self.scale.copy()}


class Standardise(_Scaler):
    """Zero mean, unit variance per feature (or channel): ``(x - mean) / std``.

    Features with zero variance are left centred, not divided by zero."""

    def __init__(self, mean, std):
        super().__init__(mean, std)

    @property
    def mean(self):
        return self.shift

    @property
    def std(self):
        return self.scale

    @classmethod
    def fit(cls, x):
        x = to_host(x)
        axes = _reduce_axes(x)
        mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        return cls(mean, np.where(std > 0, std, 1.0))

    def __repr__(self):
        return f"Standardise({self.mean.shape[0]} features/channels)"


class MinMaxScale(_Scaler):
    """Map each feature's (channel's) training range onto [0, 1]: ``(x - min) / (max -
    min)``. Other splits may land slightly outside [0, 1]; nothing is clipped."""

    @classmethod
    def fit(cls, x):
        x = to_host(x)
        axes = _reduce_axes(x)
        lo = x.min(axis=axes).astype(np.float64)
        span = x.max(axis=axes).astype(np.float64) - lo
        return cls(lo, np.where(span > 0, span, 1.0))

    def __repr__(self):
        return f"MinMaxScale({self.shift.shape[0]} features/channels)"


def standardise(train, *others):
    """Standardise ``train`` and ``others`` (ArrayDatasets) with ``train``'s per-feature
    mean and standard deviation. Returns the scaled datasets in the order given."""
    return Standardise.fit(train.x).apply_to(train, *others)


def normalise(train, *others):
    """Min-max scale ``train`` and ``others`` (ArrayDatasets) to ``train``'s per-feature
    range, which becomes [0, 1]. Returns the scaled datasets in the order given."""
    return MinMaxScale.fit(train.x).apply_to(train, *others)
