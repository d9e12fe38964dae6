"""Epoch metrics: accuracy, dice, iou, auroc, each exact over the whole epoch.

A metric is an accumulator (``reset``, ``update(output, target)``, ``compute``) so that the
epoch value is computed from the epoch's counts, not averaged from per-batch values: accuracy
sums correct predictions, dice/iou average per-sample values, auroc ranks every score of the
epoch at once (an average of per-batch AUROCs is not the AUROC). Outputs are logits; a
batch's counts are reduced on the output's device and only scalars (auroc: the scores) come
back to the host.

``fit``/``evaluate`` take metric names, Metric instances or plain callables
``fn(output, target) -> float`` (averaged over samples, weighted by batch size).

In data-parallel training each rank accumulates its own shard and ``all_reduce`` combines
the states over the ranks (sums of counts; AUROC gathers the scores), so the epoch value is
the metric of every rank's samples together, not a mean of per-rank values.
"""

from __future__ import annotations

import numpy as np

from pyfast._arrays import array_module, is_cupy, to_host

__all__ = ["Metric", "Accuracy", "Dice", "IoU", "AUROC", "BatchMean", "get_metric",
           "accuracy", "dice", "iou", "auroc", "NAMES"]


def _array(x, name):
    """The array behind a Tensor or array-like ``x``."""
    if type(x).__module__.partition(".")[0] == "pyfast" and hasattr(x, "data"):
        x = x.data
    if isinstance(x, np.ndarray) or is_cupy(x):
        return x
    if isinstance(x, (list, tuple, int, float, np.generic)):
        return np.asarray(x)
    raise TypeError(f"{name} must be an array or Tensor, got {type(x).__name__}")


def _pair(output, target, metric):
    output, target = _array(output, "output"), _array(target, "target")
    xp = array_module(output)
    if array_module(target) is not xp:
        target = xp.asarray(target)
    if output.ndim == 0:
        raise ValueError(f"{metric}: output must have a batch dimension, got shape ()")
    if target.shape[:1] != output.shape[:1]:
        raise ValueError(f"{metric}: output has shape {tuple(output.shape)} but target has "
                         f"shape {tuple(target.shape)}; their first (batch) dimensions differ")
    return output, target, xp


def _binary_pair(output, target, metric):
    """Predicted and true masks of shape (N, rest) for single-logit outputs."""
    output, target, xp = _pair(output, target, metric)
    if output.ndim >= 2 and output.shape[1] != 1:
        raise ValueError(f"{metric}: expects one logit per sample or pixel (binary, output of "
                         f"shape (N,), (N, 1) or (N, 1, ...)), got {tuple(output.shape)}")
    if target.size != output.size:
        raise ValueError(f"{metric}: output has shape {tuple(output.shape)} but target has "
                         f"shape {tuple(target.shape)} ({target.size} != {output.size} values)")
    n = output.shape[0]
    return output.reshape(n, -1) > 0, target.reshape(n, -1) > 0.5, xp


class Metric:
    """An epoch accumulator. ``name`` is the history key (``val_`` + name for validation)."""

    name = "metric"
    # attributes that add up over shards of the data; all_reduce sums them over the ranks
    _summed = ()

    def reset(self):
        raise NotImplementedError

    def all_reduce(self):
        """Combine this epoch's state with every other rank's (pf.distributed), so that
        ``compute()`` covers all ranks' samples. Sums the attributes named in ``_summed``;
        a Metric of your own names them there or overrides this."""
        if not self._summed:
            raise TypeError(f"metric {self.name!r} ({type(self).__name__}) cannot be combined "
                            f"over ranks: set _summed to its additive attributes or override "
                            f"all_reduce")
        from pyfast import distributed
        values = np.array([float(getattr(self, k)) for k in self._summed], np.float64)
        distributed.all_reduce(values, "sum")
        for key, value in zip(self._summed, values):
            setattr(self, key, int(value) if isinstance(getattr(self, key), int) else
                    float(value))

    def reducible(self):
        """Whether ``all_reduce`` can combine this metric over ranks."""
        return bool(self._summed) or type(self).all_reduce is not Metric.all_reduce

    def update(self, output, target):
        raise NotImplementedError

    def compute(self):
        raise NotImplementedError

    def __call__(self, output, target):
        """The metric of one batch alone."""
        self.reset()
        self.update(output, target)
        return self.compute()


class Accuracy(Metric):
    """Fraction of correct predictions: argmax over axis 1 for class scores (N, C, ...),
    logit > 0 for one output per sample or pixel. Targets are class indices, one-hot rows
    (argmax taken), or 0/1 labels for binary outputs."""

    name = "accuracy"
    _summed = ("correct", "total")

    def reset(self):
        self.correct, self.total = 0, 0

    def update(self, output, target):
        output, target, xp = _pair(output, target, self.name)
        if output.ndim >= 2 and output.shape[1] > 1:
            pred = output.argmax(axis=1)
            if target.shape == output.shape:
                target = target.argmax(axis=1)
            if target.shape != pred.shape:
                raise ValueError(f"{self.name}: class scores of shape {tuple(output.shape)} "
                                 f"need class-index targets of shape {tuple(pred.shape)} or "
                                 f"one-hot targets of the scores' shape, got {tuple(target.shape)}")
            correct = (pred == target).sum()
        else:
            pred, truth, _ = _binary_pair(output, target, self.name)
            correct = (pred == truth).sum()
        self.correct += int(correct)
        self.total += int(pred.size)

    def compute(self):
        return self.correct / self.total if self.total else float("nan")


class _Overlap(Metric):
    """Per-sample overlap of thresholded logits with a binary mask, averaged over samples;
    a sample where both masks are empty scores 1."""

    _summed = ("sum", "count")

    def reset(self):
        self.sum, self.count = 0.0, 0

    def update(self, output, target):
        pred, truth, xp = _binary_pair(output, target, self.name)
        inter = (pred & truth).sum(axis=1).astype(np.float64)
        pred_n = pred.sum(axis=1).astype(np.float64)
        true_n = truth.sum(axis=1).astype(np.float64)
        num, den = self._ratio(inter, pred_n, true_n)
        empty = den == 0
        per_sample = xp.where(empty, 1.0, num / xp.where(empty, 1.0, den))
        self.sum += float(per_sample.sum())
        self.count += int(per_sample.shape[0])

    def compute(self):
        return self.sum / self.count if self.count else float("nan")


class Dice(_Overlap):
    """Dice 2|A and B| / (|A| + |B|) of (logits > 0) and (target > 0.5), mean over samples."""

    name = "dice"

    @staticmethod
    def _ratio(inter, pred_n, true_n):
        return 2.0 * inter, pred_n + true_n


class IoU(_Overlap):
    """Intersection over union of (logits > 0) and (target > 0.5), mean over samples."""

    name = "iou"

    @staticmethod
    def _ratio(inter, pred_n, true_n):
        return inter, pred_n + true_n - inter


def _roc_auc(scores, labels):
    """Area under the ROC curve from ranks (ties share their average rank): the chance a
    random positive scores above a random negative, ties counting one half."""
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")  # undefined with one class; nan rather than a crashed run
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts, dtype=np.float64)
    average_rank = ends - (counts - 1) / 2.0
    rank_sum = average_rank[inverse.reshape(-1)][labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class AUROC(Metric):
    """Binary ROC AUC over every score of the epoch (as sklearn's roc_auc_score). Scores are
    the logits of a single-output model, or logit1 - logit0 for two-class scores (the same
    order as the softmax probability of class 1). NaN when the epoch saw one class only."""

    name = "auroc"

    def reset(self):
        self.scores, self.labels = [], []

    def all_reduce(self):
        """Every rank's scores and labels, gathered (ranks agree on the order)."""
        from pyfast import distributed
        mine = (np.concatenate(self.scores) if self.scores else np.zeros(0),
                np.concatenate(self.labels) if self.labels else np.zeros(0, bool))
        parts = distributed.all_gather_object(mine)
        self.scores = [p[0] for p in parts]
        self.labels = [p[1] for p in parts]

    def update(self, output, target):
        output, target, xp = _pair(output, target, self.name)
        if output.ndim >= 2 and output.shape[1] == 2 and target.size != output.size:
            scores = output[:, 1] - output[:, 0]
        elif output.size == output.shape[0]:
            scores = output.reshape(-1)
        else:
            raise ValueError(f"{self.name}: expects binary scores of shape (N,), (N, 1) or "
                             f"(N, 2), got {tuple(output.shape)}")
        if target.size != scores.shape[0]:
            raise ValueError(f"{self.name}: expects one 0/1 label per sample, got target of "
                             f"shape {tuple(target.shape)} for output {tuple(output.shape)}")
        self.scores.append(np.asarray(to_host(scores), dtype=np.float64))
        self.labels.append(np.asarray(to_host(target.reshape(-1) > 0.5)))

    def compute(self):
        if not self.scores:
            return float("nan")
        return _roc_auc(np.concatenate(self.scores), np.concatenate(self.labels))


class BatchMean(Metric):
    """A plain function ``fn(output, target) -> float`` averaged over samples."""

    _summed = ("sum", "count")

    def __init__(self, fn, name=None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.reset()

    def reset(self):
        self.sum, self.count = 0.0, 0

    def update(self, output, target):
        output, target, _ = _pair(output, target, self.name)
        n = int(output.shape[0])
        self.sum += float(self.fn(output, target)) * n
        self.count += n

    def compute(self):
        return self.sum / self.count if self.count else float("nan")


NAMES = {"accuracy": Accuracy, "acc": Accuracy, "dice": Dice, "iou": IoU, "auroc": AUROC,
         "auc": AUROC}


def get_metric(spec):
    """A fresh Metric for a name ("accuracy", "dice", "iou", "auroc"), a Metric instance
    (used as is) or a callable ``fn(output, target) -> float``."""
    if isinstance(spec, str):
        try:
            metric = NAMES[spec.lower()]()
        except KeyError:
            raise ValueError(f"unknown metric {spec!r}; known: accuracy, dice, iou, auroc, "
                             f"or pass a callable fn(output, target) -> float") from None
        metric.name = spec
        return metric
    if isinstance(spec, Metric):
        return spec
    if callable(spec):
        return BatchMean(spec)
    raise TypeError(f"a metric must be a name, a Metric or a callable, got {type(spec).__name__}")


def get_metrics(specs):
    """Metrics for ``specs`` (one spec or a sequence), with unique names."""
    if specs is None:
        return []
    if isinstance(specs, (str, Metric)) or callable(specs):
        specs = (specs,)
    metrics = [get_metric(s) for s in specs]
    names = [m.name for m in metrics]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"metric names must be unique, got {duplicated} more than once")
    for bad in ("loss", "time", "lr", "epoch"):
        if bad in names:
            raise ValueError(f"a metric may not be named {bad!r} (a history key of its own)")
    return metrics


def accuracy(output, target):
    """Accuracy of one batch of logits (see Accuracy)."""
    return Accuracy()(output, target)


def dice(output, target):
    """Mean per-sample Dice of one batch of logits against binary masks."""
    return Dice()(output, target)


def iou(output, target):
    """Mean per-sample IoU of one batch of logits against binary masks."""
    return IoU()(output, target)


def auroc(output, target):
    """ROC AUC of binary scores against 0/1 labels."""
    return AUROC()(output, target)
