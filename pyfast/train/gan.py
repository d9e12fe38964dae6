"""fit_gan: non-saturating GAN training of a generator / discriminator pair (DCGAN recipe).

Per batch: draw noise z (pyfast's generator, so ``pf.manual_seed`` fixes it), fake = G(z);
the discriminator steps on BCE(D(real), 1) + BCE(D(fake.detach()), 0); the generator steps
on BCE(D(fake), 1) (non-saturating: it maximises log D(G(z)) rather than minimising
log(1 - D(G(z))), whose gradient vanishes early on). The same ``fake`` serves both steps,
so G runs once per batch. Discriminator logits have shape (B,).

Resumable like ``fit``: a Checkpoint callback stores both networks, both optimizers, the
history and the RNG; ``SampleImages`` shows the generator's progress on fixed noise.
"""

from __future__ import annotations

import time

import numpy as np

from pyfast import _random
from pyfast._arrays import array_module, to_device, to_host

from .loop import (Run, array_of, check_callbacks, check_epochs, len_or_none, model_device,
                   train_epochs)
from .progress import ProgressBar

__all__ = ["fit_gan", "GANRun"]


class GANRun(Run):
    """The Run of ``fit_gan``: ``gan``, ``generator``, ``discriminator``, ``g_optimizer``,
    ``d_optimizer`` besides the usual history/epoch; ``sample(n, seed)`` draws images."""

    def __init__(self, gan, g_optimizer, d_optimizer, latent_dim, **kw):
        super().__init__(model=gan, optimizer=g_optimizer, scheduler=None, val_loader=None, **kw)
        self.gan, self.generator, self.discriminator = gan, gan.generator, gan.discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.latent_dim = latent_dim

    def _models(self):
        return {"generator": self.generator, "discriminator": self.discriminator}

    def _optimizers(self):
        return {"g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer}

    def sample(self, n, seed=0):
        """``n`` generated images (numpy, (n, C, H, W)) from noise fixed by ``seed``; drawn
        outside pyfast's generator so sampling does not change the training run."""
        g = self.generator
        z = np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype(_dtype(g))
        was_training = getattr(g, "training", True)
        from pyfast import no_grad

        g.eval()
        try:
            with no_grad():
                out = g(to_device(z, model_device(g)))
        finally:
            if was_training:
                g.train()
        return to_host(array_of(out))


def _dtype(model):
    for p in model.parameters():
        return p.data.dtype
    return np.dtype(np.float32)


def _sigmoid_mean(logits):
    x = array_of(logits)
    xp = array_module(x)
    return float((1.0 / (1.0 + xp.exp(-x.astype(xp.float64)))).mean())


def _real_images(batch):
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise TypeError("loader yielded an empty batch")
        return batch[0]
    return batch


def _gan_epoch(run, bce, bar):
    """One pass over the loader: a discriminator step then a generator step per batch."""
    generator, discriminator = run.generator, run.discriminator
    device, dtype = model_device(generator), _dtype(generator)
    t0 = time.perf_counter()
    bar.start(run.epoch + 1, run.epochs, len_or_none(run.train_loader))
    generator.train()
    discriminator.train()
    sums = dict.fromkeys(("d_loss", "g_loss", "d_real", "d_fake"), 0.0)
    count = 0
    for batch in run.train_loader:
        real = to_device(_real_images(batch), device)
        n = int(real.shape[0])
        z = _random.generator().standard_normal((n, run.latent_dim)).astype(dtype)
        z = to_device(z, device)
        xp = array_module(z)
        ones, zeros = xp.ones((n,), dtype), xp.zeros((n,), dtype)

        fake = generator(z)
        real_logits = discriminator(real)
        fake_logits = discriminator(fake.detach())
        d_loss = bce(real_logits, ones) + bce(fake_logits, zeros)
        run.d_optimizer.zero_grad()
        d_loss.backward()
        run.d_optimizer.step()

        g_loss = bce(discriminator(fake), ones)     # D just stepped: a fresh graph through it
        run.g_optimizer.zero_grad()
        g_loss.backward()
        run.g_optimizer.step()

        sums["d_loss"] += float(d_loss.item()) * n
        sums["g_loss"] += float(g_loss.item()) * n
        sums["d_real"] += _sigmoid_mean(real_logits) * n
        sums["d_fake"] += _sigmoid_mean(fake_logits) * n
        count += n
        bar.update(n, {"d_loss": sums["d_loss"] / count, "g_loss": sums["g_loss"] / count})
        for cb in run.callbacks:
            cb.on_batch_end(run, {"size": n})
    if count == 0:
        raise ValueError("loader yielded no batches")
    logs = {k: v / count for k, v in sums.items()}
    logs["time"] = time.perf_counter() - t0
    return logs


def fit_gan(gan, loader, *, epochs, lr=2e-4, betas=(0.5, 0.999), latent_dim=None,
            g_optimizer=None, d_optimizer=None, callbacks=(), progress=True, resume=None):
    """Train ``gan.generator`` and ``gan.discriminator`` on the images of ``loader``
    (batches of images, or (images, labels) pairs whose labels are ignored). Adam with
    ``lr`` and ``betas`` for both unless optimizers are given. Returns the history:
    "d_loss", "g_loss" (mean per sample), "d_real" and "d_fake" (mean D probability on real
    and generated images) and "time", one value per epoch."""
    from pyfast.nn.functional import binary_cross_entropy_with_logits as bce
    from pyfast.optim import Adam

    for part in ("generator", "discriminator"):
        if not callable(getattr(gan, part, None)):
            raise TypeError(f"gan must have a callable .{part}, got {type(gan).__name__}")
    generator, discriminator = gan.generator, gan.discriminator
    latent_dim = latent_dim if latent_dim is not None else getattr(gan, "latent_dim", None)
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)) \
            or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive int (or gan.latent_dim set), got "
                         f"{latent_dim!r}")
    epochs = check_epochs(epochs)
    g_opt = g_optimizer or Adam(generator.parameters(), lr=lr, betas=betas)
    d_opt = d_optimizer or Adam(discriminator.parameters(), lr=lr, betas=betas)
    callbacks = check_callbacks(callbacks)
    history = {"d_loss": [], "g_loss": [], "d_real": [], "d_fake": [], "time": []}
    run = GANRun(gan, g_opt, d_opt, int(latent_dim), train_loader=loader, history=history,
                 epochs=epochs, callbacks=callbacks)
    if resume is not None:
        run.restore(resume)
    bar = ProgressBar(progress)
    return train_epochs(run, bar, lambda: _gan_epoch(run, bce, bar), not_shown=("time",))
