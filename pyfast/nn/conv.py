"""Conv2d and ConvTranspose2d, as torch.nn: argument names and order, weight layouts
(out, in/groups, kh, kw) and (in, out/groups, kh, kw), and torch's default initialisation
(kaiming_uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the same bound for
the bias; fan_in = weight.shape[1] * kh * kw)."""

import numpy as np

from pyfast._arrays import pair
from pyfast.ops.conv import transpose_output_size

from . import functional as F
from .linear import add_weight_and_bias, reset_weight_and_bias
from .module import Module

__all__ = ["Conv2d", "ConvTranspose2d"]


def _positive_int(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


class _ConvNd(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 transposed, output_padding, groups, bias, padding_mode, device, dtype):
        super().__init__()
        owner = type(self).__name__
        in_channels = _positive_int(in_channels, "in_channels", owner)
        out_channels = _positive_int(out_channels, "out_channels", owner)
        groups = _positive_int(groups, "groups", owner)
        if in_channels % groups:
            raise ValueError(f"{owner}: in_channels must be divisible by groups")
        if out_channels % groups:
            raise ValueError(f"{owner}: out_channels must be divisible by groups")
        if padding_mode != "zeros":
            raise ValueError(f"{owner}: padding_mode {padding_mode!r} is not supported "
                             "(only 'zeros')")
        if isinstance(padding, str) and transposed:
            raise ValueError(f"{owner}: string padding is not supported")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1)
        self.stride = pair(stride, "stride", minimum=1)
        self.dilation = pair(dilation, "dilation", minimum=1)
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding",
                                                                     minimum=0)
        self.output_padding = pair(output_padding, "output_padding", minimum=0)
        self.transposed, self.groups, self.padding_mode = transposed, groups, padding_mode
        if transposed:
            shape = (in_channels, out_channels // groups) + self.kernel_size
        else:
            shape = (out_channels, in_channels // groups) + self.kernel_size
        add_weight_and_bias(self, shape, out_channels, bias, device, dtype)

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv2d(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         False, 0, groups, bias, padding_mode, device, dtype)

    def _check_input(self, input):
        shape = tuple(input.shape)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"Conv2d: expected input (N, {self.in_channels}, H, W), got shape "
                             f"{shape}")

    def forward(self, input, activation=None):
        self._check_input(input)
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups, activation=activation)


class ConvTranspose2d(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         True, output_padding, groups, bias, padding_mode, device, dtype)

    def _output_padding(self, input, output_size):
        """torch's choice of output_padding that makes the output ``output_size``."""
        if output_size is None:
            return self.output_padding
        size = tuple(output_size)[-2:]
        padding = []
        for i in range(2):
            smallest = transpose_output_size(input.shape[i + 2], self.kernel_size[i],
                                             self.stride[i], self.padding[i], self.dilation[i])
            extra = size[i] - smallest
            if not 0 <= extra < max(self.stride[i], self.dilation[i]):
                raise ValueError(f"ConvTranspose2d: requested output size {size} is not "
                                 f"reachable from input of shape {tuple(input.shape)}")
            padding.append(extra)
        return tuple(padding)

    def forward(self, input, output_size=None):
        shape = tuple(input.shape)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"ConvTranspose2d: expected input (N, {self.in_channels}, H, W), "
                             f"got shape {shape}")
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(input, output_size), self.groups,
                                  self.dilation)
