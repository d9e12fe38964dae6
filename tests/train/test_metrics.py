"""Metrics: exact over an epoch fed in batches, matching brute-force definitions."""

import numpy as np
import pytest

import pyfast as pf
from pyfast.train import metrics as M


def _batches(*arrays, size=7):
    n = len(arrays[0])
    for i in range(0, n, size):
        yield tuple(a[i:i + size] for a in arrays)


def _epoch(metric, output, target, size=7):
    metric.reset()
    for o, t in _batches(output, target, size=size):
        metric.update(o, t)
    return metric.compute()


def _pairwise_auc(scores, labels):
    """The definition: P(score of a positive > score of a negative), ties counting 1/2."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


def test_accuracy_multiclass_binary_onehot_and_pixels():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 4))
    labels = rng.integers(0, 4, 50)
    expected = (logits.argmax(1) == labels).mean()
    assert _epoch(M.Accuracy(), logits, labels) == pytest.approx(expected)
    assert _epoch(M.Accuracy(), logits, np.eye(4)[labels]) == pytest.approx(expected)
    single = rng.standard_normal(50)
    y = rng.integers(0, 2, 50)
    assert _epoch(M.Accuracy(), single, y) == pytest.approx(((single > 0) == y).mean())
    assert _epoch(M.Accuracy(), single[:, None], y.astype(np.float32)) == \
        pytest.approx(((single > 0) == y).mean())
    seg = rng.standard_normal((9, 3, 5, 5))
    seg_y = rng.integers(0, 3, (9, 5, 5))
    assert _epoch(M.Accuracy(), seg, seg_y) == pytest.approx((seg.argmax(1) == seg_y).mean())
    assert M.accuracy(pf.tensor(logits), labels) == pytest.approx(expected)


def _overlap(pred, true, kind):
    out = []
    for p, t in zip(pred.reshape(len(pred), -1), true.reshape(len(true), -1)):
        inter, ps, ts = (p & t).sum(), p.sum(), t.sum()
        if kind == "dice":
            out.append(1.0 if ps + ts == 0 else 2 * inter / (ps + ts))
        else:
            union = (p | t).sum()
            out.append(1.0 if union == 0 else inter / union)
    return np.mean(out)


@pytest.mark.parametrize("kind", ["dice", "iou"])
def test_dice_and_iou_are_per_sample_means_with_empty_pairs_scoring_one(kind):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((20, 1, 6, 6))
    masks = (rng.random((20, 1, 6, 6)) > 0.6).astype(np.float32)
    logits[3] = -1.0
    masks[3] = 0.0              # both empty: 1
    logits[4] = 1.0
    masks[4] = 0.0              # prediction only: 0
    expected = _overlap(logits > 0, masks > 0.5, kind)
    metric = M.get_metric(kind)
    assert _epoch(metric, logits, masks, size=6) == pytest.approx(expected)
    assert _epoch(metric, logits, masks[:, 0], size=6) == pytest.approx(expected)
    assert getattr(M, kind)(logits[3:4], masks[3:4]) == 1.0
    assert getattr(M, kind)(logits[4:5], masks[4:5]) == 0.0


def test_auroc_over_the_whole_epoch_with_ties():
    rng = np.random.default_rng(2)
    scores = np.round(rng.standard_normal(200), 1)      # many ties
    labels = (rng.random(200) < 0.3 + 0.4 * (scores > 0)).astype(np.int64)
    expected = _pairwise_auc(scores, labels)
    assert _epoch(M.AUROC(), scores, labels, size=16) == pytest.approx(expected, abs=1e-12)
    two = np.stack([np.zeros(200), scores], axis=1)
    assert _epoch(M.AUROC(), two, labels, size=16) == pytest.approx(expected, abs=1e-12)
    per_batch = np.mean([_pairwise_auc(s, l) for s, l in _batches(scores, labels, size=16)
                         if 0 < l.sum() < len(l)])
    assert abs(per_batch - expected) > 1e-6            # why it must not be averaged per batch


def test_auroc_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    scores = np.round(rng.standard_normal(100), 1)
    labels = rng.integers(0, 2, 100)
    assert M.auroc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))


def test_auroc_with_one_class_is_nan():
    assert np.isnan(M.auroc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_callables_and_names():
    def mae(output, target):
        return float(np.abs(output - target).mean())

    ms = M.get_metrics(["accuracy", mae, M.Dice()])
    assert [m.name for m in ms] == ["accuracy", "mae", "dice"]
    out = np.arange(10.0)[:, None]
    tgt = np.zeros((10, 1))
    assert _epoch(ms[1], out, tgt, size=3) == pytest.approx(4.5)   # weighted by batch size
    with pytest.raises(ValueError, match="unknown metric"):
        M.get_metric("f1")
    with pytest.raises(ValueError, match="unique"):
        M.get_metrics(["accuracy", "accuracy"])
    with pytest.raises(TypeError):
        M.get_metric(3)


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="batch"):
        M.accuracy(np.zeros((4, 3)), np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="one logit"):
        M.dice(np.zeros((2, 3, 4, 4)), np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="binary scores"):
        M.auroc(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError):
        M.accuracy(np.zeros((4, 3)), np.zeros((4, 2)))
