"""UNet, the autoencoders, DCGAN and the torch weight loader: shapes, ranges, argument
checks, training behaviour and the conversions a real checkpoint needs."""

from collections import OrderedDict

import numpy as np
import pytest

import pyfast as pf
from pyfast.nn import functional as F


def _images(n, c, s, seed=0):
    return np.random.default_rng(seed).random((n, c, s, s), dtype=np.float32)


def _count(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


# ---------------------------------------------------------------------------- UNet

@pytest.mark.parametrize("base, depth, bilinear, size", [
    (4, 1, False, 6), (4, 2, False, 12), (8, 3, False, 16), (4, 3, True, 24), (2, 4, True, 32),
])
def test_unet_output_has_the_input_size(base, depth, bilinear, size):
    model = pf.models.UNet(in_channels=2, out_channels=3, base_channels=base, depth=depth,
                           bilinear=bilinear)
    y = model(_images(2, 2, size))
    assert y.shape == (2, 3, size, size)
    rect = model(np.zeros((1, 2, size, 2 * size), np.float32))
    assert rect.shape == (1, 3, size, 2 * size)


def test_unet_widths_and_parameters():
    model = pf.models.UNet(1, 1, base_channels=8, depth=2)
    assert model.inc.conv1.weight.shape == (8, 1, 3, 3)
    assert model.down[1].conv.conv1.weight.shape == (32, 16, 3, 3)      # bottleneck 4x base
    assert model.up[0].up.weight.shape == (32, 16, 2, 2)                # transposed 2x2/2
    assert model.up[1].conv.conv1.weight.shape == (8, 16, 3, 3)         # skip + upsampled
    assert model.head.weight.shape == (1, 8, 1, 1)
    # The default U-Net: 64 channels, depth 4 (about 31 M parameters, as the paper's).
    assert 30e6 < _count(pf.models.UNet()) < 32e6
    bilinear = pf.models.UNet(1, 1, base_channels=8, depth=2, bilinear=True)
    assert bilinear.up[0].up[0].weight.shape == (16, 32, 1, 1)


def test_unet_rejects_sizes_it_cannot_halve():
    model = pf.models.UNet(1, 1, base_channels=4, depth=3)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 8"):
        model(np.zeros((1, 1, 20, 16), np.float32))
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        pf.models.UNet(depth=0)


@pytest.mark.parametrize("bilinear", [False, True])
def test_unet_trains_exactly_like_its_torch_twin(bilinear):
    """Same weights, same batch: the losses of 3 Adam steps and every gradient agree with a
    hand-written torch U-Net (skips, upsampling and batch norm all take part)."""
    torch = pytest.importorskip("torch")
    from pyfast.bench import _torch_models as torch_models
    from tests.nn.helpers import assert_grads_close

    pf.manual_seed(0)
    data = pf.data.datasets.synthetic_lesions(4, size=16, seed=0)
    model = pf.models.UNet(1, 1, base_channels=4, depth=2, bilinear=bilinear)
    twin = torch_models.UNet(1, 1, 4, 2, bilinear)
    twin.load_state_dict({k: torch.from_numpy(np.array(v))
                          for k, v in model.state_dict().items()})
    opt = pf.optim.Adam(model.parameters(), lr=1e-2)
    topt = torch.optim.Adam(twin.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    for step in range(3):
        loss = F.binary_cross_entropy_with_logits(model(data.x), data.y)
        opt.zero_grad()
        loss.backward()
        want = torch.nn.functional.binary_cross_entropy_with_logits(twin(x), y)
        topt.zero_grad()
        want.backward()
        np.testing.assert_allclose(loss.item(), want.item(), rtol=1e-4)
        assert_grads_close(model, twin, rtol=1e-3, atol=1e-7, relative_atol=1e-3)
        opt.step()
        topt.step()


# ---------------------------------------------------------------------------- autoencoders

def test_dense_autoencoder_shapes_and_layers():
    model = pf.models.Autoencoder(30, hidden=(16, 8), latent_dim=4)
    x = np.random.default_rng(0).standard_normal((5, 30)).astype(np.float32)
    assert model.encode(pf.tensor(x)).shape == (5, 4)
    assert model(x).shape == (5, 30)
    widths = [m.weight.shape for m in model.modules() if isinstance(m, pf.nn.Linear)]
    assert widths == [(16, 30), (8, 16), (4, 8), (8, 4), (16, 8), (30, 16)]
    images = pf.models.Autoencoder(64, hidden=32, latent_dim=8, output_activation="sigmoid")
    out = images(_images(3, 1, 8)).numpy()
    assert out.shape == (3, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="64 values per sample"):
        images(np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="output_activation"):
        pf.models.Autoencoder(8, output_activation="relu")


@pytest.mark.parametrize("size", [8, 16, 24])
def test_conv_autoencoder_shapes(size):
    model = pf.models.ConvAutoencoder(in_channels=2, latent_channels=5, image_size=size,
                                      features=4)
    x = _images(2, 2, size)
    z = model.encode(pf.tensor(x))
    assert z.shape == (2, 5, size // 8, size // 8)
    y = model(x).numpy()
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match="expected input"):
        model(_images(2, 2, size + 8))
    with pytest.raises(ValueError, match="divisible by 8"):
        pf.models.ConvAutoencoder(image_size=20)


def test_denoising_noise_only_in_training_mode():
    pf.manual_seed(0)
    model = pf.models.ConvAutoencoder(1, 4, 8, features=4, noise_std=0.5)
    x = _images(4, 1, 8)
    model.eval()
    a, b = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(a, b)                  # eval: deterministic, no noise
    model.train()
    pf.manual_seed(1)
    c = model(x).numpy()
    pf.manual_seed(1)
    np.testing.assert_array_equal(c, model(x).numpy())   # the noise follows pf.manual_seed
    pf.manual_seed(2)
    assert not np.array_equal(c, model(x).numpy())
    with pytest.raises(ValueError, match="noise_std"):
        pf.models.ConvAutoencoder(noise_std=-1.0)


def test_anomaly_scores_rank_a_bright_blob_first():
    model = pf.nn.Identity()  # a perfect "reconstruction": the score is the error itself

    class Blur(pf.nn.Module):
        def forward(self, x):
            return x * 0.0 + 0.5

    x = np.full((3, 1, 16, 16), 0.5, np.float32)
    x[1, 0, 4:8, 4:8] = 1.0                  # a 4x4 blob
    x[2] += np.random.default_rng(0).normal(0, 0.05, (16, 16)).astype(np.float32)
    scores = pf.models.anomaly_scores(Blur(), x, pool=4)
    assert scores.shape == (3,) and scores.argmax() == 1
    np.testing.assert_allclose(scores[1], 0.25)          # the window on the blob: (1 - .5)^2
    whole = pf.models.anomaly_scores(Blur(), x, batch_size=2)
    np.testing.assert_allclose(whole[1], 0.25 * 16 / 256)
    assert pf.models.anomaly_scores(model, x).max() == 0


# ---------------------------------------------------------------------------- DCGAN

@pytest.mark.parametrize("size, features", [(8, 4), (16, 8), (32, 4)])
def test_dcgan_shapes_and_range(size, features):
    gan = pf.models.DCGAN(latent_dim=6, image_channels=3, image_size=size, features=features)
    z = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    images = gan.generator(z).numpy()
    assert images.shape == (4, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1
    assert gan.generator(z.reshape(4, 6, 1, 1)).shape == (4, 3, size, size)
    logits = gan.discriminator(images)
    assert logits.shape == (4,)
    samples = gan.sample(5, seed=3)
    assert samples.shape == (5, 3, size, size)
    np.testing.assert_array_equal(samples, gan.sample(5, seed=3))


def test_dcgan_initialisation_and_layout():
    pf.manual_seed(0)
    gan = pf.models.DCGAN(latent_dim=100, image_channels=1, image_size=32, features=64)
    g, d = gan.generator.main, gan.discriminator.main
    assert g[0].weight.shape == (100, 256, 4, 4) and g[-2].weight.shape == (64, 1, 4, 4)
    assert d[0].weight.shape == (64, 1, 4, 4) and d[-1].weight.shape == (1, 256, 4, 4)
    convs = [m.weight.numpy() for m in gan.modules()
             if isinstance(m, (pf.nn.Conv2d, pf.nn.ConvTranspose2d))]
    w = np.concatenate([c.ravel() for c in convs])
    assert abs(w.std() - 0.02) < 0.002 and abs(w.mean()) < 0.002
    scales = np.concatenate([m.weight.numpy() for m in gan.modules()
                             if isinstance(m, pf.nn.BatchNorm2d)])
    assert abs(scales.mean() - 1) < 0.01 and 0.01 < scales.std() < 0.03
    with pytest.raises(ValueError, match="power of two"):
        pf.models.DCGAN(image_size=24)
    with pytest.raises(ValueError, match="expected noise"):
        gan.generator(np.zeros((2, 7), np.float32))


def _square_images(n, seed):
    """8x8 images of a bright square on a dark ground, with a little noise: data whose
    per-pixel mean a generator has to learn (it starts near 0 everywhere)."""
    x = np.full((n, 1, 8, 8), -0.8, np.float32)
    x[:, :, 2:6, 2:6] = 0.8
    noise = 0.1 * np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    return np.clip(x + noise, -1, 1)


def _discriminator_logits(gan, x):
    gan.discriminator.eval()
    try:
        with pf.no_grad():
            return gan.discriminator(x).numpy()
    finally:
        gan.discriminator.train()


def test_dcgan_trains_with_fit_gan():
    """fit_gan trains both players: the discriminator scores real images above generated
    ones (it did not before), and the generator's samples move toward the data. Passed for
    seeds 0, 1 and 2 (gap 0.80 -> 0.49-0.54, logit margin 0.83-0.90); about 0.1 s."""
    pf.manual_seed(0)
    gan = pf.models.DCGAN(latent_dim=8, image_channels=1, image_size=8, features=4)
    real = _square_images(64, 0)

    def gap(samples):  # mean over pixels of |per-pixel mean of samples - that of the data|
        return float(np.abs(samples.mean(0) - real.mean(0)).mean())

    def margin(fake):  # how much higher D scores unseen real images than generated ones
        held_out = _square_images(64, 1)
        return float(_discriminator_logits(gan, held_out).mean()
                     - _discriminator_logits(gan, fake).mean())

    before = gan.sample(64, seed=100)
    gap0, margin0 = gap(before), margin(before)
    history = pf.train.fit_gan(gan, pf.data.DataLoader(pf.data.ArrayDataset(real), 16,
                                                       shuffle=True, seed=0),
                               epochs=20, lr=2e-3, progress=False)
    assert len(history["d_loss"]) == 20 and np.isfinite(history["g_loss"]).all()
    after = gan.sample(64, seed=100)
    assert abs(margin0) < 0.1, margin0                 # untrained D cannot tell them apart
    assert margin(after) > 0.4, margin(after)          # trained D can
    assert history["d_real"][-1] > history["d_fake"][-1] + 0.1, history
    assert gap(after) < 0.75 * gap0, (gap0, gap(after))  # samples moved toward the data


# ---------------------------------------------------------------------------- conversion

def _reference_state(model, seed=0):
    rng = np.random.default_rng(seed)
    return OrderedDict((k, rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f"
                        else np.array(3, v.dtype)) for k, v in model.state_dict().items())


def test_from_torch_state_dict_cleans_real_world_checkpoints():
    model = pf.models.densenet121(num_classes=3, small_input=True)
    state = _reference_state(model)
    legacy = OrderedDict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue                                   # old checkpoints lack the counter
        for part in ("norm", "relu", "conv"):          # torchvision's old DenseNet names
            key = key.replace(f"denselayer1.{part}1.", f"denselayer1.{part}.1.")
        legacy["module." + key] = value                # DataParallel's prefix
    assert any(".norm.1." in k for k in legacy)
    pf.models.from_torch_state_dict(model, legacy)
    got = model.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            assert int(got[key]) == 0
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_from_torch_state_dict_reads_files(tmp_path):
    model = pf.models.resnet18(num_classes=4, in_channels=1, small_input=True)
    state = _reference_state(model, 1)
    path = tmp_path / "weights.safetensors"
    pf.save(dict(state), path)
    loaded = pf.models.from_torch_state_dict(pf.models.resnet18(4, 1, True), str(path))
    np.testing.assert_array_equal(loaded.state_dict()["fc.weight"], state["fc.weight"])
    with pytest.raises(FileNotFoundError, match="no file"):
        pf.models.from_torch_state_dict(model, str(tmp_path / "missing.pth"))
    with pytest.raises(TypeError, match="mapping"):
        pf.models.from_torch_state_dict(model, 42)


def test_from_torch_state_dict_reads_torch_files(tmp_path):
    torch = pytest.importorskip("torch")
    model = pf.models.resnet18(num_classes=4, in_channels=1, small_input=True)
    state = _reference_state(model, 2)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in state.items()}}, path)
    loaded = pf.models.from_torch_state_dict(pf.models.resnet18(4, 1, True), path)
    np.testing.assert_array_equal(loaded.state_dict()["conv1.weight"], state["conv1.weight"])


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="num_classes"):
        pf.models.resnet18(num_classes=0)
    with pytest.raises(ValueError, match="in_channels"):
        pf.models.densenet121(in_channels=1.5)
    with pytest.raises(ValueError, match="latent_dim"):
        pf.models.Autoencoder(10, latent_dim=0)
