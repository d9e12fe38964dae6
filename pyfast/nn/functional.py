"""pf.nn.functional: autograd-aware operations with torch.nn.functional's names, argument
names and defaults.

Each operation is a ``Function`` whose forward and backward call ``pf.ops`` kernels; this
module validates what ops cannot know about (torch's argument conventions), keeps what the
backward needs, and routes. Inputs may be Tensors or plain arrays; results are Tensors.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from pyfast import ops
from pyfast._random import generator
from pyfast.tensor import Function, Tensor, _as_data

__all__ = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "dropout", "batch_norm",
           "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "interpolate", "upsample",
           "flatten"]


def _data(x, name):
    """The array of a Tensor or array-like argument (for shape checks)."""
    if isinstance(x, Tensor):
        return x.data
    return _as_data(x)


def _shape_str(x):
    return str(tuple(x.shape))


# ---------------------------------------------------------------------------- linear

class _Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b, activation):
        rows = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
        y = ops.matmul(rows, w, trans_b=True, bias=b, activation=activation)
        ctx.rows, ctx.w, ctx.x_shape = rows, w, x.shape
        ctx.y = y if activation else None
        return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        g = g if g.ndim == 2 else g.reshape(-1, g.shape[-1])
        if ctx.y is not None:
            g = ops.relu_backward(g, ctx.y)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = ops.matmul(g, ctx.w).reshape(ctx.x_shape) if need_x else None
        gw = ops.matmul(g, ctx.rows, trans_a=True) if need_w else None
        gb = g.sum(axis=0) if need_b else None
        return gx, gw, gb


def linear(input, weight, bias=None, *, activation=None):
    """input @ weight.T + bias; input (..., in_features), weight (out_features, in_features).

    ``activation="relu"`` (a pyfast extension) fuses the ReLU into the GEMM's epilogue."""
    x, w = _data(input, "input"), _data(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got "
                         f"shape {_shape_str(w)}")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: input of shape {_shape_str(x)} does not match weight of "
                         f"shape {_shape_str(w)} (the last input dimension must be "
                         f"in_features={w.shape[1]})")
    if bias is not None:
        b = _data(bias, "bias")
        if b.shape != (w.shape[0],):
            raise ValueError(f"linear: bias must have shape ({w.shape[0]},), got "
                             f"{_shape_str(b)}")
    return _Linear.apply(input, weight, bias, activation=activation)


# ---------------------------------------------------------------------------- activations

class _Relu(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.y = ops.relu(x)
        return ctx.y

    @staticmethod
    def backward(ctx, g):
        return (ops.relu_backward(g, ctx.y),)


class _LeakyRelu(Function):
    @staticmethod
    def forward(ctx, x, slope):
        ctx.x, ctx.slope = x, slope
        return ops.leaky_relu(x, slope)

    @staticmethod
    def backward(ctx, g):
        return (ops.leaky_relu_backward(g, ctx.x, ctx.slope),)


class _Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.y = ops.sigmoid(x)
        return ctx.y

    @staticmethod
    def backward(ctx, g):
        return (ops.sigmoid_backward(g, ctx.y),)


class _Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.y = ops.tanh(x)
        return ctx.y

    @staticmethod
    def backward(ctx, g):
        return (ops.tanh_backward(g, ctx.y),)


def relu(input, inplace=False):
    """max(input, 0). ``inplace`` is accepted for torch compatibility; the result is always
    a new tensor (autograd keeps the input)."""
    return _Relu.apply(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return _LeakyRelu.apply(input, slope=negative_slope)


def sigmoid(input):
    return _Sigmoid.apply(input)


def tanh(input):
    return _Tanh.apply(input)


# ---------------------------------------------------------------------------- dropout

class _Dropout(Function):
    @staticmethod
    def forward(ctx, x, p):
        ctx.p = p
        ctx.seed = int(generator().integers(0, 1 << 63))
        return ops.dropout(x, p, ctx.seed)

    @staticmethod
    def backward(ctx, g):
        return (ops.dropout(g, ctx.p, ctx.seed),)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) when
    ``training``; the identity otherwise. The mask comes from pyfast's generator."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
    if not training or p == 0.0:
        return input if isinstance(input, Tensor) else Tensor(_as_data(input))
    return _Dropout.apply(input, p=float(p))


# ---------------------------------------------------------------------------- shape

def flatten(input, start_dim=0, end_dim=-1):
    x = input if isinstance(input, Tensor) else Tensor(_as_data(input))
    return x.flatten(start_dim, end_dim)


# ---------------------------------------------------------------------------- batch norm

class _BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, w, b, running_mean, running_var, training, momentum, eps):
        y, mean, invstd = ops.batch_norm(x, w, b, running_mean, running_var, training=training,
                                         momentum=momentum, eps=eps)
        ctx.x, ctx.w, ctx.mean, ctx.invstd, ctx.training = x, w, mean, invstd, training
        return y

    @staticmethod
    def backward(ctx, g):
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        needs = tuple(n for n, want in zip(("x", "w", "b"), (need_x, need_w, need_b)) if want)
        return ops.batch_norm_backward(g, ctx.x, ctx.w, ctx.mean, ctx.invstd,
                                       training=ctx.training, needs=needs)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-05):
    """Batch normalisation over every axis but 1 (torch.nn.functional.batch_norm).

    In training, the batch statistics normalise and the running statistics (when given)
    move by ``momentum`` (unbiased variance); otherwise the running statistics normalise."""
    if momentum is None:
        momentum = 0.0
    rm = None if running_mean is None else _data(running_mean, "running_mean")
    rv = None if running_var is None else _data(running_var, "running_var")
    return _BatchNorm.apply(input, weight, bias, training=bool(training), momentum=momentum,
                            eps=eps, running_mean=rm, running_var=rv)


# ---------------------------------------------------------------------------- pooling

class _MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, indices = ops.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.indices, ctx.shape = indices, x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        return (ops.max_pool2d_backward(g, ctx.indices, ctx.shape),)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    y = _MaxPool2d.apply(input, kernel_size=kernel_size, stride=stride, padding=padding,
                         dilation=dilation, ceil_mode=ceil_mode)
    if return_indices:
        indices = y.grad_fn.indices if y.grad_fn is not None else None
        if indices is None:  # not recorded: recompute (no autograd here)
            _, indices = ops.max_pool2d(_data(input, "input"), kernel_size, stride, padding,
                                        dilation, ceil_mode)
        return y, Tensor(indices)
    return y


class _AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, options):
        ctx.shape, ctx.options = x.shape, options
        return ops.avg_pool2d(x, **options)

    @staticmethod
    def backward(ctx, g):
        return (ops.avg_pool2d_backward(g, ctx.shape, **ctx.options),)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _AvgPool2d.apply(input, options=dict(
        kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
        count_include_pad=count_include_pad, divisor_override=divisor_override))


class _AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, output_size):
        ctx.shape = x.shape
        return ops.adaptive_avg_pool2d(x, output_size)

    @staticmethod
    def backward(ctx, g):
        return (ops.adaptive_avg_pool2d_backward(g, ctx.shape),)


def adaptive_avg_pool2d(input, output_size):
    """Average over adaptive windows to ``output_size`` (int or (h, w); None keeps that
    input size)."""
    x = _data(input, "input")
    if x.ndim not in (3, 4):
        raise ValueError(f"adaptive_avg_pool2d: input must be 3-D or 4-D, got shape "
                         f"{_shape_str(x)}")
    size = (output_size, output_size) if not isinstance(output_size, (tuple, list)) \
        else tuple(output_size)
    if len(size) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got "
                         f"{output_size!r}")
    size = tuple(x.shape[-2 + i] if s is None else s for i, s in enumerate(size))
    return _AdaptiveAvgPool2d.apply(input, output_size=size)


# ---------------------------------------------------------------------------- resample

class _Upsample(Function):
    @staticmethod
    def forward(ctx, x, size, scale_factor, mode, align_corners):
        ctx.shape = x.shape
        ctx.options = dict(scale_factor=scale_factor, mode=mode, align_corners=align_corners)
        return ops.upsample2d(x, size, **ctx.options)

    @staticmethod
    def backward(ctx, g):
        return (ops.upsample2d_backward(g, ctx.shape, **ctx.options),)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the last two axes of a 4-D input (modes "nearest" and "bilinear"), with
    torch.nn.functional.interpolate's conventions for sizes, scale factors and corners."""
    x = _data(input, "input")
    if x.ndim != 4:
        raise ValueError(f"interpolate: pyfast resizes 4-D (N, C, H, W) inputs, got shape "
                         f"{_shape_str(x)}")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"interpolate: mode must be 'nearest' or 'bilinear', got {mode!r}")
    if antialias:
        raise ValueError("interpolate: antialias is not supported")
    if mode == "nearest":
        if align_corners is not None:
            raise ValueError("align_corners option can only be set with the interpolating "
                             "modes: linear | bilinear | bicubic | trilinear")
        align_corners = False
    elif align_corners is None:
        align_corners = False
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        size = _pair(size, "size")
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size")
        return _Upsample.apply(input, size=size, scale_factor=None, mode=mode,
                               align_corners=bool(align_corners))
    scales = _pair(scale_factor, "scale_factor", number=True)
    if recompute_scale_factor:
        size = tuple(int(math.floor(float(n) * s)) for n, s in zip(x.shape[2:], scales))
        return _Upsample.apply(input, size=size, scale_factor=None, mode=mode,
                               align_corners=bool(align_corners))
    return _Upsample.apply(input, size=None, scale_factor=scales, mode=mode,
                           align_corners=bool(align_corners))


upsample = interpolate


def _pair(value, name, number=False):
    kinds = numbers.Real if number else numbers.Integral
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be one value or two (h, w), got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, kinds):
            raise TypeError(f"{name} must be {'numbers' if number else 'ints'}, got {value!r}")
    return tuple(float(v) for v in items) if number else tuple(int(v) for v in items)
