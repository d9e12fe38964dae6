"""Hand-written PyTorch twins of pf.models' ResNet, DenseNet (torchvision's architectures;
torchvision is not a dependency) and U-Net, in the same module names and registration order:
the reference the tests hold pyfast's models to, key for key and logit for logit, and the
competitor of the end-to-end benchmark (pyfast.bench.models). Imports torch.

The code is a mirror by design (the same architecture written against torch.nn); the tables
that choose a network (blocks per stage, stage widths, dense-block sizes, U-Net widths)
are pf.models' own, read from there, so the twins cannot drift from what they check.
"""

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from pyfast.models import densenet as pf_densenet, resnet as pf_resnet
from pyfast.models.unet import stage_widths


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, in_channels=3, small_input=False):
        super().__init__()
        w1, w2, w3, w4 = pf_resnet.STAGE_WIDTHS
        self.inplanes = w1
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, w1, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, w1, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, w1, layers[0])
        self.layer2 = self._make_layer(block, w2, layers[1], 2)
        self.layer3 = self._make_layer(block, w3, layers[2], 2)
        self.layer4 = self._make_layer(block, w4, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w4 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(depth, **kw):
    bottleneck, layers = pf_resnet.CONFIGS[depth]
    return ResNet(Bottleneck if bottleneck else BasicBlock, layers, **kw)


class _DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, bn_size, growth):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    def __init__(self, growth=pf_densenet.GROWTH_RATE, blocks=pf_densenet.BLOCK_CONFIGS[121],
                 init_features=pf_densenet.NUM_INIT_FEATURES, bn_size=pf_densenet.BN_SIZE,
                 num_classes=1000, in_channels=3, small_input=False):
        super().__init__()
        if small_input:
            stem = [("conv0", nn.Conv2d(in_channels, init_features, 3, 1, 1, bias=False))]
        else:
            stem = [("conv0", nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False))]
        stem += [("norm0", nn.BatchNorm2d(init_features)), ("relu0", nn.ReLU(inplace=True))]
        if not small_input:
            stem.append(("pool0", nn.MaxPool2d(3, 2, 1)))
        self.features = nn.Sequential(OrderedDict(stem))
        n = init_features
        for i, layers in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(layers, n, bn_size, growth))
            n += layers * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(n, n // 2))
                n //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(n))
        self.classifier = nn.Linear(n, num_classes)

    def forward(self, x):
        out = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def densenet(depth, **kw):
    return DenseNet(pf_densenet.GROWTH_RATE, pf_densenet.BLOCK_CONFIGS[depth],
                    pf_densenet.NUM_INIT_FEATURES, **kw)


def randomise(model, seed=0):
    """Every parameter and buffer random (positive variances), so that a copy that swapped
    two tensors of one shape, or skipped a buffer, changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            if name.endswith("weight") and p.dim() == 1:   # batch-norm scale
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
    return model


class _DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class _Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = _DoubleConv(cin, cout)

    def forward(self, x):
        return self.conv(self.pool(x))


class _Up(nn.Module):
    def __init__(self, cin, cout, bilinear):
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(nn.Conv2d(cin, cout, 1),
                                    nn.Upsample(scale_factor=2, mode="bilinear",
                                                align_corners=False))
        else:
            self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = _DoubleConv(2 * cout, cout)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], 1))


class UNet(nn.Module):
    """pf.models.UNet's twin: same module names, shapes and computation."""

    def __init__(self, in_channels=1, out_channels=1, base_channels=64, depth=4, bilinear=False):
        super().__init__()
        widths = stage_widths(base_channels, depth)
        self.inc = _DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList([_Down(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([_Up(widths[i + 1], widths[i], bilinear)
                                 for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        x = skips.pop()
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.head(x)
