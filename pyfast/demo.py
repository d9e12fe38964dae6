"""``pyfast demo``: four medical-imaging jobs trained from scratch on built-in data, each with
per-epoch validation, a progress bar, a metric with a target, and pictures.

- classification: ResNet-18 (32x32 variant, grey input) on the 8x8 handwritten digits;
  target >= 95% validation accuracy.
- segmentation: U-Net on synthetic MRI-like brain slices with lesions; validation Dice
  on slices from another seed (never seen in training) >= 0.85.
- anomaly: a denoising convolutional autoencoder trained on lesion-free slices only;
  the reconstruction error (largest over 5x5 windows) scores held-out slices, and the
  AUROC of lesion vs no lesion is reported (target >= 0.8).
- synthesis: a DCGAN on the digits (upsampled to 16x16) writes a grid of samples; when the
  classification task ran too, its ResNet scores how digit-like the samples are.

Everything is seeded (``seed``): the same seed, machine and thread count give the same
numbers. The sizes are chosen to finish in a few minutes on two CPU cores; ``quick`` runs
a smaller version in about a minute (its numbers are not held to the targets).
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time

import numpy as np

import pyfast as pf
from pyfast import _outputs
from pyfast._arrays import to_device, to_host
from pyfast.nn import functional as F
from pyfast.train import Callback

__all__ = ["TASKS", "Result", "run", "format_table", "Throughput", "EpochLines"]

TASKS = ("classification", "segmentation", "anomaly", "synthesis")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one demo scale."""
    # classification (digits)
    cls_epochs: int
    cls_train: int | None          # None: the whole 80% split
    # segmentation (synthetic lesions, 64x64)
    seg_train: int
    seg_val: int
    seg_epochs: int
    seg_base: int
    # anomaly (synthetic lesions, 64x64)
    ae_train: int
    ae_test: int
    ae_epochs: int
    # synthesis (digits, 16x16)
    gan_epochs: int
    gan_train: int | None
    enforce_targets: bool


SCALES = {
    "full": Settings(cls_epochs=4, cls_train=None, seg_train=800, seg_val=200, seg_epochs=6,
                     seg_base=16, ae_train=1000, ae_test=400, ae_epochs=20, gan_epochs=25,
                     gan_train=None, enforce_targets=True),
    "quick": Settings(cls_epochs=3, cls_train=None, seg_train=400, seg_val=100, seg_epochs=4,
                      seg_base=16, ae_train=800, ae_test=200, ae_epochs=15, gan_epochs=10,
                      gan_train=None, enforce_targets=False),
    # For tests: a few batches per task, seconds in all.
    "smoke": Settings(cls_epochs=1, cls_train=64, seg_train=16, seg_val=8, seg_epochs=1,
                      seg_base=4, ae_train=16, ae_test=16, ae_epochs=1, gan_epochs=1,
                      gan_train=64, enforce_targets=False),
}


@dataclasses.dataclass
class Result:
    task: str
    model: str
    data: str
    metric: str
    value: float
    target: float | None           # the value must reach at least this (None: reported only)
    seconds: float                 # the whole task: data, training, evaluation, pictures
    images_per_s: float            # training throughput (training batches only)
    files: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    history: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def met(self):
        return None if self.target is None else bool(self.value >= self.target)


class Throughput(Callback):
    """Training images per second of a fit/fit_gan run, counting only the time from an
    epoch's start to its last training batch (validation is not throughput)."""

    def __init__(self):
        self.images, self.seconds = 0, 0.0

    def on_epoch_begin(self, run):
        self._start = self._last = time.perf_counter()

    def on_batch_end(self, run, logs):
        self.images += int(logs.get("size", 0))
        self._last = time.perf_counter()

    def on_epoch_end(self, run, logs):
        self.seconds += self._last - self._start

    @property
    def rate(self):
        return self.images / self.seconds if self.seconds > 0 else 0.0


class EpochLines(Callback):
    """One line per epoch on ``stream`` when the progress bar does not show (not a
    terminal), so logs and pipes still see training advance."""

    def __init__(self, label, stream=None, keys=None):
        self.label, self.stream, self.keys = label, stream or sys.stderr, keys
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = not (callable(isatty) and isatty())

    def on_epoch_end(self, run, logs):
        if not self.enabled:
            return
        parts = [f"{self.label} epoch {run.epoch}/{run.epochs}"]
        for key, value in logs.items():
            if key in ("lr", "time") or (self.keys and key not in self.keys):
                continue
            if isinstance(value, float) and math.isfinite(value):
                parts.append(f"{key} {value:.4g}")
        parts.append(f"{logs.get('time', 0.0):.1f}s")
        print("  ".join(parts), file=self.stream, flush=True)


class _Context:
    def __init__(self, out, settings, seed, device, log, progress):
        self.out, self.settings, self.seed, self.device = out, settings, seed, device
        self.log, self.progress = log, progress
        self.classifier = None       # the digits ResNet, for scoring the GAN's samples

    def path(self, name):
        return os.path.join(self.out, name)

    def loader(self, dataset, batch_size, shuffle=False, transform=None):
        return pf.data.DataLoader(dataset, batch_size, shuffle=shuffle, seed=self.seed,
                                  transform=transform, device=self.device)

    def model(self, module):
        return module.to(self.device) if self.device != "cpu" else module

    def fit(self, label, result, fit, *args, keys=None, **options):
        """``fit(*args, **options)`` (pf.train.fit or fit_gan) with the demo's progress bar,
        epoch lines and throughput meter; the images per second and the history go to
        ``result``."""
        meter = Throughput()
        history = fit(*args, progress=self.progress,
                      callbacks=[meter, EpochLines(label, keys=keys)], **options)
        result.images_per_s = meter.rate
        result.history = history
        return history

    def curves(self, name, panels, title, result):
        path = self.path(name)
        why_not = _outputs.plot_curves(path, panels, title)
        if why_not is None:
            result.files.append(path)
        elif why_not not in result.notes:
            result.notes.append(why_not)


def adamw_one_cycle(model, lr, weight_decay, epochs, train_loader):
    """AdamW under a one-cycle schedule peaking at ``lr`` (stepped per batch): the recipe of
    the demo's tasks and of ``pyfast train``."""
    optimizer = pf.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = pf.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                 steps_per_epoch=len(train_loader))
    return optimizer, scheduler


def _epochs(n):
    return f"{n} epoch{'s' if n != 1 else ''}"


def predict(model, x, batch_size=256):
    """Model outputs for the array x (eval mode, no gradients), as numpy."""
    model.eval()
    outs = []
    with pf.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(to_host(model(x[i:i + batch_size])))
    model.train()
    return np.concatenate(outs)


def _digits(ctx):
    from pyfast.data import datasets
    return datasets.digits()


# ---------------------------------------------------------------------------- tasks

def _classification(ctx):
    s = ctx.settings
    result = Result("classification", "resnet18(small_input, in_channels=1)", "digits 8x8",
                    "val accuracy", math.nan, 0.95 if s.enforce_targets else None, 0.0, 0.0)
    train, val = _digits(ctx).split((0.8, 0.2), seed=ctx.seed, stratify=True)
    if s.cls_train is not None:
        train = train.subset(np.arange(min(s.cls_train, len(train))))
    train_loader = ctx.loader(train, 64, shuffle=True)
    val_loader = ctx.loader(val, 256)
    model = ctx.model(pf.models.resnet18(num_classes=10, in_channels=1, small_input=True))
    optimizer, scheduler = adamw_one_cycle(model, 3e-3, 1e-4, s.cls_epochs, train_loader)
    ctx.log(f"classification: ResNet-18 on {len(train)} digits, {len(val)} held out, "
            f"{_epochs(s.cls_epochs)}")
    history = ctx.fit("classification", result, pf.train.fit, model, train_loader,
                      loss_fn=F.cross_entropy, optimizer=optimizer, epochs=s.cls_epochs,
                      val_loader=val_loader, metrics=("accuracy",), scheduler=scheduler)
    result.value = history["val_accuracy"][-1]
    ctx.classifier = model
    ctx.curves("classification_curves.png",
               {"loss": {"train": history["loss"], "validation": history["val_loss"]},
                "accuracy": {"train": history["accuracy"],
                             "validation": history["val_accuracy"]}},
               "ResNet-18 on digits", result)
    return result


def _segmentation(ctx):
    from pyfast.data import datasets
    from pyfast.data import transforms as T

    s = ctx.settings
    result = Result("segmentation", f"UNet(base_channels={s.seg_base}, depth=3)",
                    "synthetic lesions 64x64", "val Dice", math.nan,
                    0.85 if s.enforce_targets else None, 0.0, 0.0)
    # Training and validation slices come from different seeds: different heads, lesions
    # and noise, so the Dice is measured on images the model has never seen.
    train = datasets.synthetic_lesions(s.seg_train, size=64, seed=2 * ctx.seed + 1)
    val = datasets.synthetic_lesions(s.seg_val, size=64, seed=2 * ctx.seed + 2)
    train_loader = ctx.loader(train, 16, shuffle=True,
                              transform=T.Compose([T.RandomHorizontalFlip()]))
    val_loader = ctx.loader(val, 50)
    model = ctx.model(pf.models.UNet(1, 1, base_channels=s.seg_base, depth=3))
    optimizer, scheduler = adamw_one_cycle(model, 3e-3, 1e-4, s.seg_epochs, train_loader)

    def loss_fn(logits, masks):
        # BCE sharpens every pixel; Dice keeps the small lesions from drowning in background.
        return F.binary_cross_entropy_with_logits(logits, masks) + F.dice_loss(logits, masks)

    ctx.log(f"segmentation: U-Net on {len(train)} slices, {len(val)} held-out slices, "
            f"{_epochs(s.seg_epochs)}")
    history = ctx.fit("segmentation", result, pf.train.fit, model, train_loader,
                      loss_fn=loss_fn, optimizer=optimizer, epochs=s.seg_epochs,
                      val_loader=val_loader, metrics=("dice",), scheduler=scheduler)
    result.value = history["val_dice"][-1]

    # Pictures: 12 held-out slices with lesions (or whatever there is), each shown plain
    # and with the true mask (green), the prediction (red) and their overlap (yellow).
    order = np.argsort(-val.y.reshape(len(val), -1).sum(axis=1), kind="stable")[:12]
    x, masks = val.x[order], val.y[order]
    pred = predict(model, to_device(x, ctx.device)) > 0
    pairs = np.stack([np.repeat(x, 3, axis=1), _outputs.overlay(x, masks, pred)], axis=1)
    path = ctx.path("segmentation_overlays.png")
    _outputs.write_png(path, _outputs.image_grid(pairs.reshape(-1, 3, 64, 64), columns=6,
                                                 scale=2, pad=2))
    result.files.append(path)
    ctx.curves("segmentation_curves.png",
               {"loss (BCE + Dice)": {"train": history["loss"],
                                      "validation": history["val_loss"]},
                "Dice": {"train": history["dice"], "validation": history["val_dice"]}},
               "U-Net on synthetic lesions", result)
    return result


def _anomaly(ctx):
    from pyfast.data import datasets

    s = ctx.settings
    result = Result("anomaly", "ConvAutoencoder(latent_channels=16, noise_std=0.05)",
                    "synthetic lesions 64x64", "AUROC", math.nan,
                    0.8 if s.enforce_targets else None, 0.0, 0.0)
    # Normal data only for training (no slice has a lesion); the test set is the usual mix.
    normal = datasets.synthetic_lesions(s.ae_train, size=64, seed=2 * ctx.seed + 101,
                                        empty_fraction=1.0)
    test = datasets.synthetic_lesions(s.ae_test, size=64, seed=2 * ctx.seed + 102)
    labels = test.y.reshape(len(test), -1).any(axis=1).astype(np.int64)   # 1: has a lesion
    train_loader = ctx.loader(pf.data.ArrayDataset(normal.x), 32, shuffle=True)
    model = ctx.model(pf.models.ConvAutoencoder(1, latent_channels=16, image_size=64,
                                                noise_std=0.05))
    optimizer, scheduler = adamw_one_cycle(model, 2e-3, 1e-5, s.ae_epochs, train_loader)
    ctx.log(f"anomaly: denoising autoencoder on {len(normal)} lesion-free slices, scored on "
            f"{len(test)} held-out slices ({int(labels.sum())} with lesions), "
            f"{_epochs(s.ae_epochs)}")
    history = ctx.fit("anomaly", result, pf.train.fit, model, train_loader, loss_fn=F.mse_loss,
                      optimizer=optimizer, epochs=s.ae_epochs, metrics=(), scheduler=scheduler)
    x = to_device(test.x, ctx.device)
    scores = pf.models.anomaly_scores(model, x, pool=5)
    whole = pf.models.anomaly_scores(model, x)
    result.value = pf.train.metrics.auroc(scores, labels)
    result.extra["auroc_whole_image_mse"] = pf.train.metrics.auroc(whole, labels)

    # Pictures: the 6 highest- and 6 lowest-scoring test slices: input, reconstruction,
    # and the squared residual (brighter = worse reconstructed), with the true lesion mask.
    ranked = np.argsort(-scores, kind="stable")
    pick = np.concatenate([ranked[:6], ranked[-6:]])
    inputs, masks = test.x[pick], test.y[pick]
    recon = predict(model, to_device(inputs, ctx.device))
    residual = (recon - inputs) ** 2
    residual = np.clip(residual / max(float(np.percentile(residual, 99.5)), 1e-6), 0, 1)
    tiles = np.stack([np.repeat(inputs, 3, axis=1), np.repeat(recon, 3, axis=1),
                      _heat(residual), _outputs.overlay(inputs, masks)], axis=1)
    path = ctx.path("anomaly_examples.png")
    _outputs.write_png(path, _outputs.image_grid(tiles.reshape(-1, 3, 64, 64), columns=8,
                                                 scale=2, pad=2))
    result.files.append(path)
    result.notes.append("anomaly_examples.png: the 6 most and 6 least anomalous test slices; "
                        "per slice: input, reconstruction, squared residual, true lesion "
                        "(green)")
    ctx.curves("anomaly_curves.png", {"reconstruction MSE": {"train": history["loss"]}},
               "Denoising autoencoder", result)
    return result


def _heat(v):
    """(N, 1, H, W) in [0, 1] as a black-red-yellow-white heat map (N, 3, H, W)."""
    v = np.clip(v[:, :1], 0.0, 1.0)
    return np.concatenate([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1),
                           np.clip(3 * v - 2, 0, 1)], axis=1)


def _synthesis(ctx):
    s = ctx.settings
    result = Result("synthesis", "DCGAN(latent_dim=64, image_size=16, features=32)",
                    "digits 16x16", "D(fake)", math.nan, None, 0.0, 0.0)
    digits = _digits(ctx).x
    if s.gan_train is not None:
        digits = digits[:s.gan_train]
    with pf.no_grad():   # 8x8 -> 16x16 (bilinear), [0, 1] -> [-1, 1] (tanh's range)
        images = F.interpolate(digits, scale_factor=2, mode="bilinear").data * 2.0 - 1.0
    loader = ctx.loader(pf.data.ArrayDataset(np.ascontiguousarray(images, np.float32)), 64,
                        shuffle=True)
    gan = ctx.model(pf.models.DCGAN(latent_dim=64, image_channels=1, image_size=16,
                                    features=32))
    ctx.log(f"synthesis: DCGAN on {len(images)} digits, {_epochs(s.gan_epochs)}")
    history = ctx.fit("synthesis", result, pf.train.fit_gan, gan, loader,
                      keys=("d_loss", "g_loss", "d_real", "d_fake"), epochs=s.gan_epochs,
                      lr=2e-4, betas=(0.5, 0.999))
    result.value = history["d_fake"][-1]
    samples = gan.sample(64, seed=ctx.seed)
    path = ctx.path("dcgan_samples.png")
    _outputs.write_png(path, _outputs.image_grid(samples, columns=8, scale=4, pad=2,
                                                 value_range=(-1.0, 1.0)))
    result.files.append(path)
    if ctx.classifier is not None:
        # The digits ResNet judges the samples (brought back to 8x8 in [0, 1]): the mean
        # probability of its chosen class, and how many of the 10 digits appear.
        small = ((samples + 1.0) / 2.0).reshape(64, 1, 8, 2, 8, 2).mean(axis=(3, 5))
        probs = _softmax(predict(ctx.classifier, to_device(small.astype(np.float32),
                                                           ctx.device)))
        result.metric, result.value = "digit confidence", float(probs.max(axis=1).mean())
        result.extra["digit_classes_seen"] = int(len(np.unique(probs.argmax(axis=1))))
        result.notes.append(f"the digits ResNet recognises {result.extra['digit_classes_seen']}"
                            f" of 10 digit classes among 64 samples")
    ctx.curves("dcgan_curves.png",
               {"loss": {"discriminator": history["d_loss"], "generator": history["g_loss"]},
                "D output": {"D(real)": history["d_real"], "D(fake)": history["d_fake"]}},
               "DCGAN on digits", result)
    return result


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


_RUNNERS = {"classification": _classification, "segmentation": _segmentation,
            "anomaly": _anomaly, "synthesis": _synthesis}


# ---------------------------------------------------------------------------- driver

def run(out, *, scale="full", tasks=TASKS, seed=0, device="cpu", log=None, progress=True):
    """Run the demo ``tasks`` in order, writing pictures and ``summary.json`` /
    ``summary.md`` to the folder ``out`` (created if needed). Returns the Results."""
    settings = SCALES[scale]
    log = log or (lambda message: print(message, flush=True))
    os.makedirs(out, exist_ok=True)
    ctx = _Context(out, settings, seed, device, log, progress)
    results = []
    for task in tasks:
        pf.manual_seed(seed)   # each task starts from the seed, whichever ran before it
        start = time.perf_counter()
        result = _RUNNERS[task](ctx)
        result.seconds = time.perf_counter() - start
        results.append(result)
        log(f"{task}: {result.metric} {result.value:.4f}"
            + (f" (target >= {result.target})" if result.target is not None else "")
            + f", {result.seconds:.1f} s\n")
    write_summary(out, results, scale=scale, seed=seed, device=device)
    return results


def format_table(results, markdown=False):
    header = ["task", "model", "data", "metric", "value", "target", "time", "images/s"]
    rows = []
    for r in results:
        target = "-" if r.target is None else f">= {r.target:g} " + ("ok" if r.met else "MISSED")
        rows.append([r.task, r.model, r.data, r.metric, f"{r.value:.4f}", target,
                     f"{r.seconds:.1f} s", f"{r.images_per_s:.0f}"])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def write_summary(out, results, *, scale, seed, device):
    from pyfast.bench import cpu_model, usable_cores

    document = {
        "schema": "pyfast-demo/1",
        "scale": scale, "seed": seed, "device": device,
        "machine": {"cpu": cpu_model(), "cores": usable_cores(), "threads": pf.get_num_threads(),
                    "python": platform.python_version(), "pyfast": pf.__version__,
                    "numpy": np.__version__},
        "results": [{**{k: v for k, v in dataclasses.asdict(r).items() if k != "history"},
                     "met": r.met,
                     "history": {k: [float(x) for x in v] for k, v in r.history.items()}}
                    for r in results],
    }
    _outputs.write_json(os.path.join(out, "summary.json"), document)
    text = (f"# pyfast demo ({scale}, seed {seed}, {device}, {pf.get_num_threads()} threads)\n\n"
            + format_table(results, markdown=True) + "\n")
    for r in results:
        for note in r.notes:
            text += f"\n- {r.task}: {note}"
    _outputs.write_bytes_atomic(os.path.join(out, "summary.md"), (text + "\n").encode())
