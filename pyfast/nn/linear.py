"""Identity, Linear and Flatten, as torch.nn."""

import math

import numpy as np

from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Identity", "Linear", "Flatten"]


def empty_parameter(shape, device, dtype):
    data = np.empty(shape, np.float32 if dtype is None else np.dtype(dtype))
    if device is not None and str(device).partition(":")[0] == "cuda":
        import cupy
        data = cupy.asarray(data)
    return data


def add_weight_and_bias(module, weight_shape, outputs, bias, device, dtype):
    """``module.weight`` of ``weight_shape`` and ``module.bias`` of ``(outputs,)`` (None
    when ``bias`` is false), both then drawn by ``module.reset_parameters()``."""
    module.weight = Parameter(empty_parameter(weight_shape, device, dtype))
    if bias:
        module.bias = Parameter(empty_parameter((outputs,), device, dtype))
    else:
        module.register_parameter("bias", None)
    module.reset_parameters()


def reset_weight_and_bias(weight, bias):
    """torch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)) for the weight,
    i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class Identity(Module):
    """Returns its input; takes (and ignores) any arguments, as torch."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x @ weight.T + bias. weight (out_features, in_features) and bias drawn from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) (torch's kaiming_uniform(a=sqrt(5)))."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"Linear: {name} must be a non-negative int, got {n!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        add_weight_and_bias(self, (out_features, in_features), out_features, bias, device,
                            dtype)

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def forward(self, input, activation=None):
        return F.linear(input, self.weight, self.bias, activation=activation)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
