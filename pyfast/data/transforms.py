"""Batch augmentations: each transform maps a whole batch ``(x, y)`` to a new ``(x, y)``.

A transform is any callable ``t(x, y, rng) -> (x, y)``: ``x`` is an NCHW batch, ``y`` its
targets, ``rng`` the ``numpy.random.Generator`` the DataLoader hands it (derived from the
loader's seed, epoch and batch index, so a resumed run augments exactly as the first one
did). Work is vectorised over the batch: one draw of per-sample parameters, then array
operations on the whole batch, never a Python loop over samples.

Geometric transforms move ``y`` with ``x`` when ``y`` is an image of the same height and
width (a segmentation mask, or the input itself for an autoencoder); class labels pass
through. Intensity transforms touch ``x`` only, so an autoencoder whose target is its input
learns to denoise. Inputs are never modified in place.
"""

from __future__ import annotations

import numbers

import numpy as np

from pyfast._arrays import array_module


def _generator(rng):
    if rng is None:
        from pyfast import _random
        return _random.generator()
    return rng


def _check_batch(x, name):
    if x.ndim < 3:
        raise ValueError(f"{name} expects a batch of images (N, C, H, W) or (N, H, W), got "
                         f"shape {tuple(x.shape)}")


def follows_geometry(x, y):
    """Whether ``y`` is a per-pixel target that must be flipped/cropped with ``x``."""
    return (y is not None and getattr(y, "ndim", 0) >= 3 and y.shape[0] == x.shape[0]
            and y.shape[-2:] == x.shape[-2:])


def _draw(rng, p, n):
    """Per-sample booleans, True with probability p (numpy, also for cupy batches)."""
    return rng.random(n) < p


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose takes callables, got {type(t).__name__}")

    def __call__(self, x, y=None, rng=None):
        rng = _generator(rng)
        for t in self.transforms:
            x, y = t(x, y, rng)
        return x, y

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class _RandomFlip:
    axis = None

    def __init__(self, p=0.5):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, x, y=None, rng=None):
        _check_batch(x, type(self).__name__)
        flip = _draw(_generator(rng), self.p, x.shape[0])
        out = self.apply(x, flip)
        if y is x:
            return out, out
        return out, (self.apply(y, flip) if follows_geometry(x, y) else y)

    def apply(self, a, flip):
        """Flip the samples of ``a`` where ``flip`` (one bool per sample) is True."""
        xp = array_module(a)
        out = a.copy()
        idx = np.flatnonzero(flip)
        if idx.size:
            sel = idx if xp is np else xp.asarray(idx)
            out[sel] = xp.flip(a[sel], axis=self.axis)
        return out

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(_RandomFlip):
    """Mirror left-right (the last axis) each sample with probability ``p``."""
    axis = -1


class RandomVerticalFlip(_RandomFlip):
    """Mirror top-bottom (the second-last axis) each sample with probability ``p``."""
    axis = -2


def _pair(v, name):
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = (int(v), int(v))
    try:
        h, w = (int(u) for u in v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or an (h, w) pair, got {v!r}") from None
    return h, w


class RandomCrop:
    """Pad each image by ``padding`` pixels (zeros, or edge reflection with
    ``padding_mode="reflect"``), then cut a ``size`` window at a random position per sample
    (``torchvision.transforms.RandomCrop``'s meaning). Masks get the same window, padded
    with zeros."""

    def __init__(self, size, padding=0, padding_mode="constant"):
        self.size = _pair(size, "size")
        self.padding = _pair(padding, "padding")
        if min(self.size) < 1 or min(self.padding) < 0:
            raise ValueError(f"size must be positive and padding non-negative, got size "
                             f"{self.size} and padding {self.padding}")
        if padding_mode not in ("constant", "reflect", "edge"):
            raise ValueError(f"padding_mode must be 'constant', 'reflect' or 'edge', got "
                             f"{padding_mode!r}")
        self.padding_mode = padding_mode

    def __call__(self, x, y=None, rng=None):
        _check_batch(x, "RandomCrop")
        ph, pw = self.padding
        h, w = self.size
        H, W = x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw
        if h > H or w > W:
            raise ValueError(f"RandomCrop: crop {self.size} is larger than the padded images "
                             f"({H}, {W}) (batch of shape {tuple(x.shape)}, padding "
                             f"{self.padding})")
        rng = _generator(rng)
        top = rng.integers(0, H - h + 1, x.shape[0])
        left = rng.integers(0, W - w + 1, x.shape[0])
        out = self.apply(x, top, left, self.padding_mode)
        if y is x:  # an autoencoder's target stays identical to its input
            return out, out
        if follows_geometry(x, y):
            y = self.apply(y, top, left, "constant")
        return out, y

    def apply(self, a, top, left, mode):
        """Windows of ``self.size`` at (top, left) of ``a`` padded by ``self.padding``."""
        xp = array_module(a)
        ph, pw = self.padding
        h, w = self.size
        pad = [(0, 0)] * (a.ndim - 2) + [(ph, ph), (pw, pw)]
        padded = xp.pad(a, pad, mode=mode) if ph or pw else a
        if xp is np:
            # Every window position as a strided view; one fancy index then copies each
            # sample's (C, h, w) window as a block.
            windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(-2, -1))
            index = (np.arange(a.shape[0]),) + (slice(None),) * (a.ndim - 3) + (top, left)
            return np.ascontiguousarray(windows[index])
        # cupy: gather rows and columns with index arrays on (N, H, W, ...).
        moved = xp.moveaxis(padded, (-2, -1), (1, 2))
        n = xp.asarray(np.arange(a.shape[0])[:, None, None])
        rows = xp.asarray((top[:, None] + np.arange(h))[:, :, None])
        cols = xp.asarray((left[:, None] + np.arange(w))[:, None, :])
        return xp.ascontiguousarray(xp.moveaxis(moved[n, rows, cols], (1, 2), (-2, -1)))

    def __repr__(self):
        return (f"RandomCrop(size={self.size}, padding={self.padding}, "
                f"padding_mode={self.padding_mode!r})")


class GaussianNoise:
    """Add zero-mean Gaussian noise of standard deviation ``std`` to ``x`` (with probability
    ``p`` per sample), then clip to ``clip`` = (low, high) unless it is None."""

    def __init__(self, std=0.05, p=1.0, clip=(0.0, 1.0)):
        if not np.isfinite(std) or std < 0:
            raise ValueError(f"std must be finite and non-negative, got {std!r}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p!r}")
        if clip is not None:
            lo, hi = (float(c) for c in clip)
            if not lo <= hi:
                raise ValueError(f"clip must be (low, high) with low <= high, got {clip!r}")
            clip = (lo, hi)
        self.std, self.p, self.clip = float(std), float(p), clip

    def __call__(self, x, y=None, rng=None):
        xp = array_module(x)
        rng = _generator(rng)
        if not xp.issubdtype(x.dtype, xp.floating):
            raise TypeError(f"GaussianNoise needs a float batch, got dtype {x.dtype}")
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        noise *= self.std
        if self.p < 1.0:
            noise *= _draw(rng, self.p, x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
        out = x + (noise if xp is np else xp.asarray(noise)).astype(x.dtype, copy=False)
        if self.clip is not None:
            xp.clip(out, self.clip[0], self.clip[1], out=out)
        return out, y

    def __repr__(self):
        return f"GaussianNoise(std={self.std}, p={self.p}, clip={self.clip})"
