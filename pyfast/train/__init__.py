"""pf.train: fit / evaluate / fit_gan, metrics, callbacks, progress and resumable runs."""

from . import metrics
from .callbacks import Callback, Checkpoint, EarlyStopping, SampleImages
from .gan import fit_gan
from .loop import Run, evaluate, fit
from .metrics import Metric

__all__ = ["fit", "evaluate", "fit_gan", "Run", "Callback", "EarlyStopping", "Checkpoint",
           "SampleImages", "Metric", "metrics"]
