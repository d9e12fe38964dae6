"""DenseNet-121/169 with torchvision's layout (Huang et al. 2017, DenseNet-BC).

``features`` is a Sequential of conv0/norm0/relu0/pool0, then denseblock1..4 (each layer
sees the concatenation of everything before it in its block) with transition1..3 between
them (BN-ReLU-1x1 conv halving the channels, 2x2 average pool), then norm5; ``classifier``
is the Linear head. Names, order, shapes and initialisation are torchvision's, so converted
torchvision weights load with ``strict=True``. ``small_input=True`` makes conv0 a 3x3
stride-1 convolution and drops pool0 (it has no parameters, so the keys do not change).
Each BN-ReLU pair runs as one fused kernel (``norm(x, activation="relu")``); the ReLU
modules stay registered, as torchvision has them.
"""

from __future__ import annotations

from collections import OrderedDict

import pyfast as pf
from pyfast import nn
from pyfast.nn import functional as F

from ._common import check_int

__all__ = ["DenseNet", "densenet121", "densenet169", "BLOCK_CONFIGS", "GROWTH_RATE",
           "NUM_INIT_FEATURES", "BN_SIZE"]

# The named DenseNets: depth -> layers per dense block, and the hyper-parameters they share
# (torchvision's); the torch twin in pyfast.bench builds its networks from these same values.
BLOCK_CONFIGS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32)}
GROWTH_RATE = 32
NUM_INIT_FEATURES = 64
BN_SIZE = 4


class _DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * growth_rate channels), BN-ReLU-3x3 conv (growth_rate)."""

    def __init__(self, num_input_features, growth_rate, bn_size, drop_rate):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, features):
        x = features[0] if len(features) == 1 else pf.cat(features, 1)
        out = self.conv1(self.norm1(x, activation="relu"))
        out = self.conv2(self.norm2(out, activation="relu"))
        if self.drop_rate > 0:
            out = F.dropout(out, self.drop_rate, self.training)
        return out


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, num_input_features, bn_size, growth_rate, drop_rate):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}",
                            _DenseLayer(num_input_features + i * growth_rate, growth_rate,
                                        bn_size, drop_rate))

    def forward(self, x):
        # the concatenation of x and every layer's output lives in one buffer (each layer
        # reads a view of it and its output is copied in once) instead of pf.cat per layer
        layers = list(self.values())
        stack = F.ChannelStack(x, x.shape[1] + sum(m.conv2.out_channels for m in layers))
        for layer in layers:
            stack.append(layer([stack.view()]))
        return stack.view()


class _Transition(nn.Sequential):
    def __init__(self, num_input_features, num_output_features):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(num_input_features))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(num_input_features, num_output_features, 1,
                                          bias=False))
        self.add_module("pool", nn.AvgPool2d(2, stride=2))

    def forward(self, x):
        return self.pool(self.conv(self.norm(x, activation="relu")))


class DenseNet(nn.Module):
    """DenseNet-BC: input (N, in_channels, H, W), output logits (N, num_classes)."""

    def __init__(self, growth_rate=GROWTH_RATE, block_config=BLOCK_CONFIGS[121],
                 num_init_features=NUM_INIT_FEATURES, bn_size=BN_SIZE, drop_rate=0.0,
                 num_classes=1000, in_channels=3, small_input=False):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", 1, "DenseNet")
        in_channels = check_int(in_channels, "in_channels", 1, "DenseNet")
        self.small_input = bool(small_input)
        if self.small_input:
            stem = [("conv0", nn.Conv2d(in_channels, num_init_features, 3, stride=1, padding=1,
                                        bias=False))]
        else:
            stem = [("conv0", nn.Conv2d(in_channels, num_init_features, 7, stride=2, padding=3,
                                        bias=False))]
        stem += [("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU(inplace=True))]
        if not self.small_input:
            stem.append(("pool0", nn.MaxPool2d(3, stride=2, padding=1)))
        self.features = nn.Sequential(OrderedDict(stem))

        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}",
                                     _DenseBlock(num_layers, num_features, bn_size, growth_rate,
                                                 drop_rate))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}",
                                         _Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)

        # torchvision's initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = F.relu(self.features(x))
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _named(depth, num_classes, in_channels, small_input):
    return DenseNet(GROWTH_RATE, BLOCK_CONFIGS[depth], NUM_INIT_FEATURES,
                    num_classes=num_classes, in_channels=in_channels, small_input=small_input)


def densenet121(num_classes=1000, in_channels=3, small_input=False):
    """DenseNet-121 (7,978,856 parameters with the defaults)."""
    return _named(121, num_classes, in_channels, small_input)


def densenet169(num_classes=1000, in_channels=3, small_input=False):
    """DenseNet-169 (14,149,480 parameters with the defaults)."""
    return _named(169, num_classes, in_channels, small_input)
