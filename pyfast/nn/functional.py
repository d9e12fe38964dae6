"""pf.nn.functional: autograd-aware operations with torch.nn.functional's names, argument
names and defaults.

Each operation is a ``Function`` whose forward and backward call ``pf.ops`` kernels; this
module validates what ops cannot know about (torch's argument conventions), keeps what the
backward needs, and routes. Inputs may be Tensors or plain arrays; results are Tensors.
"""

from __future__ import annotations

import numbers

from pyfast import ops
from pyfast._arrays import array_module, pair
from pyfast._random import generator
from pyfast.tensor import Function, ReluFunction, SigmoidFunction, TanhFunction, Tensor, as_data

__all__ = ["linear", "conv2d", "conv_transpose2d", "relu", "leaky_relu", "sigmoid", "tanh",
           "softmax", "log_softmax", "dropout", "batch_norm", "max_pool2d", "avg_pool2d",
           "adaptive_avg_pool2d", "interpolate", "upsample", "flatten", "cross_entropy",
           "binary_cross_entropy_with_logits", "mse_loss", "dice_loss"]


def _data(x, name):
    """The array of a Tensor or array-like argument (for shape checks)."""
    if isinstance(x, Tensor):
        return x.data
    return as_data(x)


def _shape_str(x):
    return str(tuple(x.shape))


# ---------------------------------------------------------------------------- linear

class _Linear(Function):
    fresh_grads = True

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

class _LeakyRelu(Function):
    fresh_grads = True

    @staticmethod
    def forward(ctx, x, slope):
        ctx.x, ctx.slope = x, slope
        return ops.leaky_relu(x, slope)

    @staticmethod
    def backward(ctx, g):
        return (ops.leaky_relu_backward(g, ctx.x, ctx.slope),)


def relu(input, inplace=False):
    """max(input, 0). ``inplace`` is accepted for torch compatibility; the result is always
    a new tensor (autograd keeps the input)."""
    return ReluFunction.apply(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return _LeakyRelu.apply(input, slope=negative_slope)


def sigmoid(input):
    return SigmoidFunction.apply(input)


def tanh(input):
    return TanhFunction.apply(input)


# ---------------------------------------------------------------------------- dropout

class _Dropout(Function):
    fresh_grads = True

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
        return input if isinstance(input, Tensor) else Tensor(as_data(input))
    return _Dropout.apply(input, p=float(p))


# ---------------------------------------------------------------------------- shape

def flatten(input, start_dim=0, end_dim=-1):
    x = input if isinstance(input, Tensor) else Tensor(as_data(input))
    return x.flatten(start_dim, end_dim)


# ---------------------------------------------------------------------------- batch norm

class _BatchNorm(Function):
    """Batch norm with the residual add and ReLU that follow it in ResNet / DenseNet / U-Net
    blocks fused in: y = relu(bn(x) + residual), one kernel forward and one backward (the
    plain layer when neither is given)."""

    fresh_grads = True

    @staticmethod
    def forward(ctx, x, w, b, residual, running_mean, running_var, training, momentum, eps,
                activation):
        y, mean, invstd = ops.batch_norm(x, w, b, running_mean, running_var, training=training,
                                         momentum=momentum, eps=eps, activation=activation,
                                         residual=residual)
        ctx.x, ctx.w, ctx.mean, ctx.invstd, ctx.training = x, w, mean, invstd, training
        ctx.activation = activation
        ctx.y = y if activation else None
        return y

    @staticmethod
    def backward(ctx, g):
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        needs = tuple(n for n, want in zip(("x", "w", "b"), (need_x, need_w, need_b)) if want)
        return ops.batch_norm_backward(g, ctx.x, ctx.w, ctx.mean, ctx.invstd,
                                       training=ctx.training, needs=needs,
                                       activation=ctx.activation, y=ctx.y, residual=need_r)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-05, *, activation=None, residual=None):
    """Batch normalisation over every axis but 1 (torch.nn.functional.batch_norm).

    In training, the batch statistics normalise and the running statistics (when given)
    move by ``momentum`` (unbiased variance); otherwise the running statistics normalise.

    pyfast extensions: ``residual`` (input's shape) is added to the result and
    ``activation="relu"`` applied after, in one fused kernel forward and backward:
    ``relu(batch_norm(input) + residual)``."""
    if momentum is None:
        momentum = 0.0
    if activation not in (None, "relu"):
        raise ValueError(f"batch_norm: activation must be None or 'relu', got {activation!r}")
    if residual is not None:
        r, x = _data(residual, "residual"), _data(input, "input")
        if r.shape != x.shape:
            raise ValueError(f"batch_norm: residual of shape {_shape_str(r)} does not match "
                             f"input of shape {_shape_str(x)}")
    rm = None if running_mean is None else _data(running_mean, "running_mean")
    rv = None if running_var is None else _data(running_var, "running_var")
    return _BatchNorm.apply(input, weight, bias, residual, training=bool(training),
                            momentum=momentum, eps=eps, running_mean=rm, running_var=rv,
                            activation=activation)


# ---------------------------------------------------------------------------- channel stack

class ChannelStack:
    """A concatenation along the channel axis that grows (DenseNet's feature stack), held in
    one preallocated (N, total_channels, H, W) buffer: each part is copied in once, when it
    is appended, and ``view()`` is ``pf.cat(parts so far, 1)`` as a view of the buffer, not
    a copy. (A pyfast extension; a layer per part with ``pf.cat`` would copy the whole
    stack again for every layer, and sum the parts' gradients slice by slice.)

    In the backward pass the views' gradients are added into one gradient buffer, and a
    part's gradient is handed on, as a slice of it, by the first view that contained the
    part; all later views consume it too and, as each later part is computed from an
    earlier view, their backward passes have run by then. A graph that breaks that order
    (a view whose gradient arrives after an earlier view's) raises instead of losing a
    contribution."""

    def __init__(self, first, total_channels):
        first = first if isinstance(first, Tensor) else Tensor(as_data(first))
        x = first.data
        if x.ndim != 4:
            raise ValueError(f"ChannelStack: expected a 4-D (N, C, H, W) input, got shape "
                             f"{_shape_str(x)}")
        if isinstance(total_channels, bool) or not isinstance(total_channels, numbers.Integral) \
                or total_channels < x.shape[1]:
            raise ValueError(f"ChannelStack: total_channels must be an int >= the first part's "
                             f"{x.shape[1]} channels, got {total_channels!r}")
        self._buffer = array_module(x).empty((x.shape[0], int(total_channels)) + x.shape[2:],
                                             x.dtype)
        self._buffer[:, :x.shape[1]] = x
        self._parts, self._bounds = [first], [0, x.shape[1]]
        self._viewed = 0               # parts already inside a view
        self._grad = None
        self._delivered_from = None    # lowest part whose gradient has been handed on

    @property
    def channels(self):
        return self._bounds[-1]

    def append(self, part):
        part = part if isinstance(part, Tensor) else Tensor(as_data(part))
        p, buf = part.data, self._buffer
        start = self._bounds[-1]
        if p.ndim != 4 or p.shape[0] != buf.shape[0] or p.shape[2:] != buf.shape[2:] \
                or start + p.shape[1] > buf.shape[1] or p.dtype != buf.dtype:
            raise ValueError(f"ChannelStack.append: part of shape {_shape_str(p)} ({p.dtype}) "
                             f"does not fit a stack of shape {_shape_str(buf)} ({buf.dtype}) "
                             f"with {start} channels used")
        buf[:, start:start + p.shape[1]] = p
        self._parts.append(part)
        self._bounds.append(start + p.shape[1])

    def view(self):
        """The concatenation of every part appended so far (a Tensor viewing the buffer)."""
        first, self._viewed = self._viewed, len(self._parts)
        return _StackView.apply(*self._parts, stack=self, first=first, count=len(self._parts))


class _StackView(Function):
    # the gradients handed on are views of the stack's gradient buffer: not fresh
    @staticmethod
    def forward(ctx, *parts, stack, first, count):
        ctx.stack, ctx.first, ctx.count = stack, first, count
        return stack._buffer[:, :stack._bounds[count]]

    @staticmethod
    def backward(ctx, g):
        st, first, count = ctx.stack, ctx.first, ctx.count
        if st._delivered_from is not None and count > st._delivered_from:
            raise RuntimeError("ChannelStack: a view's gradient arrived after the gradient of "
                               "a part it contains was handed on; every later part must be "
                               "computed from an earlier view")
        if st._grad is None:
            st._grad = array_module(g).zeros_like(st._buffer)
        st._grad[:, :st._bounds[count]] += g
        out = [None] * count
        for i in range(first, count):
            out[i] = st._grad[:, st._bounds[i]:st._bounds[i + 1]]
        if first < count:
            st._delivered_from = first
        return tuple(out)


# ---------------------------------------------------------------------------- pooling

class _MaxPool2d(Function):
    fresh_grads = True

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
    fresh_grads = True

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
    fresh_grads = True

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
    fresh_grads = True

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
        size = _two(size, "size")
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size")
        return _Upsample.apply(input, size=size, scale_factor=None, mode=mode,
                               align_corners=bool(align_corners))
    scales = _two(scale_factor, "scale_factor", number=True)
    if recompute_scale_factor:
        size, _ = ops.resample.output_size(tuple(x.shape[2:]), scale_factor=scales)
        return _Upsample.apply(input, size=size, scale_factor=None, mode=mode,
                               align_corners=bool(align_corners))
    return _Upsample.apply(input, size=None, scale_factor=scales, mode=mode,
                           align_corners=bool(align_corners))


upsample = interpolate


def _two(value, name, number=False):
    """``pair`` with interpolate's own complaint about a sequence of the wrong length (a
    ValueError, as torch's)."""
    if isinstance(value, (tuple, list)) and len(value) != 2:
        raise ValueError(f"{name} must be one value or two (h, w), got {value!r}")
    return pair(value, name, number=number)


# ---------------------------------------------------------------------------- convolution

class _Conv2d(Function):
    fresh_grads = True

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups, activation):
        y = ops.conv2d(x, w, b, stride, padding, dilation, groups, activation=activation)
        ctx.x, ctx.w = x, w
        ctx.params = (stride, padding, dilation, groups)
        ctx.y = y if activation else None
        return y

    @staticmethod
    def backward(ctx, g):
        if ctx.y is not None:
            g = ops.relu_backward(g, ctx.y)
        needs = tuple(n for n, want in zip(("x", "w", "b"), ctx.needs_input_grad[:3]) if want)
        return ops.conv2d_backward(g, ctx.x, ctx.w, *ctx.params, needs=needs)


def _conv_padding(padding, weight_shape, dilation, stride):
    """torch's string paddings: 'valid' is 0; 'same' keeps the size (stride 1, and here only
    when the total padding splits evenly between the two sides)."""
    if not isinstance(padding, str):
        return padding
    if padding == "valid":
        return 0
    if padding != "same":
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    if stride not in (1, (1, 1), [1, 1]):
        raise ValueError("padding='same' is not supported for strided convolutions")
    dil = dilation if isinstance(dilation, (tuple, list)) else (dilation, dilation)
    pads = []
    for d, k in zip(dil, weight_shape[2:]):
        total = d * (k - 1)
        if total % 2:
            raise ValueError(f"padding='same' with kernel {tuple(weight_shape[2:])} and dilation "
                             f"{dilation} needs uneven padding, which pyfast does not support")
        pads.append(total // 2)
    return tuple(pads)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           activation=None):
    """2-D convolution (torch.nn.functional.conv2d), bias fused; ``activation="relu"``
    (a pyfast extension) fuses a following ReLU into the same kernel."""
    w = _data(weight, "weight")
    padding = _conv_padding(padding, w.shape, dilation, stride)
    return _Conv2d.apply(input, weight, bias, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, activation=activation)


class _ConvTranspose2d(Function):
    fresh_grads = True

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, output_padding, groups, dilation):
        ctx.x, ctx.w = x, w
        ctx.params = dict(stride=stride, padding=padding, output_padding=output_padding,
                          dilation=dilation, groups=groups)
        return ops.conv_transpose2d(x, w, b, **ctx.params)

    @staticmethod
    def backward(ctx, g):
        needs = tuple(n for n, want in zip(("x", "w", "b"), ctx.needs_input_grad[:3]) if want)
        return ops.conv_transpose2d_backward(g, ctx.x, ctx.w, needs=needs, **ctx.params)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-D convolution (torch.nn.functional.conv_transpose2d: note groups comes
    before dilation). weight (in_channels, out_channels/groups, kh, kw)."""
    return _ConvTranspose2d.apply(input, weight, bias, stride=stride, padding=padding,
                                  output_padding=output_padding, groups=groups, dilation=dilation)


# ---------------------------------------------------------------------------- softmax

class _Softmax(Function):
    fresh_grads = True

    @staticmethod
    def forward(ctx, x, dim, log):
        y = (ops.log_softmax if log else ops.softmax)(x, axis=dim)
        ctx.y, ctx.dim, ctx.log = y, dim, log
        return y

    @staticmethod
    def backward(ctx, g):
        y, dim = ctx.y, ctx.dim
        if ctx.log:  # y = log p: gx = g - p * sum(g)
            return (g - _xp_exp(y) * g.sum(axis=dim, keepdims=True),)
        return (y * (g - (g * y).sum(axis=dim, keepdims=True)),)


def _xp_exp(a):
    return array_module(a).exp(a)


def softmax(input, dim=-1):
    return _Softmax.apply(input, dim=dim, log=False)


def log_softmax(input, dim=-1):
    return _Softmax.apply(input, dim=dim, log=True)


# ---------------------------------------------------------------------------- losses

_REDUCTIONS = ("none", "mean", "sum")


def legacy_reduction(size_average, reduce, reduction):
    """torch's handling of the deprecated size_average/reduce arguments."""
    if size_average is None and reduce is None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _scale_gradient(d, g, axis=None):
    """d * g for the loss gradient ``d`` and the upstream gradient ``g`` of the loss (a
    scalar for mean/sum, per-element for 'none'); g == 1 (the usual case) costs nothing."""
    if g.ndim == 0:
        if float(g) == 1.0:
            return d
        return d * g
    if axis is not None:  # per-row losses of a class-axis-1 loss: broadcast over classes
        g = g.reshape(g.shape[:axis] + (1,) + g.shape[axis:])
    return d * g


class _CrossEntropy(Function):
    fresh_grads = True

    @staticmethod
    def forward(ctx, logits, labels, weight, ignore_index, reduction, label_smoothing):
        loss, ctx.d = ops.softmax_cross_entropy(logits, labels, weight=weight,
                                                ignore_index=ignore_index,
                                                label_smoothing=label_smoothing,
                                                reduction=reduction)
        ctx.axis = 1 if logits.ndim > 1 else None
        return loss

    @staticmethod
    def backward(ctx, g):
        return (_scale_gradient(ctx.d, g, ctx.axis if g.ndim else None),)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy against integer class labels (torch semantics), through the
    fused kernel: the gradient is computed in the forward pass and handed to backward."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    labels = target.data if isinstance(target, Tensor) else target
    w = None if weight is None else _data(weight, "weight")
    return _CrossEntropy.apply(input, labels, w, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)


class _BCEWithLogits(Function):
    fresh_grads = True

    @staticmethod
    def forward(ctx, logits, target, weight, pos_weight, reduction):
        loss, ctx.d = ops.binary_cross_entropy_with_logits(
            logits, target, weight=weight, pos_weight=pos_weight, reduction=reduction)
        return loss

    @staticmethod
    def backward(ctx, g):
        return (_scale_gradient(ctx.d, g),)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one fused kernel (torch semantics). The target is a
    constant: no gradient flows to it."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    t = _data(target, "target")
    w = None if weight is None else _data(weight, "weight")
    pw = None if pos_weight is None else _data(pos_weight, "pos_weight")
    return _BCEWithLogits.apply(input, t, w, pw, reduction=reduction)


class _MSE(Function):
    fresh_grads = True

    @staticmethod
    def forward(ctx, x, target, reduction):
        loss, ctx.d = ops.mse_loss(x, target, reduction=reduction)
        return loss

    @staticmethod
    def backward(ctx, g):
        gx = _scale_gradient(ctx.d, g)
        return gx, (-gx if ctx.needs_input_grad[1] else None)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean squared error (torch semantics); gradients flow to both input and target."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    return _MSE.apply(input, target, reduction=reduction)


def dice_loss(logits, target, smooth=1.0):
    """1 - mean over samples of the soft Dice of sigmoid(logits) with ``target``:
    Dice_n = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth), sums over every axis
    but the first."""
    x = logits if isinstance(logits, Tensor) else Tensor(as_data(logits))
    t = target if isinstance(target, Tensor) else Tensor(as_data(target))
    if x.shape != t.shape:
        raise ValueError(f"dice_loss: target must have the shape of logits {tuple(x.shape)}, "
                         f"got {tuple(t.shape)}")
    if x.ndim < 2:
        raise ValueError(f"dice_loss: logits must be (N, ...) with at least 2 dimensions, got "
                         f"shape {tuple(x.shape)}")
    if t.dtype != x.dtype:
        t = t.detach().to(dtype=x.dtype)
    p = sigmoid(x)
    axes = tuple(range(1, x.ndim))
    inter = (p * t).sum(axis=axes)
    total = p.sum(axis=axes) + t.sum(axis=axes)
    dice = (inter * 2.0 + smooth) / (total + smooth)
    return 1.0 - dice.mean()
