"""BatchNorm1d and BatchNorm2d, as torch.nn: weight ones, bias zeros, buffers running_mean
(zeros), running_var (ones) and num_batches_tracked (int64 0); momentum=None keeps a
cumulative average (momentum 1/num_batches_tracked). ``forward`` takes the fused options
``activation="relu"`` and ``residual=`` (see pf.nn.functional.batch_norm)."""

import numpy as np

from . import functional as F
from . import init
from .linear import empty_parameter
from .module import Module
from .parameter import Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class BatchNormBase(Module):
    _dims = ()

    def __init__(self, num_features, eps=1e-05, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) \
                or num_features < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, "
                             f"got {num_features!r}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(empty_parameter((num_features,), device, dtype))
            self.bias = Parameter(empty_parameter((num_features,), device, dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", empty_parameter((num_features,), device, dtype))
            self.register_buffer("running_var", empty_parameter((num_features,), device, dtype))
            nbt = np.zeros((), np.int64)
            if device is not None and str(device).startswith("cuda"):
                import cupy
                nbt = cupy.asarray(nbt)
            self.register_buffer("num_batches_tracked", nbt)
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def _check_input(self, x):
        if x.ndim not in self._dims:
            raise ValueError(f"{type(self).__name__}: expected "
                             f"{' or '.join(f'{d}D' for d in self._dims)} input, got shape "
                             f"{tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: input of shape {tuple(x.shape)} has "
                             f"{x.shape[1]} channels, expected num_features={self.num_features}")

    def forward(self, input, *, activation=None, residual=None):
        """``activation="relu"`` and ``residual=`` (pyfast extensions) fuse the ReLU and the
        residual add that follow the layer in ResNet / DenseNet / U-Net blocks:
        relu(self(input) + residual) in one kernel forward and one backward."""
        self._check_input(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.data)
        use_batch = self.training or self.running_mean is None
        tracked = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if tracked else None,
                            self.running_var if tracked else None, self.weight, self.bias,
                            use_batch, factor, self.eps, activation=activation,
                            residual=residual)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(BatchNormBase):
    """Over (N, C) or (N, C, L) inputs."""
    _dims = (2, 3)


class BatchNorm2d(BatchNormBase):
    """Over (N, C, H, W) inputs."""
    _dims = (4,)
