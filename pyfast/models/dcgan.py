"""DCGAN (Radford et al. 2016): a generator of transposed convolutions and a discriminator
of strided convolutions, with the paper's recipe: batch norm everywhere but the generator's
output and the discriminator's input, ReLU in the generator and LeakyReLU(0.2) in the
discriminator, tanh output, and weights drawn from N(0, 0.02) (batch-norm scales from
N(1, 0.02)).

For ``image_size = 4 * 2**k`` both networks have k stride-2 stages: the generator goes
from the noise (a 1x1 map) to 4x4 with ``features * 2**(k-1)`` channels and halves the
channels as it doubles the resolution; the discriminator mirrors it and ends in a 4x4
valid convolution to one logit per image.
"""

from __future__ import annotations

import numpy as np

import pyfast as pf
from pyfast import nn
from pyfast._arrays import to_host

from ._common import check_int

__all__ = ["DCGAN", "Generator", "Discriminator"]


def _stages(image_size, owner):
    size = check_int(image_size, "image_size", 8, owner)
    k = size.bit_length() - 3
    if size != 4 << k:
        raise ValueError(f"{owner}: image_size must be a power of two >= 8, got {image_size}")
    return k


class Generator(nn.Module):
    """Noise (B, latent_dim) (or (B, latent_dim, 1, 1)) to images (B, C, S, S) in [-1, 1]."""

    def __init__(self, latent_dim=100, image_channels=1, image_size=32, features=64):
        super().__init__()
        self.latent_dim = check_int(latent_dim, "latent_dim", 1, "Generator")
        image_channels = check_int(image_channels, "image_channels", 1, "Generator")
        features = check_int(features, "features", 1, "Generator")
        k = _stages(image_size, "Generator")
        width = features << (k - 1)
        layers = [nn.ConvTranspose2d(self.latent_dim, width, 4, 1, 0, bias=False),
                  nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(k - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, image_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        shape = tuple(z.shape)
        if shape[1:] not in ((self.latent_dim,), (self.latent_dim, 1, 1)):
            raise ValueError(f"Generator: expected noise (B, {self.latent_dim}), got shape "
                             f"{shape}")
        return self.main(z.reshape(shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    """Images (B, C, S, S) to real-vs-fake logits (B,)."""

    def __init__(self, image_channels=1, image_size=32, features=64):
        super().__init__()
        self.image_channels = check_int(image_channels, "image_channels", 1, "Discriminator")
        features = check_int(features, "features", 1, "Discriminator")
        k = _stages(image_size, "Discriminator")
        self.image_size = int(image_size)
        layers = [nn.Conv2d(self.image_channels, features, 4, 2, 1, bias=False),
                  nn.LeakyReLU(0.2, True)]
        width = features
        for _ in range(k - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        shape = tuple(x.shape)
        if shape[1:] != (self.image_channels, self.image_size, self.image_size):
            raise ValueError(f"Discriminator: expected images (B, {self.image_channels}, "
                             f"{self.image_size}, {self.image_size}), got shape {shape}")
        return self.main(x).reshape(shape[0])


def _dcgan_init(module):
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGAN(nn.Module):
    """A generator and a discriminator (``.generator``, ``.discriminator``) for
    ``pf.train.fit_gan``. Calling the DCGAN runs the generator."""

    def __init__(self, latent_dim=100, image_channels=1, image_size=32, features=64):
        super().__init__()
        self.generator = Generator(latent_dim, image_channels, image_size, features)
        self.discriminator = Discriminator(image_channels, image_size, features)
        self.latent_dim = self.generator.latent_dim
        self.image_channels, self.image_size = int(image_channels), int(image_size)
        _dcgan_init(self)

    def forward(self, z):
        return self.generator(z)

    def sample(self, n, seed=0):
        """``n`` images (numpy (n, C, S, S) in [-1, 1]) from noise fixed by ``seed``, in eval
        mode; pyfast's generator is not touched."""
        z = np.random.default_rng(seed).standard_normal((n, self.latent_dim))
        weight = self.generator.main[0].weight
        z = pf.tensor(z.astype(weight.dtype), device=weight.device)
        was_training = self.generator.training
        self.generator.eval()
        try:
            with pf.no_grad():
                out = self.generator(z).data
        finally:
            self.generator.train(was_training)
        return to_host(out)
