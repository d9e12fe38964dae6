"""ResNet and DenseNet are torchvision's architectures: same parameter counts, same
state-dict keys in the same order with the same shapes, and, with the weights copied over,
the same logits (eval mode) and the same gradients (training mode, batch statistics)."""

import numpy as np
import pytest

import pyfast as pf

torch = pytest.importorskip("torch")

from pyfast.bench import _torch_models as torch_twins  # noqa: E402  (imports torch)
from tests.nn.helpers import assert_grads_close  # noqa: E402

COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
          "densenet121": 7_978_856, "densenet169": 14_149_480}


def twin(name, **kw):
    if name.startswith("resnet"):
        return torch_twins.resnet(int(name[6:]), **kw)
    return torch_twins.densenet(int(name[8:]), **kw)


def n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts(name):
    assert n_params(getattr(pf.models, name)()) == COUNTS[name]


@pytest.mark.parametrize("name", list(COUNTS))
@pytest.mark.parametrize("kw", [{}, {"num_classes": 7, "in_channels": 1, "small_input": True}],
                         ids=["imagenet", "small-grey"])
def test_state_dict_keys_order_and_shapes_match_torchvision(name, kw):
    ours = getattr(pf.models, name)(**kw).state_dict()
    theirs = twin(name, **kw).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert tuple(ours[key].shape) == tuple(value.shape), key
        assert ours[key].dtype == np.dtype(str(value.dtype).replace("torch.", "")), key


def test_small_input_changes_only_the_stem():
    big = pf.models.resnet18().state_dict()
    small = pf.models.resnet18(small_input=True).state_dict()
    changed = [k for k in big if big[k].shape != small[k].shape]
    assert changed == ["conv1.weight"] and small["conv1.weight"].shape == (64, 3, 3, 3)
    dense = pf.models.densenet121(small_input=True, in_channels=1)
    assert dense.state_dict()["features.conv0.weight"].shape == (64, 1, 3, 3)
    assert "pool0" not in dict(dense.features.named_children())


def _logits(name, kw, size, batch=2, seed=0):
    torch.manual_seed(seed)
    reference = torch_twins.randomise(twin(name, **kw), seed).eval()
    model = pf.models.from_torch_state_dict(getattr(pf.models, name)(**kw),
                                            reference.state_dict())
    model.eval()
    x = np.random.default_rng(seed).standard_normal(
        (batch, kw.get("in_channels", 3), size, size)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    with pf.no_grad():
        got = model(x).numpy()
    return got, want


@pytest.mark.parametrize("name, kw, size", [
    ("resnet18", {}, 64),
    ("resnet18", {"num_classes": 10, "in_channels": 1, "small_input": True}, 16),
    ("resnet50", {"num_classes": 10}, 32),
    ("densenet121", {"num_classes": 10}, 32),
    ("densenet121", {"num_classes": 3, "in_channels": 1, "small_input": True}, 8),
])
def test_copied_weights_give_torchvisions_logits(name, kw, size):
    got, want = _logits(name, kw, size)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-4 * scale)


def test_training_step_matches_torch_gradients():
    """Training mode end to end: batch statistics, running-stat updates and every
    parameter's gradient of a cross-entropy loss."""
    kw = {"num_classes": 5, "in_channels": 1, "small_input": True}
    reference = torch_twins.randomise(twin("resnet18", **kw), 1).train()
    model = pf.models.from_torch_state_dict(pf.models.resnet18(**kw), reference.state_dict())
    model.train()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 4)
    loss_t = torch.nn.functional.cross_entropy(reference(torch.from_numpy(x)),
                                               torch.from_numpy(y))
    loss_t.backward()
    loss = pf.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=1e-4)
    assert_grads_close(model, reference, rtol=2e-3, atol=1e-7, relative_atol=2e-4)
    buffers = dict(reference.named_buffers())
    for name, b in model.named_buffers():
        np.testing.assert_allclose(b.numpy(), buffers[name].numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_strict_loading_reports_what_does_not_fit():
    sd = twin("resnet18").state_dict()
    with pytest.raises(RuntimeError, match="size mismatch for conv1.weight"):
        pf.models.from_torch_state_dict(pf.models.resnet18(in_channels=1), sd)
    del sd["fc.bias"]
    with pytest.raises(RuntimeError, match='Missing key.*"fc.bias"'):
        pf.models.from_torch_state_dict(pf.models.resnet18(), sd)
    pf.models.from_torch_state_dict(pf.models.resnet18(), sd, strict=False)
