"""``pyfast train MODEL --data DATASET``: train any pf.models architecture on a built-in data
set (or a MedMNIST ``.npz`` file) with validation, a progress bar, and results in ``--out``.

The data decides the task: class labels make a classifier (ResNet, DenseNet), lesion masks
a segmenter (U-Net), any images or features an autoencoder (reconstruction; with
``--normal-class`` an anomaly detector scored by AUROC), any images a DCGAN. The model is
adapted to the data (input channels, classes, image size; images whose size a model cannot
take are zero-padded to the next size it can), and the choices are printed.

Usage errors (an unknown model or data set, a file that is not there, a model that cannot
use the data, a bad number) raise ``UsageError`` with one line saying what is wrong.

``--nproc N`` trains data-parallel on N ranks: the command starts itself again under the
installed ``mpiexec`` (each rank with cores/N threads unless --threads says otherwise), and
each rank, seeing it was launched by MPI, joins the job (pf.distributed.init), wraps the
model in DataParallel and reads its shard through a DistributedSampler. ``--batch-size``
stays the global batch (each rank takes batch/N), so a run on N ranks follows the same
optimisation as one process. Rank 0 prints and writes the results. Running
``mpiexec -n N pyfast train ...`` directly does the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import subprocess
import sys
import time

import numpy as np

from pyfast._arrays import to_device, to_host
from pyfast.cli_common import (CommandFailed, UsageError, add_kernel_options, check_device,
                               positive_float, positive_int)

__all__ = ["MODELS", "DATASETS", "add_parser", "run", "UsageError", "CommandFailed"]

CLASSIFIERS = ("resnet18", "resnet34", "resnet50", "densenet121", "densenet169")
MODELS = CLASSIFIERS + ("unet", "autoencoder", "conv-autoencoder", "dcgan")
DATASETS = ("digits", "breast-cancer", "lesions", "PATH.npz")
_ALIASES = {"conv_autoencoder": "conv-autoencoder", "convautoencoder": "conv-autoencoder",
            "breast_cancer": "breast-cancer", "synthetic-lesions": "lesions",
            "synthetic_lesions": "lesions"}


@dataclasses.dataclass
class Data:
    name: str
    train: object                  # ArrayDataset
    val: object
    kind: str                      # "images" or "tabular"
    labels: str                    # "classes", "masks"
    num_classes: int = 0

    @property
    def shape(self):
        return tuple(self.train.x.shape[1:])


def add_parser(commands):
    p = commands.add_parser(
        "train", help="train a model on built-in data (or a MedMNIST .npz file)",
        description="Train a pf.models architecture with per-epoch validation. The data set "
                    "decides the task: class labels train a classifier, lesion masks a "
                    "segmenter, any data an autoencoder or a DCGAN. Weights, history, curves "
                    "and pictures go to --out.")
    p.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--data", required=True, metavar="DATASET",
                   help="digits, breast-cancer, lesions (synthetic MRI slices with lesion "
                        "masks) or the path of a MedMNIST .npz file")
    p.add_argument("--epochs", type=positive_int, default=10, metavar="N",
                   help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="batch size (default: 64; 16 for unet)")
    p.add_argument("--lr", type=positive_float, default=None, metavar="LR",
                   help="peak learning rate of AdamW with a one-cycle schedule "
                        "(default: 2e-3; DCGAN: Adam 2e-4, constant)")
    add_kernel_options(p)
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of initialisation, shuffling and data splits (default: 0)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for results (default: runs/MODEL-DATASET)")
    p.add_argument("--val-fraction", type=positive_float, default=0.2, metavar="F",
                   help="share held out for validation when the data has no validation "
                        "split (default: %(default)s)")
    p.add_argument("--samples", type=positive_int, default=1000, metavar="N",
                   help="lesions: number of synthetic slices (default: %(default)s)")
    p.add_argument("--image-size", type=positive_int, default=64, metavar="S",
                   help="lesions: slice size in pixels (default: %(default)s)")
    p.add_argument("--width", type=positive_int, default=None, metavar="C",
                   help="unet base_channels, conv-autoencoder/dcgan features (default: the "
                        "model's own)")
    p.add_argument("--noise", type=float, default=0.0, metavar="STD",
                   help="autoencoders: training input noise (a denoising autoencoder)")
    p.add_argument("--normal-class", type=int, default=None, metavar="K",
                   help="autoencoders: train on class K only and score the validation set "
                        "for anomalies (AUROC of reconstruction error, other classes positive)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bar")
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                   help="train data-parallel on N ranks launched through mpiexec (needs "
                        "pip install \"pyfast[distributed]\"; default: %(default)s)")
    return p


# ---------------------------------------------------------------------------- data

def _canonical(name, choices, what):
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in choices:
        raise UsageError(f"unknown {what} {name!r}; choose from: {', '.join(choices)}")
    return key


def load_data(spec, *, seed, val_fraction, samples, image_size):
    from pyfast import data
    from pyfast.data import datasets

    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"--val-fraction must lie between 0 and 1, got {val_fraction}")
    if spec.endswith(".npz") or os.sep in spec:
        if not os.path.isfile(spec):
            raise UsageError(f"--data {spec}: no such file")
        try:
            train = datasets.medmnist_npz(spec, "train")
            try:
                val = datasets.medmnist_npz(spec, "val")
            except ValueError:
                train, val = _split(train, val_fraction, seed)
        except ValueError as exc:
            raise UsageError(f"--data {spec}: {exc}") from None
        if train.x.ndim != 4:
            raise UsageError(f"--data {spec}: 3-D volumes are not supported, got images of "
                             f"shape {train.x.shape[1:]}")
        if train.y.ndim != 1:
            raise UsageError(f"--data {spec}: multi-label targets are not supported")
        n = int(max(train.y.max(), val.y.max())) + 1
        return Data(os.path.basename(spec), train, val, "images", "classes", n)
    key = _canonical(spec, DATASETS[:-1], "data set")
    try:
        if key == "digits":
            train, val = _split(datasets.digits(), val_fraction, seed)
            return Data("digits", train, val, "images", "classes", 10)
        if key == "breast-cancer":
            full = datasets.breast_cancer(standardise=False)
            train, val = _split(full, val_fraction, seed)
            train, val = data.standardise(train, val)   # statistics of train only
            return Data("breast-cancer", train, val, "tabular", "classes", 2)
    except ImportError as exc:
        raise CommandFailed(str(exc)) from None
    if image_size < 16:
        raise UsageError(f"--image-size must be at least 16, got {image_size}")
    n_val = max(1, int(round(samples * val_fraction)))
    train = datasets.synthetic_lesions(samples - n_val if samples > n_val else 1,
                                       size=image_size, seed=2 * seed + 1)
    val = datasets.synthetic_lesions(n_val, size=image_size, seed=2 * seed + 2)
    return Data("lesions", train, val, "images", "masks", 2)


def _split(ds, val_fraction, seed):
    stratify = ds.y is not None and ds.y.ndim == 1 and np.issubdtype(ds.y.dtype, np.integer)
    return ds.split((1.0 - val_fraction, val_fraction), seed=seed, stratify=stratify)


def _lesion_labels(masks):
    return masks.reshape(len(masks), -1).any(axis=1).astype(np.int64)


def _pad_images(ds, size):
    """Zero-pad (centred) images, and mask targets with them, to size x size."""
    from pyfast.data import ArrayDataset

    def pad(a):
        h, w = a.shape[-2:]
        top, left = (size - h) // 2, (size - w) // 2
        out = np.zeros(a.shape[:-2] + (size, size), a.dtype)
        out[..., top:top + h, left:left + w] = a
        return out

    y = ds.y
    if y is not None and y.ndim == 4:
        y = pad(y)
    return ArrayDataset(pad(ds.x), y)


def _next_multiple(n, m):
    return -(-n // m) * m


def _next_power_of_two(n, minimum=8):
    p = minimum
    while p < n:
        p *= 2
    return p


# ---------------------------------------------------------------------------- runs

class _Plan:
    """What to train and how: built from the model name and the data."""

    def __init__(self, model_name, data, args):
        import pyfast as pf
        from pyfast.data import ArrayDataset
        from pyfast.nn import functional as F

        self.notes = []
        self.metrics = ()
        self.gan = False
        self.anomaly_labels = None
        train, val = data.train, data.val
        images = data.kind == "images"
        h = data.shape[-1] if images else None
        width = args.width

        if model_name in CLASSIFIERS:
            if not images:
                raise UsageError(f"{model_name} classifies images; {data.name} is tabular "
                                 f"({data.shape[0]} features): try autoencoder")
            if data.labels == "masks":   # lesions: is there a lesion in the slice?
                train = ArrayDataset(train.x, _lesion_labels(train.y))
                val = ArrayDataset(val.x, _lesion_labels(val.y))
                self.notes.append("lesions: labels are 1 for a slice with a lesion, else 0")
            small = max(data.shape[-2:]) <= 64
            build = getattr(pf.models, model_name)
            self.model = build(num_classes=data.num_classes, in_channels=data.shape[0],
                               small_input=small)
            self.describe = (f"{model_name}(num_classes={data.num_classes}, "
                             f"in_channels={data.shape[0]}, small_input={small})")
            self.loss_fn, self.metrics = F.cross_entropy, ("accuracy",)
            if data.num_classes == 2:
                self.metrics = ("accuracy", "auroc")
        elif model_name == "unet":
            if data.labels != "masks":
                raise UsageError(f"unet segments images and needs masks; {data.name} has "
                                 f"class labels (try --data lesions)")
            depth = 3 if h % 8 == 0 else 2
            base = width or 64
            self.model = pf.models.UNet(data.shape[0], 1, base_channels=base, depth=depth)
            self.describe = (f"UNet(in_channels={data.shape[0]}, base_channels={base}, "
                             f"depth={depth})")

            def loss_fn(logits, masks):
                return F.binary_cross_entropy_with_logits(logits, masks) + \
                    F.dice_loss(logits, masks)
            self.loss_fn, self.metrics = loss_fn, ("dice", "iou")
        elif model_name in ("autoencoder", "conv-autoencoder", "dcgan"):
            if data.labels == "masks":
                labels_train, labels_val = _lesion_labels(train.y), _lesion_labels(val.y)
            else:
                labels_train, labels_val = train.y, val.y
            if args.normal_class is not None:
                if model_name == "dcgan":
                    raise UsageError("--normal-class is for the autoencoders")
                keep = labels_train == args.normal_class
                if not keep.any():
                    raise UsageError(f"--normal-class {args.normal_class}: no training sample "
                                     f"has that class (classes: "
                                     f"{sorted(set(labels_train.tolist()))})")
                train = train.subset(np.flatnonzero(keep))
                self.anomaly_labels = (labels_val != args.normal_class).astype(np.int64)
            if model_name == "autoencoder":
                features = int(np.prod(data.shape))
                self.model = pf.models.Autoencoder(
                    features, output_activation="sigmoid" if images else None,
                    noise_std=args.noise)
                self.describe = f"Autoencoder({features}, noise_std={args.noise:g})"
                train, val = ArrayDataset(train.x), ArrayDataset(val.x)
                self.loss_fn = F.mse_loss
            else:
                if not images:
                    raise UsageError(f"{model_name} needs images; {data.name} is tabular (try "
                                     f"autoencoder)")
                if model_name == "conv-autoencoder":
                    size = _next_multiple(max(data.shape[-2:]), 8)
                else:
                    size = _next_power_of_two(max(data.shape[-2:]))
                if size != h or data.shape[-2] != data.shape[-1]:
                    train, val = _pad_images(train, size), _pad_images(val, size)
                    self.notes.append(f"images zero-padded from {data.shape[-2]}x"
                                      f"{data.shape[-1]} to {size}x{size} for {model_name}")
                if model_name == "conv-autoencoder":
                    self.model = pf.models.ConvAutoencoder(data.shape[0], 64, size,
                                                           features=width or 32,
                                                           noise_std=args.noise)
                    self.describe = (f"ConvAutoencoder(in_channels={data.shape[0]}, "
                                     f"image_size={size}, noise_std={args.noise:g})")
                    train, val = ArrayDataset(train.x), ArrayDataset(val.x)
                    self.loss_fn = F.mse_loss
                else:
                    self.gan = True
                    self.model = pf.models.DCGAN(100, data.shape[0], size, width or 64)
                    self.describe = f"DCGAN(image_channels={data.shape[0]}, image_size={size})"
                    train = ArrayDataset(train.x * 2.0 - 1.0)   # tanh's range
        else:  # pragma: no cover - _canonical guards
            raise UsageError(f"unknown model {model_name!r}")
        self.train, self.val = train, val


def _launch(args, log):
    """Start this command again as ``args.nproc`` ranks under mpiexec; their exit code."""
    from pyfast.distributed import launch
    from pyfast.distributed.comm import INSTALL_HINT

    n = args.nproc
    if importlib.util.find_spec("mpi4py") is None:
        raise CommandFailed(f"--nproc {n} needs mpi4py and an MPI library: {INSTALL_HINT}")
    from pyfast.backends import get_num_threads
    threads = args.threads or max(1, get_num_threads() // n)
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    try:
        cmd, env = launch.mpiexec_command(n, [sys.executable, "-m", "pyfast.cli", *argv,
                                              "--threads", str(threads)])
    except RuntimeError as exc:
        raise CommandFailed(f"--nproc {n}: {exc}") from None
    env["OMP_NUM_THREADS"] = str(threads)
    log(f"launching {n} ranks x {threads} thread{'s' if threads != 1 else ''} through "
        f"{cmd[0]}")
    sys.stdout.flush()
    return subprocess.run(cmd, env=env).returncode


def run(args, log=print):
    """Run ``pyfast train`` for parsed ``args``; returns the exit code."""
    from pyfast.distributed import launch

    if getattr(args, "nproc", 1) > 1 and not launch.launched_by_mpi():
        return _launch(args, log)
    if not launch.launched_by_mpi():
        return _run(args, log, None)
    import pyfast as pf
    dist = pf.distributed
    try:
        dist.init("nccl" if args.device == "cuda" else "mpi")
    except (ImportError, RuntimeError) as exc:
        raise CommandFailed(str(exc)) from None
    if args.nproc > 1 and dist.world_size() != args.nproc:
        raise UsageError(f"--nproc {args.nproc} but mpiexec started {dist.world_size()} ranks")
    if dist.world_size() == 1:
        return _run(args, log, None)
    try:
        return _run(args, log if dist.rank() == 0 else _quiet, dist)
    except (UsageError, CommandFailed, OSError) as exc:
        # the other ranks may be waiting in a collective: end them all now
        print(f"pyfast: error: rank {dist.rank()}: {exc}", file=sys.stderr, flush=True)
        dist.abort(2 if isinstance(exc, UsageError) else 1)


def _quiet(*args, **kwargs):
    pass


def _run(args, log, dist):
    """The training run; ``dist`` is pf.distributed on a data-parallel rank, else None."""
    import pyfast as pf
    from pyfast.demo import EpochLines, Throughput, adamw_one_cycle

    model_name = _canonical(args.model, MODELS, "model")
    if args.noise < 0 or not np.isfinite(args.noise):
        raise UsageError(f"--noise must be a finite number >= 0, got {args.noise}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    data = load_data(args.data, seed=args.seed, val_fraction=args.val_fraction,
                     samples=args.samples, image_size=args.image_size)
    out = args.out or os.path.join("runs", f"{model_name}-{data.name.replace('.npz', '')}")
    device = check_device(args.device)
    if args.threads:
        pf.set_num_threads(args.threads)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise CommandFailed(f"--out {out}: cannot create the folder ({exc.strerror or exc})") \
            from None

    pf.manual_seed(args.seed)
    plan = _Plan(model_name, data, args)
    model = plan.model.to(device) if device != "cpu" else plan.model
    batch = args.batch_size or (16 if model_name == "unet" else 64)
    val_batch = 256 if model_name != "unet" else 32
    ranks = 1 if dist is None else dist.world_size()
    if dist is None:
        train_loader = pf.data.DataLoader(plan.train, batch, shuffle=True, seed=args.seed,
                                          device=device)
        val_loader = pf.data.DataLoader(plan.val, val_batch, device=device)
    else:
        if plan.gan:
            raise UsageError("--nproc: dcgan trains in one process only (fit_gan is not "
                             "data-parallel)")
        if batch % ranks:
            plan.notes.append(f"global batch {batch} is not divisible by {ranks} ranks: each "
                              f"takes {max(1, batch // ranks)}")
        model = dist.DataParallel(model)
        sampler = pf.data.DistributedSampler(plan.train, shuffle=True, seed=args.seed)
        train_loader = pf.data.DataLoader(plan.train, max(1, batch // ranks), sampler=sampler,
                                          device=device)
        val_loader = pf.data.DataLoader(
            plan.val, max(1, val_batch // ranks), device=device,
            sampler=pf.data.DistributedSampler(plan.val, shuffle=False))
    shape = "x".join(str(s) for s in data.shape)
    log(f"training {plan.describe} on {data.name} ({len(plan.train)} train / {len(plan.val)} "
        f"validation, {shape}) for {args.epochs} epoch{'s' if args.epochs != 1 else ''}, batch "
        f"{batch}, device {device}, "
        f"backend {args.backend or 'auto'}, {pf.get_num_threads()} threads"
        + (f" on each of {ranks} ranks" if ranks > 1 else ""))
    for note in plan.notes:
        log(f"  note: {note}")

    meter = Throughput()
    writer = dist is None or dist.rank() == 0
    callbacks = [meter] if args.quiet or not writer else [meter, EpochLines(model_name)]
    start = time.perf_counter()
    with pf.use_backend(args.backend) if args.backend else contextlib.nullcontext():
        if plan.gan:
            history = pf.train.fit_gan(model, train_loader, epochs=args.epochs,
                                       lr=args.lr or 2e-4, progress=not args.quiet,
                                       callbacks=callbacks)
        else:
            optimizer, scheduler = adamw_one_cycle(model, args.lr or 2e-3, 1e-4, args.epochs,
                                                   train_loader)
            history = pf.train.fit(model, train_loader, loss_fn=plan.loss_fn,
                                   optimizer=optimizer, epochs=args.epochs,
                                   val_loader=val_loader, metrics=plan.metrics,
                                   scheduler=scheduler, progress=not args.quiet,
                                   callbacks=callbacks)
        seconds = time.perf_counter() - start
        rate = meter.rate
        if dist is not None:   # every rank's images over the slowest rank's time
            images = dist.all_reduce(np.array([meter.images], np.float64), "sum")[0]
            slowest = dist.all_reduce(np.array([meter.seconds], np.float64), "max")[0]
            rate = images / slowest if slowest > 0 else 0.0
            if not writer:
                return 0
            model = model.module
        summary = {"model": plan.describe, "data": data.name, "epochs": args.epochs,
                   "batch_size": batch, "seed": args.seed, "device": device,
                   "backend": args.backend, "threads": pf.get_num_threads(), "ranks": ranks,
                   "seconds": seconds, "images_per_s": rate, "notes": plan.notes,
                   "final": {k: v[-1] for k, v in history.items() if v and k != "lr"}}
        files = _write_results(out, model, plan, history, summary, device)
    final = "  ".join(f"{k} {v:.4g}" for k, v in summary["final"].items()
                      if k not in ("time",) and isinstance(v, float))
    log(f"done in {seconds:.1f} s ({summary['images_per_s']:.0f} images/s): {final}")
    for path in files:
        log(f"  wrote {path}")
    return 0


def _write_results(out, model, plan, history, summary, device):
    import pyfast as pf
    from pyfast import _outputs
    from pyfast.demo import predict

    files = []
    if plan.anomaly_labels is not None:
        x = to_device(plan.val.x, device)
        scores = pf.models.anomaly_scores(model, x, pool=5 if plan.val.x.ndim == 4 else None)
        summary["final"]["anomaly_auroc"] = pf.train.metrics.auroc(scores, plan.anomaly_labels)
    path = os.path.join(out, "model.safetensors")
    try:
        pf.save({k: to_host(v) for k, v in model.state_dict().items()}, path)
        files.append(path)
    except ImportError as exc:
        summary["notes"].append(f"weights not saved: {exc}")
    summary["history"] = {k: [float(v) for v in vs] for k, vs in history.items()}
    path = os.path.join(out, "history.json")
    _outputs.write_json(path, summary)
    files.append(path)

    if plan.gan:
        samples = model.sample(64, seed=summary["seed"])
        path = os.path.join(out, "samples.png")
        _outputs.write_png(path, _outputs.image_grid(samples[:, :3] if samples.shape[1] == 3
                                                     else samples[:, :1], columns=8,
                                                     scale=max(1, 64 // samples.shape[-1]),
                                                     value_range=(-1.0, 1.0)))
        files.append(path)
        panels = {"loss": {"discriminator": history["d_loss"], "generator": history["g_loss"]}}
    else:
        panels = {"loss": {"train": history["loss"], "validation": history.get("val_loss", [])}}
        for m in plan.metrics:
            panels[m] = {"train": history[m], "validation": history["val_" + m]}
    if plan.val.x.ndim == 4 and not plan.gan and plan.val.x.shape[1] in (1, 3):
        x = plan.val.x[:8]
        pred = predict(model, to_device(x, device))
        if plan.val.y is not None and plan.val.y.ndim == 4:      # segmentation
            tiles = _outputs.overlay(x[:, :1], plan.val.y[:8], pred > 0)
            name = "overlays.png"
        elif plan.val.y is None:                                  # reconstruction
            tiles = np.concatenate([x, pred], axis=0)
            name = "reconstructions.png"
        else:
            tiles = None
        if tiles is not None:
            path = os.path.join(out, name)
            _outputs.write_png(path, _outputs.image_grid(tiles, columns=8,
                                                         scale=max(1, 64 // x.shape[-1])))
            files.append(path)
    why_not = _outputs.plot_curves(os.path.join(out, "curves.png"), panels, summary["model"])
    if why_not is None:
        files.append(os.path.join(out, "curves.png"))
    else:
        summary["notes"].append(why_not)
    return files
