"""Callbacks for pf.train.fit / fit_gan: EarlyStopping, Checkpoint, and the base class.

A callback gets the ``Run`` (model, optimizer, history, epoch, ...) at each hook. The hooks,
in order: ``on_train_begin``, then per epoch ``on_epoch_begin``, ``on_batch_end`` (per
batch), ``on_epoch_end`` (every callback), ``after_epoch_end`` (every callback, once all of
them have updated their state: the moment a checkpoint captures a consistent run), and
finally ``on_train_end``. Callbacks with state (best value so far, patience left) give it
through ``state_dict``/``load_state_dict`` so that a resumed run continues them too.

In data-parallel training every rank runs every callback on the same reduced logs (so their
state and decisions agree); those that write files (Checkpoint, SampleImages) write on rank
0 only. A callback of your own that prints or writes can test ``run.is_writer``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from pyfast._arrays import is_cupy

__all__ = ["Callback", "EarlyStopping", "Checkpoint", "SampleImages"]


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, run):
        pass

    def on_epoch_begin(self, run):
        pass

    def on_batch_end(self, run, logs):
        pass

    def on_epoch_end(self, run, logs):
        pass

    def after_epoch_end(self, run, logs):
        pass

    def on_train_end(self, run):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class _Monitor:
    """Tracks the best value of one history key ("min" for losses, "max" otherwise)."""

    def __init__(self, monitor, mode, min_delta=0.0):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a history key (str), got {type(monitor).__name__}")
        if mode == "auto":
            mode = "min" if monitor.endswith("loss") else "max"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.best, self.best_epoch = None, None

    def check(self, run):
        if self.monitor not in run.history:
            hint = (" (pass val_loader to get val_ keys)"
                    if run.val_loader is None and self.monitor.startswith("val_") else "")
            raise ValueError(f"cannot monitor {self.monitor!r}: this run records "
                             f"{', '.join(sorted(run.history))}{hint}")

    def improved(self, value):
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved (by more than ``min_delta``) for
    ``patience`` epochs. ``restore_best_weights`` loads the best epoch's weights at the end."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self._m = _Monitor(monitor, mode, min_delta)
        self.monitor, self.patience = monitor, patience
        self.restore_best_weights = bool(restore_best_weights)
        self.wait, self.stopped_epoch, self.best_weights = 0, None, None

    @property
    def best(self):
        return self._m.best

    def on_train_begin(self, run):
        self._m.check(run)

    def on_epoch_end(self, run, logs):
        value = logs.get(self.monitor)
        if self._m.improved(value):
            self._m.best, self._m.best_epoch, self.wait = float(value), run.epoch, 0
            if self.restore_best_weights:
                self.best_weights = _snapshot(run.model.state_dict())
        else:
            self.wait += 1
            if self.wait >= self.patience:
                run.stop_training = True
                self.stopped_epoch = run.epoch

    def on_train_end(self, run):
        if self.restore_best_weights and self.best_weights is not None:
            run.model.load_state_dict(self.best_weights)

    def state_dict(self):
        state = dict(self._m.state_dict(), wait=self.wait, stopped_epoch=self.stopped_epoch)
        if self.best_weights is not None:
            state["best_weights"] = self.best_weights
        return state

    def load_state_dict(self, state):
        self._m.load_state_dict(state)
        self.wait = state.get("wait", 0)
        self.stopped_epoch = state.get("stopped_epoch")
        self.best_weights = state.get("best_weights")


class Checkpoint(Callback):
    """Save the run to ``path`` whenever ``monitor`` improves (every epoch when ``monitor``
    is None), and the latest epoch to ``last`` (default: ``path`` with ``.last`` before the
    extension; False for none). Both files hold the whole run (model, optimizer, scheduler,
    epoch, history, RNG, loader and callback state): ``pf.load(path)["model"]`` is the best
    weights, and ``fit(..., resume=path)`` continues from either file."""

    def __init__(self, path, monitor="val_loss", mode="auto", last=True):
        self.path = os.fspath(path)
        self.monitor = monitor
        self._m = None if monitor is None else _Monitor(monitor, mode)
        if last is True:
            stem, ext = os.path.splitext(self.path)
            last = f"{stem}.last{ext or '.safetensors'}"
        self.last = os.fspath(last) if last else None
        self._improved = False

    @property
    def best(self):
        return None if self._m is None else self._m.best

    def on_train_begin(self, run):
        if self._m is not None:
            self._m.check(run)
        for path in (self.path, self.last):
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def on_epoch_end(self, run, logs):
        self._improved = True
        if self._m is not None:
            value = logs.get(self.monitor)
            self._improved = self._m.improved(value)
            if self._improved:
                self._m.best, self._m.best_epoch = float(value), run.epoch

    def after_epoch_end(self, run, logs):
        if not getattr(run, "is_writer", True):
            return
        state = None
        if self._improved:
            state = run.checkpoint_state()
            _save(state, self.path)
        if self.last:
            _save(state if state is not None else run.checkpoint_state(), self.last)

    def state_dict(self):
        return {} if self._m is None else self._m.state_dict()

    def load_state_dict(self, state):
        if self._m is not None:
            self._m.load_state_dict(state)


class SampleImages(Callback):
    """Every ``every`` epochs, hand ``fn(epoch, images)`` a batch generated by a GAN's
    generator from fixed noise (so successive samples are comparable): ``images`` is a
    numpy array (n, C, H, W) in the generator's range. Works with ``fit_gan``."""

    def __init__(self, fn, n=16, every=1, seed=0):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn, self.n, self.every, self.seed = fn, int(n), int(every), seed
        if self.n < 1 or self.every < 1:
            raise ValueError(f"n and every must be >= 1, got n={n!r}, every={every!r}")

    def on_epoch_end(self, run, logs):
        if not getattr(run, "is_writer", True):
            return
        if run.epoch % self.every == 0 or run.epoch == run.epochs:
            self.fn(run.epoch, run.sample(self.n, seed=self.seed))


def _save(state, path):
    from pyfast.io import save
    save(state, path)


def _snapshot(state_dict):
    """An independent host copy of a model state dict (arrays or Tensors)."""
    out = {}
    for key, value in state_dict.items():
        if type(value).__module__.partition(".")[0] == "pyfast" and hasattr(value, "numpy"):
            value = value.numpy()
        elif is_cupy(value):
            value = value.get()
        out[key] = np.array(value, copy=True)
    return out
