"""Drop-in torch.nn layers whose forward and backward run pyfast's kernels.

Each is a subclass of its torch.nn class that overrides only ``forward``: the constructor,
parameters, buffers and state dict are torch's own, so ``convert`` can turn a torch layer
into its twin by changing its class, in place, sharing every tensor.
"""

from torch import nn
from torch.nn import functional as F

from . import functional as pff

__all__ = ["Linear", "Conv2d", "ConvTranspose2d", "CrossEntropyLoss", "convert"]


class Linear(nn.Linear):
    """torch.nn.Linear computed by pyfast's fused matmul (+ bias)."""

    def forward(self, input):
        return pff.linear(input, self.weight, self.bias)


class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d computed by pyfast's convolution kernels (every padding mode: the
    non-zero modes pad with torch first, as torch.nn.Conv2d does)."""

    def forward(self, input):
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice,
                           mode=self.padding_mode)
            return pff.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation,
                              self.groups)
        return pff.conv2d(input, self.weight, self.bias, self.stride, self.padding,
                          self.dilation, self.groups)


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d computed by pyfast's kernels (``output_size`` included)."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return pff.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                    output_padding, self.groups, self.dilation)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss computed by pyfast's fused softmax cross-entropy."""

    def forward(self, input, target):
        return pff.cross_entropy(input, target, weight=self.weight,
                                 ignore_index=self.ignore_index, reduction=self.reduction,
                                 label_smoothing=self.label_smoothing)


_TWINS = {nn.Linear: Linear, nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d,
          nn.CrossEntropyLoss: CrossEntropyLoss}


def convert(module):
    """Turn every torch.nn Linear, Conv2d, ConvTranspose2d and CrossEntropyLoss in
    ``module`` (itself included) into its pyfast twin, in place, and return ``module``.

    Only layers of exactly those classes change (a user's subclass may override forward);
    parameters, buffers, hooks and the state dict stay the same objects."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert takes a torch.nn.Module, got {type(module).__name__}")
    for m in module.modules():
        twin = _TWINS.get(type(m))
        if twin is not None:
            m.__class__ = twin
    return module

