"""Batch augmentations: masks follow images, labels pass through, inputs stay untouched,
the same generator gives the same result, and crops/flips do what torchvision's do."""

import numpy as np
import pytest

import pyfast as pf
from pyfast.data import transforms as T


def batch(n=16, c=2, h=6, w=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, c, h, w)).astype(np.float32)
    mask = (x[:, :1] > 0.5).astype(np.float32)  # a mask that is a function of the image
    return x, mask


def mask_of(x):
    return (x[:, :1] > 0.5).astype(np.float32)


@pytest.mark.parametrize("t", [T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                               T.RandomCrop(5, padding=2), T.RandomCrop((4, 3)),
                               T.RandomCrop(6, padding=1, padding_mode="reflect"),
                               T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(6, 2),
                                          T.RandomVerticalFlip(0.7)])])
def test_geometric_transforms_move_masks_with_images(t):
    x, m = batch()
    before = x.copy()
    ox, om = t(x, m, np.random.default_rng(1))
    np.testing.assert_array_equal(x, before)  # not in place
    pad = getattr(t, "padding_mode", "constant") == "constant"
    if pad:
        # Padding is zero in both, so the mask is still the thresholded image.
        np.testing.assert_array_equal(om, mask_of(ox))
    assert om.shape[-2:] == ox.shape[-2:] and om.shape[:2] == (16, 1)
    again = t(x, m, np.random.default_rng(1))
    np.testing.assert_array_equal(again[0], ox)
    np.testing.assert_array_equal(again[1], om)


def test_flips_flip_exactly_the_drawn_samples():
    x, _ = batch()
    labels = np.arange(16)
    ox, oy = T.RandomHorizontalFlip(p=0.5)(x, labels, np.random.default_rng(4))
    assert oy is labels
    flipped = [np.array_equal(ox[i], x[i, :, :, ::-1]) for i in range(16)]
    kept = [np.array_equal(ox[i], x[i]) for i in range(16)]
    assert all(f != k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 16
    assert np.array_equal(T.RandomVerticalFlip(p=1.0)(x, None, None)[0], x[:, :, ::-1])
    assert np.array_equal(T.RandomVerticalFlip(p=0.0)(x, None, None)[0], x)


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_crop_matches_a_per_sample_loop(lead, mode):
    x = np.random.default_rng(2).random((8,) + lead + (6, 7)).astype(np.float32)
    t = T.RandomCrop((5, 4), padding=(2, 1), padding_mode=mode)
    ox, _ = t(x, None, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    top, left = rng.integers(0, 6 + 4 - 5 + 1, 8), rng.integers(0, 7 + 2 - 4 + 1, 8)
    padded = np.pad(x, [(0, 0)] * (1 + len(lead)) + [(2, 2), (1, 1)], mode=mode)
    for i in range(8):
        np.testing.assert_array_equal(ox[i], padded[i, ..., top[i]:top[i] + 5,
                                                    left[i]:left[i] + 4])
    assert ox.flags.c_contiguous and ox.shape == (8,) + lead + (5, 4)


def test_crop_of_an_unpadded_full_size_window_is_identity():
    x, m = batch()
    ox, om = T.RandomCrop((6, 7))(x, m, np.random.default_rng(0))
    np.testing.assert_array_equal(ox, x)
    np.testing.assert_array_equal(om, m)


def test_autoencoder_target_stays_the_input():
    x, _ = batch()
    t = T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(6, 1, "reflect")])
    ox, oy = t(x, x, np.random.default_rng(0))
    assert oy is ox
    nx, ny = T.GaussianNoise(0.1)(ox, ox, np.random.default_rng(0))
    assert ny is ox and not np.array_equal(nx, ny)


def test_gaussian_noise_statistics_and_clip():
    x = np.full((64, 1, 16, 16), 0.5, np.float32)
    ox, _ = T.GaussianNoise(std=0.1, clip=None)(x, None, np.random.default_rng(0))
    assert ox.dtype == np.float32
    assert abs((ox - x).mean()) < 0.005 and abs((ox - x).std() - 0.1) < 0.005
    ox, _ = T.GaussianNoise(std=1.0)(x, None, np.random.default_rng(0))
    assert ox.min() == 0.0 and ox.max() == 1.0
    ox, _ = T.GaussianNoise(std=0.1, p=0.5, clip=None)(x, None, np.random.default_rng(0))
    changed = (ox != x).reshape(64, -1).any(axis=1)
    assert 10 < changed.sum() < 54
    with pytest.raises(TypeError, match="float"):
        T.GaussianNoise()(np.zeros((2, 1, 2, 2), np.uint8), None, None)


def test_default_generator_is_pyfasts():
    x, _ = batch()
    pf.manual_seed(0)
    a = T.GaussianNoise(0.1)(x, None)[0]
    pf.manual_seed(0)
    np.testing.assert_array_equal(T.GaussianNoise(0.1)(x, None)[0], a)


def test_in_a_loader_segmentation_pairs_stay_aligned():
    ds = pf.data.datasets.synthetic_lesions(40, size=32, seed=2)
    aug = T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.RandomCrop(32, 4)])
    loader = pf.data.DataLoader(ds, 16, shuffle=True, seed=0, transform=aug)
    for x, y in loader:
        # Lesion pixels moved with the image: the brightest/darkest spots are in the mask.
        for i in np.flatnonzero(y.reshape(len(y), -1).any(axis=1)):
            inside = x[i][y[i] > 0].mean()
            ring = x[i][(y[i] == 0) & (x[i] > 0.3)].mean()
            assert abs(inside - ring) > 0.08


@pytest.mark.parametrize("make,match", [
    (lambda: T.RandomHorizontalFlip(p=1.5), "p must"),
    (lambda: T.RandomCrop(0), "positive"),
    (lambda: T.RandomCrop(4, padding_mode="wrap"), "padding_mode"),
    (lambda: T.RandomCrop("a"), "int or an"),
    (lambda: T.GaussianNoise(std=-1), "std"),
    (lambda: T.GaussianNoise(clip=(1, 0)), "clip"),
    (lambda: T.Compose([1]), "callables")])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_batches():
    with pytest.raises(ValueError, match="larger than the padded"):
        T.RandomCrop(9)(np.zeros((2, 1, 6, 6), np.float32), None, None)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        T.RandomHorizontalFlip()(np.zeros((2, 6), np.float32), None, None)
