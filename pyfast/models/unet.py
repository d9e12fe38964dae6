"""U-Net (Ronneberger et al. 2015) for segmentation: an encoder of ``depth`` downsampling
stages, a symmetric decoder, and skip connections that concatenate each encoder stage's
features onto the decoder stage of the same resolution.

Every stage is two 3x3 convolutions (padding 1, so sizes only change at the 2x2 pools and
the upsamplings) with batch norm and ReLU; the stage at level i has ``base_channels * 2**i``
channels. Upsampling is a 2x2 stride-2 transposed convolution, or with ``bilinear=True`` a
1x1 convolution followed by bilinear interpolation (the two commute, and at the coarse
resolution the convolution costs a quarter). The output has the input's height and width
for any size divisible by 2**depth; it holds logits (``out_channels`` per pixel).
"""

from __future__ import annotations

import pyfast as pf
from pyfast import nn

from ._common import check_int

__all__ = ["UNet", "stage_widths"]


def stage_widths(base_channels, depth):
    """The channels of the stages at levels 0..depth: base_channels * 2**level (the torch
    twin in pyfast.bench reads them here too)."""
    return [base_channels << i for i in range(depth + 1)]


class _DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        # BN-ReLU fused into one kernel (self.relu stays registered, as before)
        x = self.bn1(self.conv1(x), activation="relu")
        return self.bn2(self.conv2(x), activation="relu")


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
        return self.conv(pf.cat([skip, self.up(x)], 1))


class UNet(nn.Module):
    """U-Net: input (N, in_channels, H, W), output logits (N, out_channels, H, W)."""

    def __init__(self, in_channels=1, out_channels=1, base_channels=64, depth=4,
                 bilinear=False):
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", 1, "UNet")
        out_channels = check_int(out_channels, "out_channels", 1, "UNet")
        base_channels = check_int(base_channels, "base_channels", 1, "UNet")
        self.depth = check_int(depth, "depth", 1, "UNet")
        self.bilinear = bool(bilinear)
        widths = stage_widths(base_channels, self.depth)
        self.inc = _DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList([_Down(widths[i], widths[i + 1]) for i in range(self.depth)])
        self.up = nn.ModuleList([_Up(widths[i + 1], widths[i], self.bilinear)
                                 for i in reversed(range(self.depth))])
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x):
        shape = tuple(x.shape)
        step = 1 << self.depth
        if len(shape) != 4 or shape[2] % step or shape[3] % step:
            raise ValueError(f"UNet: expected input (N, C, H, W) with H and W divisible by "
                             f"2**depth = {step}, got shape {shape}")
        skips = [self.inc(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        x = skips.pop()
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.head(x)
