"""Built-in data sets, each returned as an ArrayDataset. Nothing is downloaded, ever.

- ``digits()``, ``breast_cancer()``: the real data sets shipped inside scikit-learn (an
  optional dependency, imported only when one of them is called).
- ``synthetic_lesions(n, size, seed)``: procedural MRI-like brain slices with lesions and
  their exact masks, for segmentation, classification and anomaly detection.
- ``medmnist_npz(path, split)``: a MedMNIST ``.npz`` file the user has on disk.

Conventions: images float32 (N, C, H, W) in [0, 1], tabular features float32 (N, F), class
labels int64, masks float32 (N, 1, H, W) holding 0 or 1.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from pyfast.data.dataset import ArrayDataset
from pyfast.data.preprocess import Standardise


def _sklearn_datasets(what):
    try:
        from sklearn import datasets
    except ImportError as e:
        raise ImportError(f"pf.data.datasets.{what}() reads the copy of the data set that "
                          f"ships with scikit-learn, which is not installed: pip install "
                          f"scikit-learn (or pyfast[demo])") from e
    return datasets


def digits(*, flatten=False):
    """The 1,797 8x8 handwritten digits of scikit-learn (UCI optical digits), 10 classes.

    x: float32 (1797, 1, 8, 8), the shipped 0..16 grey levels divided by 16, so in [0, 1]
    (``flatten=True``: (1797, 64), for dense models). y: int64 digit 0..9.
    """
    d = _sklearn_datasets("digits").load_digits()
    x = (d.images / 16.0).astype(np.float32)
    x = x.reshape(len(x), -1) if flatten else x[:, None]
    return ArrayDataset(np.ascontiguousarray(x), d.target.astype(np.int64))


def breast_cancer(*, standardise=True):
    """The Wisconsin diagnostic breast cancer data set of scikit-learn: 569 samples, 30
    features, y int64 with 0 = malignant, 1 = benign.

    By default x is float32 standardised with the mean and standard deviation of all 569
    samples. Those statistics include whatever later becomes validation or test data; for
    a clean evaluation take ``standardise=False`` (raw float32 features), split, then
    ``pf.data.standardise(train, val, test)``, which fits on the training part only.
    """
    d = _sklearn_datasets("breast_cancer").load_breast_cancer()
    x = d.data.astype(np.float32)
    if standardise:
        x = Standardise.fit(x).apply(x)
    return ArrayDataset(np.ascontiguousarray(x), d.target.astype(np.int64))


# --------------------------------------------------------------------------- synthetic MRI

_CHUNK = 64  # images generated per vectorised step; also the unit of the per-seed stream


def synthetic_lesions(n, size=64, seed=0, *, target="mask", max_lesions=3,
                      empty_fraction=0.25):
    """``n`` procedural MRI-like axial brain slices, (n, 1, size, size) float32 in [0, 1].

    Each slice: an elliptical head of random size, position and tilt (scalp, skull, CSF,
    folded cortex, white matter with smooth texture, two ventricles, deep grey matter),
    a smooth multiplicative bias field and Rician noise. With probability
    ``1 - empty_fraction`` it carries 1..``max_lesions`` lesions: irregular blobs (perturbed
    ellipses) inside the brain tissue, all bright or all dark in one slice, with contrast a
    few times the noise.

    ``target="mask"``: y is float32 (n, 1, size, size), 1 exactly on the pixels of which
    half or more is lesion. ``target="label"``: y is int64 (n,), 1 where the slice has any
    lesion pixel (classification; the label-0 slices are the normals of anomaly detection).

    Deterministic per ``(seed, size)``, and the first k slices do not depend on ``n``:
    ``synthetic_lesions(100, seed=0)`` starts with ``synthetic_lesions(10, seed=0)``. Use
    different seeds for independent training and test sets.
    """
    n = _count(n, "n", 0)
    size = _count(size, "size", 16)
    seed = _count(seed, "seed", 0)
    max_lesions = _count(max_lesions, "max_lesions", 1)
    if not 0.0 <= float(empty_fraction) <= 1.0:
        raise ValueError(f"empty_fraction must lie in [0, 1], got {empty_fraction!r}")
    if target not in ("mask", "label"):
        raise ValueError(f"target must be 'mask' or 'label', got {target!r}")
    images = np.empty((n, 1, size, size), np.float32)
    masks = np.empty((n, 1, size, size), np.float32)
    for c in range(-(-n // _CHUNK)):
        rng = np.random.default_rng([seed, c])
        img, msk = _lesion_slices(rng, _CHUNK, size, max_lesions, float(empty_fraction))
        take = min(_CHUNK, n - c * _CHUNK)
        images[c * _CHUNK:c * _CHUNK + take, 0] = img[:take]
        masks[c * _CHUNK:c * _CHUNK + take, 0] = msk[:take]
    if target == "label":
        return ArrayDataset(images, masks.reshape(n, -1).any(axis=1).astype(np.int64))
    return ArrayDataset(images, masks)


def _count(v, name, minimum):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return int(v)


def _smooth_fields(rng, b, size, coarse, width):
    """b random smooth fields (b, size, size) in [-1, 1]: white noise on a coarse grid
    spread by a Gaussian kernel (separable, so two small matrix products per field)."""
    u = (np.arange(size) + 0.5) / size * 2 - 1
    c = np.linspace(-1.2, 1.2, coarse)
    a = np.exp(-0.5 * ((u[:, None] - c[None, :]) / width) ** 2)
    a /= a.sum(axis=1, keepdims=True)
    f = a @ rng.standard_normal((b, coarse, coarse)) @ a.T
    f /= np.abs(f).max(axis=(1, 2), keepdims=True)
    return f


def _lesion_slices(rng, b, size, max_lesions, empty_fraction):
    f32 = np.float32
    px = 2.0 / size  # one pixel in the [-1, 1] frame
    u = ((np.arange(size) + 0.5) / size * 2 - 1).astype(f32)

    def soft(d):
        # Coverage of a pixel by a shape whose signed distance (inside > 0) is d:
        # antialiased edges, as partial volume blurs real ones.
        return np.clip(0.5 + d / px, 0.0, 1.0, dtype=f32)

    def col(v):
        return np.asarray(v, f32).reshape(-1, 1, 1)

    # Head pose: centre, semi-axes and tilt; X, Y are coordinates in the head's frame.
    cx, cy = rng.uniform(-0.06, 0.06, (2, b))
    ax, ay = rng.uniform(0.68, 0.82, b), rng.uniform(0.80, 0.93, b)
    tilt = rng.uniform(-0.3, 0.3, b)
    du, dv = u[None, None, :] - col(cx), u[None, :, None] - col(cy)
    cos, sin = col(np.cos(tilt)), col(np.sin(tilt))
    X, Y = cos * du + sin * dv, -sin * du + cos * dv
    rho = np.sqrt((X / col(ax)) ** 2 + (Y / col(ay)) ** 2)
    phi = np.arctan2(Y / col(ay), X / col(ax))
    scale = col((ax + ay) / 2)  # turns a difference in rho into a distance

    # Nested layers from the outside in: scalp, skull, CSF, then the folded cortex.
    r_skull = 1 - rng.uniform(0.05, 0.07, b)
    r_csf = r_skull - rng.uniform(0.035, 0.05, b)
    r_brain = r_csf - rng.uniform(0.025, 0.04, b)
    folds = rng.integers(14, 22, b)
    gyri = np.sin(col(folds) * phi + col(rng.uniform(0, 2 * np.pi, b)))
    gyri += 0.5 * np.sin(col(2 * folds + 3) * phi + col(rng.uniform(0, 2 * np.pi, b)))
    folding = 0.016 * gyri
    head = soft((1 - rho) * scale)
    skull = soft((col(r_skull) - rho) * scale)
    csf = soft((col(r_csf) - rho) * scale)
    brain = soft((col(r_brain) + folding - rho) * scale)
    white = soft((col(r_brain) - 0.08 + 2.5 * folding - rho) * scale)

    # Tissue: white matter with smooth texture, darker cortical grey matter, two
    # ventricles (CSF) and deep grey nuclei beside them.
    wm = 0.58 + 0.05 * _smooth_fields(rng, b, size, 12, 0.1).astype(f32)
    tissue = wm - 0.13 * (1 - white)
    vent = np.zeros((b, size, size), f32)
    vx, vy = rng.uniform(0.09, 0.14, b), rng.uniform(-0.06, 0.04, b)
    vw, vh = rng.uniform(0.045, 0.08, b), rng.uniform(0.16, 0.24, b)
    splay = rng.uniform(0.15, 0.4, b)
    for side in (-1.0, 1.0):
        vent = np.maximum(vent, _ellipse(X, Y, side * vx, vy, vw, vh, side * splay, soft, col))
    deep = np.zeros_like(vent)
    for side in (-1.0, 1.0):
        deep = np.maximum(deep, _ellipse(X, Y, side * (vx + 0.17), vy + 0.03, 0.07, 0.11,
                                         -side * 0.3, soft, col))
    tissue -= 0.07 * deep
    CSF = 0.16
    tissue += (CSF - tissue) * vent
    image = (0.72 * head + (0.08 - 0.72) * skull + (CSF - 0.08) * csf
             + (tissue - CSF) * brain)

    # Lesions: perturbed ellipses inside the tissue, never in ventricles or outside the
    # brain (the allowed region cuts them, so the mask stays exactly where intensity moved).
    k = max_lesions
    count = np.where(rng.random(b) < empty_fraction, 0, rng.integers(1, k + 1, b))
    active = np.arange(k)[None, :] < count[:, None]  # (b, k)
    where = rng.uniform(0, 2 * np.pi, (b, k))
    reach = rng.uniform(0.35, 1.0, (b, k)) * (r_brain[:, None] - 0.12)
    lx, ly = reach * np.cos(where) * ax[:, None], reach * np.sin(where) * ay[:, None]
    radius = rng.uniform(0.07, 0.16, (b, k))
    elong = rng.uniform(0.6, 1.0, (b, k))
    turn = rng.uniform(0, np.pi, (b, k))
    wobble = rng.uniform(0, 0.16, (b, k, 3)) / np.arange(1, 4)
    phase = rng.uniform(0, 2 * np.pi, (b, k, 3))
    allowed = brain * (1 - vent)

    def per_lesion(v):
        return np.asarray(v, f32).reshape(b, k, 1, 1)

    LX, LY = X[:, None] - per_lesion(lx), Y[:, None] - per_lesion(ly)
    c, s = per_lesion(np.cos(turn)), per_lesion(np.sin(turn))
    P, Q = c * LX + s * LY, (-s * LX + c * LY) / per_lesion(elong)
    dist, ang = np.sqrt(P * P + Q * Q), np.arctan2(Q, P)
    edge = np.ones_like(ang)
    for h in range(3):
        edge += per_lesion(wobble[..., h]) * np.cos((h + 2) * ang + per_lesion(phase[..., h]))
    cover = soft(per_lesion(radius) * edge - dist) * allowed[:, None]
    cover *= per_lesion(active)
    bright = rng.random(b) < 0.5
    magnitude = np.where(bright[:, None], rng.uniform(0.22, 0.36, (b, k)),
                         rng.uniform(0.2, 0.3, (b, k)))
    lesion = (cover * per_lesion(magnitude)).max(axis=1)
    image += col(np.where(bright, 1.0, -1.0)) * lesion
    mask = (cover.max(axis=1) >= 0.5).astype(f32)

    # Acquisition: smooth bias field, gain, Rician noise (magnitude of complex Gaussian).
    bias = 1 + 0.12 * _smooth_fields(rng, b, size, 5, 0.35).astype(f32)
    image *= bias * col(rng.uniform(0.9, 1.05, b))
    sigma = col(rng.uniform(0.015, 0.04, b))
    re = image + sigma * rng.standard_normal((b, size, size), dtype=f32)
    im = sigma * rng.standard_normal((b, size, size), dtype=f32)
    image = np.sqrt(re * re + im * im)
    np.clip(image, 0.0, 1.0, out=image)
    return image, mask


def _ellipse(X, Y, cx, cy, w, h, angle, soft, col):
    dx, dy = X - col(cx), Y - col(cy)
    c, s = col(np.cos(angle)), col(np.sin(angle))
    p, q = (c * dx + s * dy) / col(w), (-s * dx + c * dy) / col(h)
    return soft((1 - np.sqrt(p * p + q * q)) * col(np.minimum(w, h)))


# --------------------------------------------------------------------------- MedMNIST

_SPLITS = ("train", "val", "test")


class DatasetFileError(FileNotFoundError, ValueError):
    """A data file that is not there (both a FileNotFoundError and a ValueError)."""


def medmnist_npz(path, split="train"):
    """One split of a MedMNIST ``.npz`` file (keys ``{train,val,test}_{images,labels}``).

    Images uint8 (N, H, W) (grey), (N, H, W, 3) (colour) or (N, D, H, W) (the 3-D sets)
    become float32 in [0, 1] of shape (N, 1, H, W), (N, 3, H, W) or (N, 1, D, H, W).
    Labels (N, 1) become int64 (N,); multi-label (N, L) stays (N, L) as int64. The file is
    read without pickle; a missing file, a missing key or a file that is not such an
    archive raises ValueError naming the file.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetFileError(f"medmnist_npz: no file at {path!r}")
    import zipfile  # only here: keeps `import pyfast` light
    import zlib
    keys = (f"{split}_images", f"{split}_labels")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"medmnist_npz: {path!r} holds a single .npy array, not a "
                             f"MedMNIST .npz archive")
        with archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise ValueError(f"medmnist_npz: {path!r} has no {' or '.join(missing)} (it "
                                 f"holds {sorted(archive.files)}); is it a MedMNIST file?")
            images, labels = archive[keys[0]], archive[keys[1]]
    except ValueError as e:
        if str(e).startswith("medmnist_npz"):
            raise
        # np.load's own complaints: pickled data, a file that is neither .npy nor .npz.
        raise ValueError(f"medmnist_npz: cannot read {path!r} as an .npz archive: {e}") from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"medmnist_npz: {path!r} is not a readable .npz archive "
                         f"(truncated, corrupt or not NumPy's format): {e}") from e
    return ArrayDataset(_medmnist_images(images, path, keys[0]),
                        _medmnist_labels(labels, len(images), path, keys[1]))


def _medmnist_images(images, path, key):
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = np.moveaxis(images, -1, 1)  # NHWC -> NCHW
    elif images.ndim in (3, 4):
        images = images[:, None]
    else:
        raise ValueError(f"medmnist_npz: {key} in {path!r} must be (N, H, W), (N, H, W, 3) or "
                         f"(N, D, H, W), got shape {images.shape}")
    if images.dtype == np.uint8:
        out = np.ascontiguousarray(images, dtype=np.float32)
        out /= 255
        return out
    if np.issubdtype(images.dtype, np.floating):
        return np.ascontiguousarray(images, dtype=np.float32)
    raise ValueError(f"medmnist_npz: {key} in {path!r} must be uint8 (or float in [0, 1]), "
                     f"got {images.dtype}")


def _medmnist_labels(labels, n, path, key):
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        if not (np.issubdtype(labels.dtype, np.floating)
                and np.array_equal(labels, np.round(labels))):
            raise ValueError(f"medmnist_npz: {key} in {path!r} must hold integer labels, got "
                             f"{labels.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2) or len(labels) != n:
        raise ValueError(f"medmnist_npz: {key} in {path!r} must have shape ({n},), ({n}, 1) or "
                         f"({n}, L) to match the {n} images, got {labels.shape}")
    return np.ascontiguousarray(labels, dtype=np.int64)
