"""Built-in data sets: shapes, dtypes, ranges and determinism; MedMNIST files written here,
including the broken ones; scikit-learn's sets skip cleanly where it is missing."""

import os
import subprocess
import sys

import numpy as np
import pytest

import pyfast as pf
from pyfast.data import datasets


def test_digits():
    pytest.importorskip("sklearn")
    ds = datasets.digits()
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == np.float32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.y.dtype == np.int64 and sorted(set(ds.y)) == list(range(10))
    # The shipped grey levels are sixteenths.
    np.testing.assert_array_equal(ds.x * 16, np.round(ds.x * 16))
    assert datasets.digits(flatten=True).x.shape == (1797, 64)


def test_breast_cancer():
    pytest.importorskip("sklearn")
    ds = datasets.breast_cancer()
    assert ds.x.shape == (569, 30) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64 and set(ds.y) == {0, 1}
    np.testing.assert_allclose(ds.x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x.std(0), 1, rtol=1e-4)
    raw = datasets.breast_cancer(standardise=False)
    assert raw.x.min() >= 0 and raw.x.max() > 100  # e.g. the areas, in their own units
    train, test = raw.split((0.8, 0.2), seed=0, stratify=True)
    train, test = pf.data.standardise(train, test)
    np.testing.assert_allclose(train.x.mean(0), 0, atol=1e-5)


def test_missing_sklearn_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import now fails as if absent
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.digits()
    with pytest.raises(ImportError, match="breast_cancer"):
        datasets.breast_cancer()


def test_sklearn_sets_import_sklearn_lazily():
    code = "import sys, pyfast; print('sklearn' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------- synthetic

def test_synthetic_lesions_shapes_ranges_and_masks():
    ds = datasets.synthetic_lesions(100, size=48, seed=1)
    x, y = ds.x, ds.y
    assert x.shape == y.shape == (100, 1, 48, 48)
    assert x.dtype == y.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    assert set(np.unique(y)) == {0.0, 1.0}
    has = y.reshape(100, -1).any(axis=1)
    assert 0.55 < has.mean() < 0.95  # default: a quarter of the slices are lesion-free
    # Lesions stand out from the tissue around them (bright or dark, never invisible).
    normal = x[~has]
    for i in np.flatnonzero(has)[:20]:
        m = y[i, 0] > 0
        grow = np.zeros_like(m)
        for dy in (-2, 0, 2):
            for dx in (-2, 0, 2):
                grow |= np.roll(m, (dy, dx), axis=(0, 1))
        ring = grow & ~m & (x[i, 0] > 0.25)
        if ring.sum() > 5:
            assert abs(x[i, 0][m].mean() - x[i, 0][ring].mean()) > 0.08
    assert len(normal) > 0


def test_synthetic_lesions_deterministic_and_prefix_stable():
    a = datasets.synthetic_lesions(70, size=32, seed=5)
    b = datasets.synthetic_lesions(70, size=32, seed=5)
    c = datasets.synthetic_lesions(3, size=32, seed=5)
    d = datasets.synthetic_lesions(70, size=32, seed=6)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.x[:3], c.x)
    assert not np.array_equal(a.x, d.x)
    assert len(datasets.synthetic_lesions(0)) == 0


def test_synthetic_lesions_labels_and_options():
    masks = datasets.synthetic_lesions(64, size=32, seed=2)
    labels = datasets.synthetic_lesions(64, size=32, seed=2, target="label")
    assert labels.y.dtype == np.int64 and labels.y.shape == (64,)
    np.testing.assert_array_equal(labels.y, masks.y.reshape(64, -1).max(axis=1))
    np.testing.assert_array_equal(labels.x, masks.x)
    none = datasets.synthetic_lesions(20, size=32, empty_fraction=1.0)
    assert none.y.max() == 0
    every = datasets.synthetic_lesions(20, size=32, empty_fraction=0.0, target="label")
    assert every.y.mean() > 0.9  # a lesion can be cut away by the anatomy, rarely


@pytest.mark.parametrize("kwargs", [dict(n=-1), dict(n=2.0), dict(n=2, size=8),
                                    dict(n=2, target="box"), dict(n=2, empty_fraction=2),
                                    dict(n=2, max_lesions=0), dict(n=2, seed=-3)])
def test_synthetic_lesions_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        datasets.synthetic_lesions(**kwargs)


# ------------------------------------------------------------------------- MedMNIST

def write_medmnist(path, n=(12, 4, 5), shape=(28, 28), labels=1, **overrides):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count,) + shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2 if labels > 1 else 9, (count, labels),
                                                 dtype=np.uint8)
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.mark.parametrize("shape,want", [((28, 28), (1, 28, 28)), ((28, 28, 3), (3, 28, 28)),
                                        ((8, 10, 12), (1, 8, 10, 12))])
def test_medmnist_layouts(tmp_path, shape, want):
    path = tmp_path / "set.npz"
    arrays = write_medmnist(path, shape=shape)
    for split, count in zip(("train", "val", "test"), (12, 4, 5)):
        ds = datasets.medmnist_npz(path, split)
        assert ds.x.shape == (count,) + want and ds.x.dtype == np.float32
        assert ds.y.shape == (count,) and ds.y.dtype == np.int64
        raw = arrays[f"{split}_images"]
        if len(shape) == 3 and shape[-1] == 3:
            raw = np.moveaxis(raw, -1, 1)
        np.testing.assert_allclose(ds.x.reshape(raw.shape if raw.ndim == ds.x.ndim
                                                else ds.x.shape), (raw / 255.0).reshape(
            ds.x.shape), rtol=1e-6)
        np.testing.assert_array_equal(ds.y, arrays[f"{split}_labels"][:, 0])
    assert datasets.medmnist_npz(str(path)).x.shape[0] == 12  # str path, train by default


def test_medmnist_multilabel(tmp_path):
    path = tmp_path / "chest.npz"
    arrays = write_medmnist(path, labels=14)
    ds = datasets.medmnist_npz(path, "val")
    assert ds.y.shape == (4, 14) and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, arrays["val_labels"])


def test_medmnist_missing_file(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(ValueError, match="nowhere.npz"):
        datasets.medmnist_npz(path)
    with pytest.raises(FileNotFoundError):
        datasets.medmnist_npz(path)


def test_medmnist_missing_key(tmp_path):
    path = tmp_path / "partial.npz"
    write_medmnist(path, test_labels=None)
    datasets.medmnist_npz(path, "train")
    with pytest.raises(ValueError, match=r"partial\.npz.*test_labels"):
        datasets.medmnist_npz(path, "test")


def test_medmnist_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.npz"
    write_medmnist(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        datasets.medmnist_npz(truncated)
    corrupt = tmp_path / "corrupt.npz"
    middle = 200  # inside train_images, the first member
    corrupt.write_bytes(data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 64])
                        + data[middle + 64:])
    with pytest.raises(ValueError, match="corrupt.npz"):
        datasets.medmnist_npz(corrupt)
    text = tmp_path / "notes.npz"
    text.write_text("not an archive at all\n")
    with pytest.raises(ValueError, match="notes.npz"):
        datasets.medmnist_npz(text)
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="single.npy"):
        datasets.medmnist_npz(npy)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, train_images=np.array([{"a": 1}], dtype=object),
             train_labels=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="objects.npz"):
        datasets.medmnist_npz(pickled)


def test_medmnist_bad_contents(tmp_path):
    path = tmp_path / "bad.npz"
    write_medmnist(path, train_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match=r"train_labels.*12 images"):
        datasets.medmnist_npz(path)
    write_medmnist(path, train_images=np.zeros((12, 28), np.uint8))
    with pytest.raises(ValueError, match="train_images"):
        datasets.medmnist_npz(path)
    write_medmnist(path)
    with pytest.raises(ValueError, match="split"):
        datasets.medmnist_npz(path, "validation")
    assert os.path.exists(path)
