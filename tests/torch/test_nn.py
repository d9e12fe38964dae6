"""pyfast.torch.nn layers and convert(): same state dicts, same outputs and gradients as the
torch layers, and a converted model under torch.compile(fullgraph=True)."""

import copy

import pytest

torch = pytest.importorskip("torch")
pft = pytest.importorskip("pyfast.torch")
nn = torch.nn


def _close(a, b, tol=1e-4):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


LAYERS = [(nn.Linear, pft.nn.Linear, (6, 4), (3, 2, 6)),
          (nn.Conv2d, pft.nn.Conv2d, (4, 6, 3), (2, 4, 7, 7)),
          (nn.Conv2d, pft.nn.Conv2d, (4, 6, (3, 2)), (2, 4, 7, 7)),
          (nn.ConvTranspose2d, pft.nn.ConvTranspose2d, (4, 6, 3), (2, 4, 5, 5))]
LAYER_KW = [{}, dict(stride=2, padding=1, bias=False), dict(padding="same", dilation=2),
            dict(stride=2, padding=1, output_padding=1, groups=2)]


@pytest.mark.parametrize("i", range(len(LAYERS)))
def test_layer_matches_torch(i):
    torch_cls, ours_cls, args, shape = LAYERS[i]
    torch.manual_seed(i)
    theirs = torch_cls(*args, **LAYER_KW[i])
    ours = ours_cls(*args, **LAYER_KW[i])
    assert isinstance(ours, torch_cls)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(*shape, requires_grad=True)
    y1, y2 = theirs(x), ours(x)
    _close(y2, y1)
    g = torch.randn_like(y1)
    g1 = torch.autograd.grad(y1, [x, *theirs.parameters()], g)
    g2 = torch.autograd.grad(y2, [x, *ours.parameters()], g)
    for a, b in zip(g2, g1):
        _close(a, b)


def test_conv2d_padding_modes_and_transpose_output_size():
    torch.manual_seed(10)
    for mode in ("reflect", "circular", "replicate"):
        theirs = nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode)
        ours = pft.convert(copy.deepcopy(theirs))
        x = torch.randn(2, 3, 6, 5)
        _close(ours(x), theirs(x))
    theirs = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    ours = pft.convert(copy.deepcopy(theirs))
    x = torch.randn(1, 3, 4, 4)
    _close(ours(x, output_size=(8, 8)), theirs(x, output_size=(8, 8)))


def test_cross_entropy_loss_module():
    torch.manual_seed(11)
    kw = dict(weight=torch.rand(5) + 0.5, ignore_index=1, label_smoothing=0.1)
    theirs, ours = nn.CrossEntropyLoss(**kw), pft.nn.CrossEntropyLoss(**kw)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x, t = torch.randn(7, 5, requires_grad=True), torch.randint(0, 5, (7,))
    l1, l2 = theirs(x, t), ours(x, t)
    _close(l2, l1)
    _close(torch.autograd.grad(l2, x)[0], torch.autograd.grad(l1, x)[0])


def test_convert_resnet18_same_outputs_and_gradients():
    # torchvision's ResNet-18 architecture, written with torch.nn (pyfast.bench's twin):
    # torchvision from PyPI does not import beside this torch build
    from pyfast.bench._torch_models import resnet
    torch.manual_seed(12)
    ref = resnet(18, num_classes=10, small_input=True)
    model = pft.convert(copy.deepcopy(ref))
    kinds = {type(m) for m in model.modules()}
    assert pft.nn.Conv2d in kinds and pft.nn.Linear in kinds and nn.Conv2d not in kinds
    assert all(a is b for a, b in zip(model.state_dict(keep_vars=True).values(),
                                      model.state_dict(keep_vars=True).values()))
    for (k1, v1), (k2, v2) in zip(ref.state_dict().items(), model.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(2, 3, 16, 16)  # layer4 sees 2x2: batch norm over 8 values
    t = torch.tensor([3, 7])
    losses = []
    for m, ce in ((ref, nn.functional.cross_entropy), (model, pft.cross_entropy)):
        loss = ce(m(x), t)
        loss.backward()
        losses.append(loss)
    _close(losses[1], losses[0])
    for (name, p1), p2 in zip(ref.named_parameters(), model.parameters()):
        scale = p1.grad.abs().max().item() + 1e-6
        assert (p1.grad - p2.grad).abs().max().item() <= 2e-3 * scale, name


def test_convert_shares_weights_in_place():
    lin = nn.Linear(3, 2)
    w = lin.weight
    root = nn.Sequential(lin, nn.ReLU(), nn.Linear(2, 2))
    assert pft.convert(root) is root
    assert type(root[0]) is pft.nn.Linear and root[0].weight is w
    assert type(pft.convert(nn.Linear(2, 2))) is pft.nn.Linear

    class Custom(nn.Linear):
        pass
    assert type(pft.convert(Custom(2, 2))) is Custom
    with pytest.raises(TypeError):
        pft.convert(lambda x: x)


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(self.up(x), 1))


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(13)
    model = pft.convert(_Small())
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([1, 4])

    def step(m):
        loss = pft.cross_entropy(m(x), t, label_smoothing=0.1)
        grads = torch.autograd.grad(loss, list(m.parameters()))
        return loss, grads
    eager = step(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = step(compiled)
    _close(got[0], eager[0])
    for a, b in zip(got[1], eager[1]):
        _close(a, b)
