"""fit_gan on a tiny 2-D GAN: history, the generator learns the data, samples, resume."""

import numpy as np
import pytest

import pyfast as pf
from pyfast.train import Callback, Checkpoint, SampleImages

pytest.importorskip("safetensors")


class Squeeze(pf.nn.Module):
    def forward(self, x):
        return x.reshape(-1)


class TinyGAN:
    def __init__(self, latent_dim=4):
        self.latent_dim = latent_dim
        self.generator = pf.nn.Sequential(pf.nn.Linear(latent_dim, 16), pf.nn.ReLU(),
                                          pf.nn.Linear(16, 2))
        self.discriminator = pf.nn.Sequential(pf.nn.Linear(2, 16), pf.nn.LeakyReLU(0.2),
                                              pf.nn.Linear(16, 1), Squeeze())


CENTRE = np.array([2.0, -1.0], np.float32)


def data_loader(seed=0):
    rng = np.random.default_rng(seed)
    x = (CENTRE + 0.1 * rng.standard_normal((128, 2))).astype(np.float32)
    return pf.data.DataLoader(pf.data.ArrayDataset(x, np.zeros(128, np.int64)), 32, shuffle=True)


def test_generator_moves_to_the_data_and_history_is_complete():
    pf.manual_seed(0)
    gan = TinyGAN()
    start = gan.generator(np.zeros((1, 4), np.float32)).numpy()[0]
    shown = []
    h = pf.train.fit_gan(gan, data_loader(), epochs=25, lr=5e-3, progress=False,
                         callbacks=[SampleImages(lambda e, s: shown.append((e, s)), n=64, every=5)])
    assert set(h) == {"d_loss", "g_loss", "d_real", "d_fake", "time"}
    assert all(len(v) == 25 and np.all(np.isfinite(v)) for v in h.values())
    assert all(0 <= p <= 1 for p in h["d_real"] + h["d_fake"])
    assert [e for e, _ in shown] == [5, 10, 15, 20, 25]
    samples = shown[-1][1]
    assert samples.shape == (64, 2) and isinstance(samples, np.ndarray)
    assert np.linalg.norm(samples.mean(0) - CENTRE) < 0.5 * np.linalg.norm(start - CENTRE)


def test_samples_do_not_touch_the_training_generator():
    pf.manual_seed(3)
    gan = TinyGAN()
    h1 = pf.train.fit_gan(gan, data_loader(), epochs=2, progress=False)
    pf.manual_seed(3)
    gan2 = TinyGAN()
    h2 = pf.train.fit_gan(gan2, data_loader(), epochs=2, progress=False,
                          callbacks=[SampleImages(lambda e, s: None, n=8)])
    assert h1["g_loss"] == h2["g_loss"]


class Interrupt(Callback):
    def on_epoch_begin(self, run):
        if run.epoch == 2:
            raise KeyboardInterrupt


def test_fit_gan_resumes_bitwise(tmp_path):
    def run(path, callbacks=(), resume=None, seed=0):
        pf.manual_seed(seed)
        gan = TinyGAN()
        h = pf.train.fit_gan(gan, data_loader(), epochs=4, progress=False, resume=resume,
                             callbacks=[Checkpoint(path, monitor=None), *callbacks])
        return gan, h

    full, h_full = run(tmp_path / "a.st")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.st", [Interrupt()])
    resumed, h_res = run(tmp_path / "b.st", seed=9, resume=tmp_path / "b.last.st")
    for part in ("generator", "discriminator"):
        a, b = getattr(full, part).state_dict(), getattr(resumed, part).state_dict()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{part}.{k}")
    assert h_res["g_loss"] == h_full["g_loss"]


def test_bad_input():
    with pytest.raises(TypeError, match="generator"):
        pf.train.fit_gan(object(), data_loader(), epochs=1)
    gan = TinyGAN()
    del gan.latent_dim
    with pytest.raises(ValueError, match="latent_dim"):
        pf.train.fit_gan(gan, data_loader(), epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        pf.train.fit_gan(TinyGAN(), data_loader(), epochs=-2)
