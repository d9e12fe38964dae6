"""ResNet-18/34/50 with torchvision's layout (He et al. 2015, "v1.5": the stride of a
bottleneck sits on its 3x3 convolution).

Module names, registration order, shapes and initialisation follow torchvision.models.resnet,
so ``state_dict()`` has torchvision's keys in torchvision's order and converted torchvision
weights load with ``strict=True`` and give the same logits. ``small_input=True`` is the
CIFAR-style variant for 32x32 (or smaller) images: the stem is a 3x3 stride-1 convolution
and the max-pool is an Identity; the keys stay the same (only conv1's shape changes).
``in_channels`` changes conv1's input channels (1 for grey-scale scans).

Each batch norm runs with the ReLU (and the residual add) after it fused into one kernel
(``BatchNorm2d.forward(x, activation="relu", residual=identity)``); the ``relu`` modules stay
registered, as torchvision has them, but the forward passes do not call them.
"""

from __future__ import annotations

from pyfast import nn

from ._common import check_int

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "CONFIGS",
           "STAGE_WIDTHS"]

# The named ResNets: depth -> (bottleneck blocks?, blocks per stage), and the stages'
# widths (planes before a block's expansion; the stem has the first stage's). The torch
# twin in pyfast.bench builds its networks from these same tables.
CONFIGS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3))}
STAGE_WIDTHS = (64, 128, 256, 512)


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x), activation="relu")
        return self.bn2(self.conv2(out), activation="relu", residual=identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x), activation="relu")
        out = self.bn2(self.conv2(out), activation="relu")
        return self.bn3(self.conv3(out), activation="relu", residual=identity)


class ResNet(nn.Module):
    """A ResNet of ``block`` (BasicBlock or Bottleneck) repeated ``layers`` times per stage.

    Input (N, in_channels, H, W); output logits (N, num_classes). Any H, W large enough for
    the strides work (the head pools adaptively): >= 32 for the ImageNet stem, >= 8 with
    ``small_input``."""

    def __init__(self, block, layers, num_classes=1000, in_channels=3, small_input=False):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", 1, "ResNet")
        in_channels = check_int(in_channels, "in_channels", 1, "ResNet")
        if len(layers) != 4:
            raise ValueError(f"ResNet: layers must give 4 stage depths, got {layers!r}")
        self.small_input = bool(small_input)
        w1, w2, w3, w4 = STAGE_WIDTHS
        self.inplanes = w1
        if self.small_input:
            self.conv1 = nn.Conv2d(in_channels, w1, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, w1, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if self.small_input else nn.MaxPool2d(3, stride=2,
                                                                           padding=1)
        self.layer1 = self._make_layer(block, w1, layers[0])
        self.layer2 = self._make_layer(block, w2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, w3, layers[2], stride=2)
        self.layer4 = self._make_layer(block, w4, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w4 * block.expansion, num_classes)

        # torchvision's initialisation (fc keeps Linear's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x), activation="relu"))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _named(depth, num_classes, in_channels, small_input):
    bottleneck, layers = CONFIGS[depth]
    return ResNet(Bottleneck if bottleneck else BasicBlock, layers, num_classes, in_channels,
                  small_input)


def resnet18(num_classes=1000, in_channels=3, small_input=False):
    """ResNet-18 (11,689,512 parameters with the defaults)."""
    return _named(18, num_classes, in_channels, small_input)


def resnet34(num_classes=1000, in_channels=3, small_input=False):
    """ResNet-34 (21,797,672 parameters with the defaults)."""
    return _named(34, num_classes, in_channels, small_input)


def resnet50(num_classes=1000, in_channels=3, small_input=False):
    """ResNet-50 (25,557,032 parameters with the defaults)."""
    return _named(50, num_classes, in_channels, small_input)
