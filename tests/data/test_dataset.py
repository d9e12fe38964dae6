"""ArrayDataset: indexing, the unsupervised convention, splits (fractions, counts,
stratified) and the scalers that fit on a training split only."""

import numpy as np
import pytest

import pyfast as pf


def make(n=10, classes=None):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64) if classes is None else np.arange(n) % classes
    return pf.data.ArrayDataset(x, y)


def test_len_getitem_and_attributes():
    ds = make(5)
    assert len(ds) == 5
    x, y = ds[2]
    np.testing.assert_array_equal(x, [6, 7, 8])
    assert y == 2
    assert ds[-1][1] == 4
    bx, by = ds[1:3]
    assert bx.shape == (2, 3) and list(by) == [1, 2]
    bx, by = ds[np.array([4, 0])]
    assert list(by) == [4, 0]
    assert ds.x.shape == (5, 3) and ds.y.shape == (5,)
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(TypeError):
        ds["a"]


def test_unsupervised_target_is_the_input():
    x = np.random.default_rng(0).random((4, 2)).astype(np.float32)
    ds = pf.data.ArrayDataset(x)
    assert ds.y is None and ds.targets is ds.x
    a, b = ds[3]
    assert a is not None and np.array_equal(a, b)
    train, val = ds.split((0.5, 0.5))
    assert train.y is None and len(train) == 2


def test_length_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(3,\)"):
        pf.data.ArrayDataset(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="0-d"):
        pf.data.ArrayDataset(np.float32(1.0), None)


def test_accepts_lists_and_dlpack():
    torch = pytest.importorskip("torch")
    ds = pf.data.ArrayDataset([[1.0, 2.0], [3.0, 4.0]], torch.tensor([0, 1]))
    assert isinstance(ds.x, np.ndarray) and isinstance(ds.y, np.ndarray)
    assert ds[1][1] == 1


def test_split_fractions_are_disjoint_cover_everything_and_repeat_per_seed():
    ds = make(101)
    parts = ds.split((0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [81, 10, 10]
    seen = np.concatenate([p.y for p in parts])
    assert sorted(seen) == list(range(101))
    for p in parts:  # x and y stay paired
        np.testing.assert_array_equal(p.x[:, 0], p.y * 3)
    again = ds.split((0.8, 0.1, 0.1), seed=3)
    other = ds.split((0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(a.y, b.y) for a, b in zip(parts, again))
    assert not np.array_equal(parts[0].y, other[0].y)
    ordered = ds.split((0.5, 0.5), shuffle=False)
    assert list(ordered[0].y) == list(range(50)) or list(ordered[0].y) == list(range(51))


def test_split_counts():
    parts = make(10).split((7, 3), seed=0)
    assert [len(p) for p in parts] == [7, 3]
    with pytest.raises(ValueError, match="add up to 9"):
        make(10).split((6, 3))


def test_split_stratified_keeps_class_proportions():
    ds = make(300, classes=3)
    y = ds.y.copy()
    y[:30] = 0  # unbalance: class 0 is now 120 of 300
    ds = pf.data.ArrayDataset(ds.x, y)
    train, val = ds.split((0.8, 0.2), seed=1, stratify=True)
    assert len(train) + len(val) == 300
    for part in (train, val):
        frac = np.bincount(part.y, minlength=3) / len(part)
        np.testing.assert_allclose(frac, np.bincount(y) / 300, atol=0.01)
    assert len(set(map(tuple, train.x)) & set(map(tuple, val.x))) == 0


@pytest.mark.parametrize("bad,err", [((0.5, 0.4), ValueError), ((), ValueError),
                                     ((1.2, -0.2), ValueError), ("ab", TypeError)])
def test_split_rejects_bad_fractions(bad, err):
    with pytest.raises(err):
        make(10).split(bad)


def test_split_stratify_needs_integer_labels():
    with pytest.raises(ValueError, match="y=None"):
        pf.data.ArrayDataset(np.zeros((4, 2))).split((0.5, 0.5), stratify=True)
    with pytest.raises(ValueError, match="integer class label"):
        pf.data.ArrayDataset(np.zeros((4, 2)), np.zeros((4, 2))).split((0.5, 0.5),
                                                                        stratify=True)


def test_standardise_fits_on_train_only():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((200, 4)) * [1, 2, 3, 0] + [5, -1, 0, 7]).astype(np.float32)
    train, test = pf.data.ArrayDataset(x[:150], np.zeros(150)), pf.data.ArrayDataset(x[150:],
                                                                                   np.zeros(50))
    s_train, s_test = pf.data.standardise(train, test)
    assert s_train.x.dtype == np.float32
    np.testing.assert_allclose(s_train.x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s_train.x[:, :3].std(0), 1, rtol=1e-4)
    assert np.all(s_train.x[:, 3] == 0)  # a constant feature is centred, not divided by 0
    mean, std = x[:150, :3].mean(0), x[:150, :3].std(0)
    np.testing.assert_allclose(s_test.x[:, :3], (x[150:, :3] - mean) / std, rtol=1e-4,
                               atol=1e-5)


def test_normalise_and_image_channels():
    rng = np.random.default_rng(1)
    x = rng.random((20, 2, 5, 5)).astype(np.float32) * [[[3.0]], [[0.5]]]
    (train,) = pf.data.normalise(pf.data.ArrayDataset(x))
    assert train.x.shape == x.shape
    np.testing.assert_allclose(train.x.min(axis=(0, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(train.x.max(axis=(0, 2, 3)), 1, atol=1e-6)
    assert train.targets is train.x
    scaler = pf.data.Standardise.fit(x)
    out, y = scaler(x, None)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    with pytest.raises(ValueError, match="fitted on 2"):
        scaler.apply(np.zeros((3, 4), np.float32))
