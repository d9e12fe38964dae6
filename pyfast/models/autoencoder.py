"""Autoencoders: ``Autoencoder`` (dense, for tabular data or flattened images) and
``ConvAutoencoder`` (convolutional, optionally denoising).

Used as anomaly detectors: trained on normal data only, they reconstruct normal inputs well
and abnormal ones badly, so the reconstruction error scores how abnormal an input is
(``anomaly_scores``). A denoising autoencoder corrupts its input with Gaussian noise while
training and learns to give back the clean input, which keeps it from learning the identity
and makes it reconstruct what normal data looks like rather than what it was shown.
"""

from __future__ import annotations

import numbers

import numpy as np

from pyfast import nn
from pyfast._arrays import to_host
from pyfast._random import generator
from pyfast.nn import functional as F

from ._common import check_int

__all__ = ["Autoencoder", "ConvAutoencoder", "anomaly_scores"]

_OUTPUTS = (None, "sigmoid")


def _check_output(output_activation, owner):
    if output_activation not in _OUTPUTS:
        raise ValueError(f"{owner}: output_activation must be one of {_OUTPUTS}, got "
                         f"{output_activation!r}")
    return output_activation


def _check_noise(noise_std, owner):
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real) \
            or not np.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"{owner}: noise_std must be a finite number >= 0, got {noise_std!r}")
    return float(noise_std)


def _corrupt(x, noise_std):
    """x plus Gaussian noise from pyfast's generator (a training-time input corruption)."""
    data = x.data
    noise = generator().standard_normal(data.shape).astype(data.dtype)
    if not isinstance(data, np.ndarray):  # CuPy
        import cupy
        noise = cupy.asarray(noise)
    return x + noise * noise_std


class Autoencoder(nn.Module):
    """Dense autoencoder ``in_features -> hidden... -> latent_dim -> reversed(hidden) ->
    in_features`` with ReLU between the layers.

    Input (N, in_features), or (N, ...) with ``in_features`` values per sample (images are
    flattened and the output takes the input's shape back). The output is linear (for
    standardised features); ``output_activation="sigmoid"`` for data in [0, 1].
    ``noise_std > 0`` makes it denoising."""

    def __init__(self, in_features, hidden=(256, 64), latent_dim=16, *, output_activation=None,
                 noise_std=0.0):
        super().__init__()
        owner = "Autoencoder"
        self.in_features = check_int(in_features, "in_features", 1, owner)
        self.latent_dim = check_int(latent_dim, "latent_dim", 1, owner)
        hidden = (hidden,) if isinstance(hidden, numbers.Integral) else tuple(hidden)
        self.hidden = tuple(check_int(h, "hidden", 1, owner) for h in hidden)
        self.output_activation = _check_output(output_activation, owner)
        self.noise_std = _check_noise(noise_std, owner)
        widths = (self.in_features,) + self.hidden + (self.latent_dim,)
        self.encoder = self._stack(widths)
        self.decoder = self._stack(widths[::-1])

    @staticmethod
    def _stack(widths):
        layers = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    def encode(self, x):
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != self.in_features:
            raise ValueError(f"Autoencoder: expected input (N, {self.in_features}) or (N, ...) "
                             f"with {self.in_features} values per sample, got shape "
                             f"{tuple(x.shape)}")
        return self.encoder(x.reshape(x.shape[0], self.in_features))

    def decode(self, z):
        out = self.decoder(z)
        return F.sigmoid(out) if self.output_activation == "sigmoid" else out

    def forward(self, x):
        source = x
        if self.training and self.noise_std > 0:
            x = _corrupt(x, self.noise_std)
        return self.decode(self.encode(x)).reshape(source.shape)


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder for (N, in_channels, image_size, image_size) images in
    [0, 1] (sigmoid output).

    The encoder halves the resolution three times (4x4 stride-2 convolutions with batch
    norm and ReLU; ``features``, 2x and 4x ``features`` channels), then a 1x1 convolution
    gives the code: a (latent_channels, image_size / 8, image_size / 8) map. The decoder
    mirrors it with transposed convolutions. A spatial code keeps where things are, so the
    decoder need not memorise positions and reconstructs anatomy sharply; what it cannot
    reproduce (a lesion it never saw) then stands out in the residual. ``image_size`` must
    be divisible by 8. ``noise_std > 0`` adds Gaussian noise to the input in training mode
    only (a denoising autoencoder)."""

    def __init__(self, in_channels=1, latent_channels=64, image_size=32, *, features=32,
                 noise_std=0.0):
        super().__init__()
        owner = "ConvAutoencoder"
        self.in_channels = check_int(in_channels, "in_channels", 1, owner)
        self.latent_channels = check_int(latent_channels, "latent_channels", 1, owner)
        self.image_size = check_int(image_size, "image_size", 8, owner)
        if self.image_size % 8:
            raise ValueError(f"{owner}: image_size must be divisible by 8, got {image_size}")
        self.features = check_int(features, "features", 1, owner)
        self.noise_std = _check_noise(noise_std, owner)
        f = self.features

        def down(cin, cout):
            return [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        def up(cin, cout):
            return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.encoder = nn.Sequential(*down(self.in_channels, f), *down(f, 2 * f),
                                     *down(2 * f, 4 * f),
                                     nn.Conv2d(4 * f, self.latent_channels, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(self.latent_channels, 4 * f, 1, bias=False), nn.BatchNorm2d(4 * f),
            nn.ReLU(inplace=True), *up(4 * f, 2 * f), *up(2 * f, f),
            nn.ConvTranspose2d(f, self.in_channels, 4, stride=2, padding=1), nn.Sigmoid())

    def encode(self, x):
        shape = tuple(x.shape)
        if shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"ConvAutoencoder: expected input (N, {self.in_channels}, "
                             f"{self.image_size}, {self.image_size}), got shape {shape}")
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        if self.training and self.noise_std > 0:
            x = _corrupt(x, self.noise_std)
        return self.decode(self.encode(x))


def anomaly_scores(model, x, *, batch_size=256, pool=None):
    """Per-sample anomaly scores of ``model`` (an autoencoder) on the arrays ``x``: the mean
    squared reconstruction error, computed in eval mode without gradients.

    ``pool=k`` (images only) scores by the largest mean squared error over any k x k
    window instead: a small abnormal region (a lesion) then stands out against the noise
    spread over the whole image. Returns a float64 numpy array of shape (N,)."""
    from pyfast import no_grad
    from pyfast._arrays import array_module

    was_training = model.training
    model.eval()
    scores = []
    try:
        with no_grad():
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size]
                rec = model(batch).data
                xp = array_module(rec)
                err = (rec.astype(xp.float64) - xp.asarray(batch, xp.float64)) ** 2
                if pool is None:
                    s = err.reshape(len(batch), -1).mean(axis=1)
                else:
                    if err.ndim != 4:
                        raise ValueError(f"anomaly_scores: pool needs images (N, C, H, W), "
                                         f"got shape {tuple(err.shape)}")
                    s = _max_window_mean(err.mean(axis=1), int(pool), xp)
                scores.append(to_host(s))
    finally:
        model.train(was_training)
    return np.concatenate(scores) if scores else np.zeros(0)


def _max_window_mean(err, k, xp):
    """Largest mean of ``err`` (N, H, W) over k x k windows (summed-area table)."""
    n, h, w = err.shape
    k = max(1, min(k, h, w))
    table = xp.zeros((n, h + 1, w + 1), xp.float64)
    table[:, 1:, 1:] = err.cumsum(axis=1).cumsum(axis=2)
    sums = table[:, k:, k:] - table[:, :-k, k:] - table[:, k:, :-k] + table[:, :-k, :-k]
    return sums.reshape(n, -1).max(axis=1) / (k * k)
