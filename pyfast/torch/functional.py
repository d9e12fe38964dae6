"""Autograd-aware functions with torch.nn.functional's signatures, computed by pyfast's
kernels (``torch.ops.pyfast``). They take and return torch tensors and trace under
``torch.compile(fullgraph=True)``: everything here besides the operators is shape
arithmetic."""

import torch
from torch.nn import functional as F

from . import _ops

__all__ = ["matmul", "linear", "conv2d", "conv_transpose2d", "cross_entropy",
           "linear_cross_entropy"]


def _pair(v, name):
    if isinstance(v, int) and not isinstance(v, bool):
        return [v, v]
    if isinstance(v, (tuple, list)) and len(v) == 1:
        return [v[0], v[0]]
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return [v[0], v[1]]
    raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")


def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, activation=None):
    """act(op(a) @ op(b) + bias) for 2-D a and b, in one pass over the output."""
    return _ops.matmul(a, b, trans_a, trans_b, bias, activation)


def linear(input, weight, bias=None):
    """torch.nn.functional.linear: input (..., in) @ weight.T + bias."""
    if weight.dim() != 2:
        raise ValueError(f"linear: weight must be 2-D (out, in), got shape "
                         f"{tuple(weight.shape)}")
    if input.dim() == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {tuple(input.shape)} does not end in "
                         f"weight's in_features {weight.shape[1]} (weight has shape "
                         f"{tuple(weight.shape)})")
    out = _ops.matmul(input.reshape(-1, weight.shape[1]), weight, False, True, bias, None)
    return out.reshape(*input.shape[:-1], weight.shape[0])


def _same_padding(x, weight, dilation):
    """F.conv2d's padding="same": the padding of each side, left = total // 2."""
    pads = []
    for k, d in zip(weight.shape[2:], dilation):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return pads


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d, padding "valid"/"same" and unbatched (C, H, W) input
    included."""
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0]
        elif padding == "same":
            if stride != [1, 1]:
                raise ValueError("conv2d: padding='same' is not supported for strided "
                                 "convolutions (as in torch)")
            (top, bottom), (left, right) = _same_padding(input, weight, dilation)
            if top != bottom or left != right:
                input = F.pad(input, (left, right, top, bottom))
                padding = [0, 0]
            else:
                padding = [top, left]
        else:
            raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', "
                             f"got {padding!r}")
    else:
        padding = _pair(padding, "padding")
    out = _ops.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return out.squeeze(0) if unbatched else out


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """torch.nn.functional.conv_transpose2d (its argument order: groups before dilation)."""
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    out = _ops.conv_transpose2d(input, weight, bias, _pair(stride, "stride"),
                                _pair(padding, "padding"),
                                _pair(output_padding, "output_padding"),
                                _pair(dilation, "dilation"), groups)
    return out.squeeze(0) if unbatched else out


def _reduction(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction as legacy
        return legacy.legacy_get_string(size_average, reduce)
    return reduction


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy with class-index targets: input (N, C),
    (N, C, d1, ...) or (C,); every option (weight, ignore_index, reduction,
    label_smoothing, the legacy size_average/reduce). The loss and its gradient come from
    one pass of pyfast's fused kernel."""
    reduction = _reduction(size_average, reduce, reduction)
    if target.is_floating_point():
        raise NotImplementedError(
            "pyfast.torch.cross_entropy: class-probability (floating-point) targets are not "
            "supported by pyfast's fused kernel; pass class indices (an integer tensor) or "
            "use torch.nn.functional.cross_entropy")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    loss, _ = _ops.softmax_cross_entropy(input, target, weight, int(ignore_index),
                                         float(label_smoothing), reduction)
    return loss


def linear_cross_entropy(h, weight, target, bias=None, *, ignore_index=-100,
                         label_smoothing=0.0, reduction="mean"):
    """cross_entropy(linear(h, weight, bias), target) with the classifier matmul and the
    loss fused over chunks of the classes, so the (N, V) logits never exist (reductions
    "mean" and "sum"; "none" needs each row's loss and runs the unfused pair of pyfast
    kernels). h (..., D), weight (V, D), target (...)."""
    if reduction == "none":
        return cross_entropy(linear(h, weight, bias), target, ignore_index=ignore_index,
                             reduction="none", label_smoothing=label_smoothing)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if h.dim() != 2:
        if h.dim() == 0 or target.shape != h.shape[:-1]:
            raise ValueError(f"linear_cross_entropy: target of shape {tuple(target.shape)} "
                             f"must be h's shape {tuple(h.shape)} without its last dimension")
        h, target = h.reshape(-1, h.shape[-1]), target.reshape(-1)
    loss = _ops.linear_cross_entropy(h, weight, target, bias, int(ignore_index),
                                     float(label_smoothing), reduction)[0]
    return loss
