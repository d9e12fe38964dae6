"""What ``pyfast demo`` and ``pyfast train`` write: PNG images (a minimal encoder on zlib,
so the core needs no imaging library), image grids, segmentation overlays, JSON, and
training curves (matplotlib when it is installed, otherwise skipped with a note).

Every file is written atomically: bytes go to a temporary file in the target folder, are
fsynced, and the temporary file is renamed over the target, so a reader (or a crash) never
sees half a file.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
import tempfile
import zlib

import numpy as np

from pyfast.io import fsync_directory

__all__ = ["write_bytes_atomic", "write_json", "encode_png", "write_png", "image_grid",
           "overlay", "plot_curves"]


def write_bytes_atomic(path, data):
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's file is private; give it a normal mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)
    return path


def write_json(path, document):
    text = json.dumps(document, indent=1, default=_json_default) + "\n"
    return write_bytes_atomic(path, text.encode())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------------------- PNG

def _chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(image):
    """PNG bytes of ``image``: uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; floats
    are taken as [0, 1] and clipped."""
    a = np.asarray(image)
    if a.dtype.kind == "f":
        a = np.round(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0)
    a = np.ascontiguousarray(a, dtype=np.uint8)
    if a.ndim == 2:
        colour = 0
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        colour = 2 if a.shape[2] == 3 else 6
    else:
        raise ValueError(f"encode_png: expected an (H, W), (H, W, 3) or (H, W, 4) image, got "
                         f"shape {a.shape}")
    h, w = a.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"encode_png: the image is empty, shape {a.shape}")
    rows = a.reshape(h, -1)
    raw = np.zeros((h, rows.shape[1] + 1), np.uint8)  # filter byte 0 (none) per row
    raw[:, 1:] = rows
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b""))


def write_png(path, image):
    return write_bytes_atomic(path, encode_png(image))


def _to_unit(images, value_range):
    lo, hi = value_range
    return np.clip((np.asarray(images, np.float32) - lo) / (hi - lo), 0.0, 1.0)


def image_grid(images, *, columns=None, scale=1, pad=1, value_range=(0.0, 1.0), background=0.0):
    """Tile (N, C, H, W) images (C 1 or 3, values in ``value_range``) into one (H', W')
    or (H', W', 3) float image in [0, 1], each enlarged ``scale`` times (nearest)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"image_grid: expected (N, 1 or 3, H, W) images, got shape {x.shape}")
    x = _to_unit(x, value_range)
    n, c, h, w = x.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    if scale > 1:
        x = x.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    grid = np.full((c, rows * (h + pad) + pad, columns * (w + pad) + pad), background,
                   np.float32)
    for i in range(n):
        r, q = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def overlay(images, masks, predictions=None, *, alpha=0.45):
    """Colour segmentation results on grey images (N, 1, H, W): true mask in green,
    prediction in red, their overlap yellow. Returns (N, 3, H, W) in [0, 1]."""
    grey = np.clip(np.asarray(images, np.float32)[:, :1], 0.0, 1.0)
    rgb = np.repeat(grey, 3, axis=1)
    truth = np.asarray(masks, np.float32)[:, :1] > 0.5
    pred = np.zeros_like(truth) if predictions is None else \
        np.asarray(predictions, np.float32)[:, :1] > 0.5
    colour = np.zeros_like(rgb)
    colour[:, 0:1][pred] = 1.0           # red: predicted
    colour[:, 1:2][truth] = 1.0          # green: true (red + green = yellow: both)
    tinted = truth | pred
    weight = np.where(np.repeat(tinted, 3, axis=1), alpha, 0.0).astype(np.float32)
    return rgb * (1 - weight) + colour * weight


# ---------------------------------------------------------------------------- curves

def plot_curves(path, panels, title=None):
    """Training curves with matplotlib: ``panels`` maps a panel title to {label: values}
    (one value per epoch). Returns None when written, else why not (matplotlib missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib), so no curve plots"
    panels = {k: v for k, v in panels.items() if any(len(s) for s in v.values())}
    if not panels:
        return "nothing to plot"
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        for label, values in series.items():
            if len(values):
                ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return None
