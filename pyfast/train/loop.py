"""fit / evaluate: the supervised training loop, its history and resumable checkpoints.

One epoch: ``model.train()``; per batch forward, ``loss_fn``, ``zero_grad``, backward,
``step`` (and a OneCycleLR step); then validation in ``eval()`` under ``pf.no_grad()``;
then the scheduler's epoch step. Loss and metrics are exact over the epoch (the loss
weighted by batch size; metrics from epoch-wide counts, see metrics.py).

A checkpoint (``Run.checkpoint_state``) holds everything the next epoch depends on: weights
and buffers, optimizer and scheduler state, history, pyfast's RNG, the loader's state when
it has one, the callbacks' state and the epoch count. It is taken at the end of an epoch,
after every callback has updated, so a run resumed from it draws the same batches and
dropout masks and ends with bitwise the same weights as one never interrupted.

Data parallel (the model is a pf.distributed.DataParallel on several ranks): every rank runs
this same loop on its shard; each epoch's loss and metrics, training and validation, are
reduced over the ranks before they reach the history, so every rank sees the same logs and
its callbacks take the same decisions (rank 0's ``stop_training`` is broadcast to be sure).
Only rank 0 (``run.is_writer``) draws the progress bar and writes checkpoints. The
checkpoint holds no rank-specific state (weights and optimizer are replicated; the loader
state is the epoch), so it resumes on any number of ranks.
"""

from __future__ import annotations

import math
import time

import numpy as np

from pyfast._arrays import to_device

from .callbacks import Callback
from .metrics import get_metrics
from .progress import ProgressBar

__all__ = ["fit", "evaluate", "Run", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "pyfast.train/1"


def _no_grad():
    from pyfast import no_grad
    return no_grad()


def _data_parallel(model):
    """Whether ``model`` is a DataParallel replica among several ranks."""
    from pyfast import distributed
    return isinstance(model, distributed.DataParallel) and distributed.world_size() > 1


def _check_reducible(metrics):
    for m in metrics:
        if not m.reducible():
            raise TypeError(f"metric {m.name!r} ({type(m).__name__}) cannot be combined over "
                            f"ranks in data-parallel training: set its _summed attributes or "
                            f"override all_reduce (see pf.train.metrics)")


def model_device(model):
    params = getattr(model, "parameters", None)
    if params is None:
        return "cpu"
    for p in params():
        return str(getattr(p, "device", "cpu"))
    return "cpu"


def array_of(x):
    if type(x).__module__.partition(".")[0] == "pyfast" and hasattr(x, "data"):
        return x.data
    return x


def _split_batch(batch, where):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"{where} must yield (inputs, targets) pairs, got "
                        f"{type(batch).__name__}"
                        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    return batch


def _batch_size(x):
    shape = getattr(x, "shape", None)
    if not shape:
        raise ValueError(f"batch inputs must be arrays with a batch dimension, got "
                         f"{type(x).__name__} of shape {shape}")
    return int(shape[0])


def _loss_value(loss):
    if hasattr(loss, "item"):
        return float(loss.item())
    return float(loss)


def _check_callable(value, name):
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def check_epochs(epochs):
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    return int(epochs)


def len_or_none(loader):
    try:
        return len(loader)
    except TypeError:
        return None


def check_callbacks(callbacks):
    if isinstance(callbacks, Callback):
        callbacks = (callbacks,)
    out = list(callbacks or ())
    for cb in out:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be pf.train.Callback instances, got "
                            f"{type(cb).__name__}")
    return out


class Run:
    """What callbacks see: the model, optimizer, scheduler, loaders, ``history``, ``epoch``
    (epochs completed), ``epochs`` (the target), and ``stop_training`` to end early."""

    def __init__(self, *, model, optimizer, scheduler, train_loader, val_loader, history,
                 epochs, callbacks):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.val_loader = train_loader, val_loader
        self.history, self.epochs, self.callbacks = history, epochs, callbacks
        self.epoch = 0
        self.stop_training = False
        self.distributed = False     # a DataParallel model on several ranks
        self.is_writer = True        # the rank that prints and writes files (rank 0)

    # What a checkpoint holds, by name (fit_gan's run has two of each).
    def _models(self):
        return {"model": self.model}

    def _optimizers(self):
        return {"optimizer": self.optimizer}

    def checkpoint_state(self):
        """The run as a pf.save-able dict (see the module doc)."""
        from pyfast import _random
        state = {"format": CHECKPOINT_FORMAT, "epoch": self.epoch,
                 "history": {k: list(v) for k, v in self.history.items()},
                 "rng": _random.get_state(),
                 "callbacks": [{"type": type(cb).__name__, "state": cb.state_dict()}
                               for cb in self.callbacks]}
        for name, model in self._models().items():
            state[name] = dict(model.state_dict())
        for name, opt in self._optimizers().items():
            if opt is not None:
                state[name] = opt.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if hasattr(self.train_loader, "state_dict"):
            state["loader"] = self.train_loader.state_dict()
        return state

    def restore(self, path):
        """Load a checkpoint written by ``checkpoint_state`` (via pf.save) into this run."""
        from pyfast import _random
        from pyfast.io import load
        state = load(path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"resume: {path} is not a pyfast training checkpoint (no "
                             f"format {CHECKPOINT_FORMAT!r}); pf.save of a state dict is "
                             f"loaded with model.load_state_dict(pf.load(path))")
        for name in [*self._models(), *(k for k, v in self._optimizers().items() if v is not None)]:
            if name not in state:
                raise ValueError(f"resume: {path} has no {name!r} state")
        if (self.scheduler is None) != ("scheduler" not in state):
            raise ValueError(f"resume: {path} was saved "
                             f"{'with' if 'scheduler' in state else 'without'} a scheduler but "
                             f"this run has {'one' if self.scheduler is not None else 'none'}")
        # Callback state goes to the callbacks of the same type, in order; a callback the
        # saved run did not have starts fresh (an interrupted run may have had extra ones).
        saved_cbs = list(state.get("callbacks", []))
        matched = []
        for cb in self.callbacks:
            for i, saved in enumerate(saved_cbs):
                if saved.get("type") == type(cb).__name__:
                    matched.append((cb, saved_cbs.pop(i)))
                    break
        if set(state["history"]) != set(self.history):
            raise ValueError(f"resume: {path} recorded {sorted(state['history'])} but this run "
                             f"records {sorted(self.history)} (metrics or val_loader differ)")
        for name, model in self._models().items():
            model.load_state_dict(state[name])
        for name, opt in self._optimizers().items():
            if opt is not None:
                opt.load_state_dict(state[name])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if "loader" in state and hasattr(self.train_loader, "load_state_dict"):
            self.train_loader.load_state_dict(state["loader"])
        for cb, saved in matched:
            cb.load_state_dict(saved.get("state", {}))
        for key, values in state["history"].items():
            self.history[key] = list(values)
        _random.set_state(state["rng"])
        self.epoch = int(state["epoch"])


def _run_epoch(model, loader, loss_fn, metrics, device, *, optimizer=None, scheduler_per_batch=None,
               bar=None, run=None, callbacks=(), where="loader", distributed=False):
    """One pass over ``loader``: training when ``optimizer`` is given, else evaluation
    (the caller sets the mode and no_grad). Returns {"loss": ..., metric: ...}, over every
    rank's batches when ``distributed``."""
    for m in metrics:
        m.reset()
    loss_sum, count, batches = 0.0, 0, 0
    for batch in loader:
        x, y = _split_batch(batch, where)
        x, y = to_device(x, device), to_device(y, device)
        n = _batch_size(x)
        out = model(x)
        if loss_fn is not None:
            loss = loss_fn(out, y)
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if scheduler_per_batch is not None:
                    scheduler_per_batch.step()
            loss_sum += _loss_value(loss) * n
        elif optimizer is not None:
            raise ValueError("training needs a loss_fn")
        out_array = array_of(out)
        for m in metrics:
            m.update(out_array, y)
        count += n
        batches += 1
        if bar is not None:
            bar.update(n, {"loss": loss_sum / count} if loss_fn is not None else {})
        for cb in callbacks:
            cb.on_batch_end(run, {"batch": batches, "size": n})
    if distributed:
        from pyfast import distributed as dist
        totals = dist.all_reduce(np.array([loss_sum, count, batches], np.float64), "sum")
        loss_sum, count, batches = float(totals[0]), int(totals[1]), int(totals[2])
        for m in metrics:
            m.all_reduce()
    if batches == 0:
        raise ValueError(f"{where} yielded no batches")
    logs = {"loss": loss_sum / count if loss_fn is not None else None}
    for m in metrics:
        logs[m.name] = float(m.compute())
    return logs


def _fit_epoch(run, loss_fn, metrics, device, per_batch, bar):
    """Train one epoch, validate, step an epoch scheduler; the epoch's logs."""
    model, optimizer, scheduler = run.model, run.optimizer, run.scheduler
    t0 = time.perf_counter()
    groups = getattr(optimizer, "param_groups", None)
    lr = float(groups[0]["lr"]) if groups else math.nan
    bar.start(run.epoch + 1, run.epochs, len_or_none(run.train_loader))
    model.train()
    logs = _run_epoch(model, run.train_loader, loss_fn, metrics, device, optimizer=optimizer,
                      scheduler_per_batch=per_batch, bar=bar, run=run, callbacks=run.callbacks,
                      where="train_loader", distributed=run.distributed)
    if run.val_loader is not None:
        model.eval()
        with _no_grad():
            val = _run_epoch(model, run.val_loader, loss_fn, metrics, device,
                             where="val_loader", distributed=run.distributed)
        model.train()
        logs.update({"val_" + k: v for k, v in val.items()})
    if scheduler is not None and per_batch is None:
        scheduler.step()
    logs["lr"] = lr
    logs["time"] = time.perf_counter() - t0
    return logs


def evaluate(model, loader, *, loss_fn=None, metrics=("accuracy",)):
    """Loss and metrics of ``model`` over ``loader``, in eval mode without gradients.
    Returns {"loss": ..., "<metric>": ...} ("loss" is None without a loss_fn), over every
    rank's batches for a DataParallel model. The model's train/eval mode is restored
    afterwards."""
    if loss_fn is not None:
        _check_callable(loss_fn, "loss_fn")
    metrics = get_metrics(metrics)
    distributed = _data_parallel(model)
    if distributed:
        _check_reducible(metrics)
    was_training = getattr(model, "training", True)
    model.eval()
    try:
        with _no_grad():
            return _run_epoch(model, loader, loss_fn, metrics, model_device(model),
                              where="loader", distributed=distributed)
    finally:
        if was_training:
            model.train()


def fit(model, train_loader, *, loss_fn, optimizer, epochs, val_loader=None,
        metrics=("accuracy",), scheduler=None, callbacks=(), progress=True, resume=None):
    """Train ``model`` for ``epochs`` epochs; returns the history dict: "loss", each metric,
    "val_loss" and "val_<metric>" (with a val_loader), "lr" (first group's, at the epoch's
    start) and "time" (seconds), one value per epoch. The scheduler steps once per epoch,
    or once per batch if it is a OneCycleLR. ``resume``: a checkpoint written by a
    Checkpoint callback; training continues after its epoch, up to ``epochs`` in all."""
    from pyfast.optim.lr_scheduler import OneCycleLR

    _check_callable(loss_fn, "loss_fn")
    for name in ("zero_grad", "step", "state_dict"):
        if not callable(getattr(optimizer, name, None)):
            raise TypeError(f"optimizer must be a pf.optim optimizer, got "
                            f"{type(optimizer).__name__}")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler must have step(), got {type(scheduler).__name__}")
    epochs = check_epochs(epochs)
    metrics = get_metrics(metrics)
    callbacks = check_callbacks(callbacks)
    history = {"loss": []}
    for m in metrics:
        history[m.name] = []
    if val_loader is not None:
        history["val_loss"] = []
        for m in metrics:
            history["val_" + m.name] = []
    history["lr"] = []
    history["time"] = []
    run = Run(model=model, optimizer=optimizer, scheduler=scheduler, train_loader=train_loader,
              val_loader=val_loader, history=history, epochs=epochs, callbacks=callbacks)
    if _data_parallel(model):
        from pyfast import distributed
        _check_reducible(metrics)
        run.distributed, run.is_writer = True, distributed.rank() == 0
    if resume is not None:
        run.restore(resume)
    per_batch = scheduler if isinstance(scheduler, OneCycleLR) else None
    device = model_device(model)
    bar = ProgressBar(progress and run.is_writer)
    return train_epochs(run, bar, lambda: _fit_epoch(run, loss_fn, metrics, device, per_batch,
                                                     bar), not_shown=("lr", "time"))


def train_epochs(run, bar, train_one_epoch, not_shown):
    """The epoch loop of fit and fit_gan: the callbacks around each epoch, one value per
    history key per epoch, the progress bar closed whatever happens. Returns the history."""
    callbacks, history = run.callbacks, run.history
    try:
        for cb in callbacks:
            cb.on_train_begin(run)
        while run.epoch < run.epochs and not run.stop_training:
            for cb in callbacks:
                cb.on_epoch_begin(run)
            logs = train_one_epoch()
            for key in history:
                history[key].append(logs[key])
            run.epoch += 1
            for cb in callbacks:
                cb.on_epoch_end(run, logs)
            if run.distributed:       # rank 0's decision holds on every rank
                from pyfast import distributed
                flag = distributed.broadcast(np.array([run.stop_training], np.int8), 0)
                run.stop_training = bool(flag[0])
            for cb in callbacks:
                cb.after_epoch_end(run, logs)
            bar.end({k: v for k, v in logs.items() if k not in not_shown})
    finally:
        bar.close()
    for cb in callbacks:
        cb.on_train_end(run)
    return history
