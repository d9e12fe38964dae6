"""pyfast's kernels as torch custom operators in the ``pyfast`` namespace.

Every operator allocates its outputs as torch tensors and has ``pf.ops`` write into them:
on CUDA with torch (``new_empty``: torch's caching allocator), on the CPU from pyfast's
caching allocator shared through ``torch.from_numpy`` (torch's CPU allocator maps and unmaps
large blocks afresh each time; see ``_empty``). CPU tensors reach ``pf.ops`` as NumPy views
of their memory, CUDA tensors as themselves (DLPack, zero copy) with the kernels launched on
torch's current stream.

Registration: the functional operators are declared with ``torch.library`` ``define`` /
``impl`` (the eager call costs less than ``torch.library.custom_op``'s wrapper: see
benchmarks/bench_torch.py), with ``register_fake`` for tracing and ``register_autograd``
whose backward formulas are themselves ``torch.ops.pyfast`` calls, so they trace under
``torch.compile``. The optimizer steps mutate their arguments, which ``register_autograd``
does not accept (it is for functional operators only); they are ``custom_op``s (which
bump the version counters of what they mutate) with no gradient formula: a backward through
one raises torch's "no autograd formula" error. torch.optim (and pyfast.torch.optim) call
them under ``torch.no_grad()``.

The module's names (``matmul``, ``adam_step``, ...) are what pyfast.torch's functions and
optimizers call: in eager mode on plain CPU tensors they run the same kernels, gradient
formulas and version-counter bumps without the dispatcher's round trip through Python
(``_define``, ``_step_op``); compiling, profiling, functorch and CUDA tensors go through
the operators (each name's ``.op``).

Schemas carry no defaults and no keyword-only arguments: the Python kernels then always
receive every argument positionally.
"""

import contextlib
import inspect
from typing import List

import numpy as np
import torch

from pyfast import _memory
from pyfast import ops as pfops

_lib = torch.library.Library("pyfast", "DEF")

_UNSUPPORTED = (torch.float16, torch.bfloat16)


def _cpu_view(t, name="tensor"):
    if t is None:
        return None
    if t.dtype in _UNSUPPORTED:
        raise TypeError(f"pyfast kernels take float32 or float64 tensors; {name} is {t.dtype}")
    return t.detach().numpy() if t.requires_grad else t.numpy()


def _cuda_view(t, name="tensor"):
    if t is None:
        return None
    if t.dtype in _UNSUPPORTED:
        raise TypeError(f"pyfast kernels take float32 or float64 tensors; {name} is {t.dtype}")
    return t.detach()


@contextlib.contextmanager
def _torch_stream(device):
    """CuPy (which pf.ops' CUDA backend launches on) pointed at torch's current stream and
    device, so pyfast's kernels are ordered with torch's. Not yet run on a GPU."""
    try:
        import cupy
    except ImportError:
        raise RuntimeError(f"pyfast's kernels on CUDA tensors ({device}) need CuPy and the "
                           f"extension pyfast._cuda; CuPy is not installed") from None
    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream,
                                                                  device.index):
        yield


def _first_device(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            return a[0].device
    raise ValueError("no tensor argument")


# When the eager paths below hand over to the operators.
compiling, profiling = torch.compiler.is_compiling, torch.autograd._profiler_enabled
transforming = torch._C._are_functorch_transforms_active


def _plain_cpu(args):
    """Whether every tensor argument is a plain CPU tensor, and whether one requires grad
    (None when a tensor is not plain: a subclass, a functorch wrapper, or on the GPU)."""
    grad = False
    for a in args:
        if isinstance(a, torch.Tensor):
            if type(a) is not torch.Tensor or not a.is_cpu:
                return None
            grad = grad or a.requires_grad
    return grad


def _define(schema, impl, fake, backward=None, setup_context=None):
    """Declare ``pyfast::<schema>`` with ``impl(view, *args)`` as its CPU and CUDA kernel.

    Returns what pyfast.torch's functions (and the gradient formulas) call: the operator
    itself while torch.compile traces, the profiler records, or an argument is not a plain
    CPU tensor; otherwise, in eager mode, the same kernel and gradient formula without the
    dispatcher's round trip through Python (its autograd layer alone costs more than the
    kernel of a 64x64 matmul): ``impl`` directly where no gradient is needed, else an
    autograd.Function with the operator's setup_context and backward. (functorch transforms
    wrap plain tensors, so they take the operator too.)"""
    name = schema.split("(", 1)[0]
    _lib.define(schema)

    def cpu(*args):
        return impl(_cpu_view, *args)

    def cuda(*args):
        with _torch_stream(_first_device(args)):
            return impl(_cuda_view, *args)

    _lib.impl(name, cpu, "CPU")
    _lib.impl(name, cuda, "CUDA")
    torch.library.register_fake(f"pyfast::{name}", fake, lib=_lib)
    op = getattr(torch.ops.pyfast, name).default
    if backward is None:
        return op
    torch.library.register_autograd(f"pyfast::{name}", backward,
                                    setup_context=setup_context, lib=_lib)

    def forward(ctx, *args):
        out = impl(_cpu_view, *args)
        setup_context(ctx, args, out)
        return out

    # forward(ctx, ...) style, and Function's C apply: with a separate setup_context,
    # Function.apply binds the arguments through inspect.signature on every call (~15 us).
    eager = type(f"{name}_eager", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})
    eager_apply = super(torch.autograd.Function, eager).apply

    def call(*args):
        if compiling() or profiling() or transforming():
            return op(*args)
        grad = _plain_cpu(args)
        if grad is None:
            return op(*args)
        if grad and torch.is_grad_enabled():
            return eager_apply(*args)
        return impl(_cpu_view, *args)

    call.op = op
    call.__name__ = call.__qualname__ = name
    return call


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_pooled_empty = _memory.allocates(np.empty)


def _empty(shape, like):
    """An output with like's dtype and device. On the CPU its memory comes from pyfast's
    caching allocator (pf.memory), shared with torch through torch.from_numpy: torch's CPU
    allocator gives large blocks back to the system when they are freed, so the 262 MB
    gradient of a 2048 x 32000 cross-entropy faulted its pages in again on every step (about
    230 of its 270 ms at 1 thread). On CUDA, torch's caching allocator (new_empty)."""
    dtype = _NUMPY_DTYPES.get(like.dtype) if like.is_cpu else None
    if dtype is None:
        return like.new_empty(shape)
    return torch.from_numpy(_pooled_empty(shape, dtype))


def _none_if_empty(t, wanted):
    return t if wanted else None


# ---- matmul ------------------------------------------------------------------------------

def _mm_shape(a, b, trans_a, trans_b):
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"matmul: a and b must be 2-D, got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return (a.shape[1] if trans_a else a.shape[0], b.shape[0] if trans_b else b.shape[1])


def _matmul_impl(view, a, b, trans_a, trans_b, bias, activation):
    out = _empty(_mm_shape(a, b, trans_a, trans_b), a)
    pfops.matmul(view(a, "a"), view(b, "b"), trans_a=trans_a, trans_b=trans_b,
                 bias=view(bias, "bias"), activation=activation, out=view(out))
    return out


def _matmul_fake(a, b, trans_a, trans_b, bias, activation):
    return a.new_empty(_mm_shape(a, b, trans_a, trans_b))


def _matmul_setup(ctx, inputs, output):
    a, b, trans_a, trans_b, bias, activation = inputs
    ctx.flags = (trans_a, trans_b, activation == "relu")
    ctx.save_for_backward(a, b, output if activation == "relu" else None)


def _matmul_backward(ctx, g):
    a, b, out = ctx.saved_tensors
    trans_a, trans_b, relu = ctx.flags
    if relu:
        g = g * (out > 0)
    need_a, need_b, _, _, need_bias, _ = ctx.needs_input_grad
    da = db = dbias = None
    if need_a:  # d op(a) = g @ op(b)^T
        da = (matmul(b, g, trans_b, True, None, None) if trans_a
              else matmul(g, b, False, not trans_b, None, None))
    if need_b:  # d op(b) = op(a)^T @ g
        db = (matmul(g, a, True, trans_a, None, None) if trans_b
              else matmul(a, g, not trans_a, False, None, None))
    if need_bias:
        dbias = g.sum(0)
    return da, db, None, None, dbias, None


matmul = _define(
    "matmul(Tensor a, Tensor b, bool trans_a, bool trans_b, Tensor? bias, str? activation)"
    " -> Tensor", _matmul_impl, _matmul_fake, _matmul_backward, _matmul_setup)


# ---- conv2d, its backward, conv_transpose2d ------------------------------------------------

def _conv_shape(x, w, stride, padding, dilation):
    if x.dim() != 4 or w.dim() != 4:
        raise ValueError(f"conv2d: x and w must be 4-D, got shapes {tuple(x.shape)} and "
                         f"{tuple(w.shape)}")
    n, _, h, wd = x.shape
    k, _, kh, kw = w.shape
    return (n, k, (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1,
            (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1)


def _valid_shape(shape_fn, *args):
    """The output shape, or None where it is not one (pf.ops then raises the full error)."""
    try:
        shape = shape_fn(*args)
    except ValueError:
        return None
    return shape if min(shape[1:]) >= 1 else None


def _conv2d_impl(view, x, w, bias, stride, padding, dilation, groups):
    args = (view(x, "x"), view(w, "w"), view(bias, "bias"), tuple(stride), tuple(padding),
            tuple(dilation), groups)
    shape = _valid_shape(_conv_shape, x, w, stride, padding, dilation)
    if shape is None:
        return torch.from_numpy(pfops.conv2d(*args))  # only reached if it does not raise
    out = _empty(shape, x)
    pfops.conv2d(*args, out=view(out))
    return out


def _conv2d_fake(x, w, bias, stride, padding, dilation, groups):
    return x.new_empty(_conv_shape(x, w, stride, padding, dilation))


def _conv2d_setup(ctx, inputs, output):
    x, w, bias, stride, padding, dilation, groups = inputs
    ctx.params = (stride, padding, dilation, groups)
    ctx.save_for_backward(x, w)


def _conv2d_backward_formula(ctx, g):
    x, w = ctx.saved_tensors
    need = list(ctx.needs_input_grad[:3])
    if not any(need):
        return None, None, None, None, None, None, None
    gx, gw, gb = conv2d_backward(g, x, w, *ctx.params, need)
    return (_none_if_empty(gx, need[0]), _none_if_empty(gw, need[1]),
            _none_if_empty(gb, need[2]), None, None, None, None)


conv2d = _define(
    "conv2d(Tensor x, Tensor w, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation,"
    " int groups) -> Tensor", _conv2d_impl, _conv2d_fake, _conv2d_backward_formula,
    _conv2d_setup)


def _grad_shapes(gy, x, w, mask):
    """Shapes of conv2d_backward's three results: a result not asked for is empty."""
    return (tuple(x.shape) if mask[0] else (0,), tuple(w.shape) if mask[1] else (0,),
            (w.shape[0],) if mask[2] else (0,))


def _conv2d_backward_impl(view, gy, x, w, stride, padding, dilation, groups, mask):
    needs = tuple(v for v, m in zip(("x", "w", "b"), mask) if m)
    outs = [_empty(s, x) for s in _grad_shapes(gy, x, w, mask)]
    pfops.conv2d_backward(view(gy, "gy"), view(x, "x"), view(w, "w"), tuple(stride),
                          tuple(padding), tuple(dilation), groups, needs,
                          out=tuple(view(o) if m else None for o, m in zip(outs, mask)))
    return tuple(outs)


def _conv2d_backward_fake(gy, x, w, stride, padding, dilation, groups, mask):
    return tuple(x.new_empty(s) for s in _grad_shapes(gy, x, w, mask))


def _conv2d_backward_setup(ctx, inputs, output):
    gy, x, w, stride, padding, dilation, groups, mask = inputs
    ctx.params = (stride, padding, dilation, groups)
    ctx.mask = mask
    ctx.set_materialize_grads(False)  # the double backward takes None for what is unused
    ctx.save_for_backward(gy, x, w)


def _conv2d_double_backward(ctx, ggx, ggw, ggb):
    """gx is linear in (gy, w), gw in (gy, x), gb in gy; each term is a convolution or one
    of its gradients."""
    gy, x, w = ctx.saved_tensors
    params = ctx.params
    mask = ctx.mask
    ggx = ggx if mask[0] and ggx is not None else None
    ggw = ggw if mask[1] and ggw is not None else None
    ggb = ggb if mask[2] and ggb is not None else None
    need_gy, need_x, need_w = ctx.needs_input_grad[:3]
    dgy = dx = dw = None
    if need_gy:
        dgy = torch.zeros_like(gy)
        if ggx is not None:
            dgy = dgy + conv2d(ggx, w, None, *params)
        if ggw is not None:
            dgy = dgy + conv2d(x, ggw, None, *params)
        if ggb is not None:
            dgy = dgy + ggb.reshape(1, -1, 1, 1)
    if need_x and ggw is not None:
        dx = conv2d_backward(gy, x, ggw, *params, [True, False, False])[0]
    if need_w and ggx is not None:
        dw = conv2d_backward(gy, ggx, w, *params, [False, True, False])[1]
    return dgy, dx, dw, None, None, None, None, None


conv2d_backward = _define(
    "conv2d_backward(Tensor gy, Tensor x, Tensor w, int[2] stride, int[2] padding,"
    " int[2] dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
    _conv2d_backward_impl, _conv2d_backward_fake, _conv2d_double_backward,
    _conv2d_backward_setup)


def _transpose_shape(x, w, stride, padding, output_padding, dilation, groups):
    if x.dim() != 4 or w.dim() != 4:
        raise ValueError(f"conv_transpose2d: x and w must be 4-D, got shapes "
                         f"{tuple(x.shape)} and {tuple(w.shape)}")
    n, _, h, wd = x.shape
    _, kg, kh, kw = w.shape
    return (n, kg * groups,
            (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1,
            (wd - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1]
            + 1)


def _conv_transpose2d_impl(view, x, w, bias, stride, padding, output_padding, dilation,
                           groups):
    args = (view(x, "x"), view(w, "w"), view(bias, "bias"), tuple(stride), tuple(padding),
            tuple(output_padding), tuple(dilation), groups)
    shape = _valid_shape(_transpose_shape, x, w, stride, padding, output_padding, dilation,
                         groups)
    if shape is None:
        return torch.from_numpy(pfops.conv_transpose2d(*args))  # only if it does not raise
    out = _empty(shape, x)
    pfops.conv_transpose2d(*args, out=view(out))
    return out


def _conv_transpose2d_fake(x, w, bias, stride, padding, output_padding, dilation, groups):
    return x.new_empty(_transpose_shape(x, w, stride, padding, output_padding, dilation,
                                        groups))


def _conv_transpose2d_setup(ctx, inputs, output):
    x, w, bias, stride, padding, output_padding, dilation, groups = inputs
    ctx.params = (stride, padding, dilation, groups)
    ctx.save_for_backward(x, w)


def _conv_transpose2d_backward(ctx, g):
    """y = conv_transpose2d(x, w) is the input-gradient of z = conv2d(y, w): gx is conv2d
    of g, gw the weight-gradient of that convolution with x as its output gradient."""
    x, w = ctx.saved_tensors
    params = ctx.params
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    h, wd = x.shape[2:]
    conv_h, conv_w = _conv_shape(g, w, *params[:3])[2:]
    gx = gw = gb = None
    if need_x:
        gx = conv2d(g, w, None, *params)
        if (conv_h, conv_w) != (h, wd):  # output_padding reached past x's rows
            gx = gx[:, :, :h, :wd]
    if need_w:
        xp = x
        if (conv_h, conv_w) != (h, wd):
            xp = torch.nn.functional.pad(x, (0, conv_w - wd, 0, conv_h - h))
        gw = conv2d_backward(xp, g, w, *params, [False, True, False])[1]
    if need_b:
        gb = g.sum((0, 2, 3))
    return gx, gw, gb, None, None, None, None, None


conv_transpose2d = _define(
    "conv_transpose2d(Tensor x, Tensor w, Tensor? bias, int[2] stride, int[2] padding,"
    " int[2] output_padding, int[2] dilation, int groups) -> Tensor",
    _conv_transpose2d_impl, _conv_transpose2d_fake, _conv_transpose2d_backward,
    _conv_transpose2d_setup)


# ---- losses ---------------------------------------------------------------------------------

def _loss_shape(labels, reduction):
    return tuple(labels.shape) if reduction == "none" else ()


def _xent_impl(view, logits, labels, weight, ignore_index, label_smoothing, reduction):
    loss = _empty(_loss_shape(labels, reduction), logits)
    dlogits = _empty(logits.shape, logits)
    pfops.softmax_cross_entropy(view(logits, "logits"), view(labels, "labels"),
                                weight=view(weight, "weight"), ignore_index=ignore_index,
                                label_smoothing=label_smoothing, reduction=reduction,
                                out=(view(loss), view(dlogits)))
    return loss, dlogits


def _xent_fake(logits, labels, weight, ignore_index, label_smoothing, reduction):
    return (logits.new_empty(_loss_shape(labels, reduction)), logits.new_empty(logits.shape))


def _xent_setup(ctx, inputs, output):
    logits, labels = inputs[:2]
    ctx.none = inputs[5] == "none"
    ctx.batched = logits.dim() > 1
    ctx.mark_non_differentiable(output[1])
    # dlogits' gradient stays None: materialised, it was a zero-filled (N, C) tensor per
    # backward (61 of the 77 ms of a 2048 x 32000 backward).
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[1])


def _is_one(g):
    """True for a concrete CPU scalar 1 (a loss's own backward seed): the saved gradient is
    then returned as it is, saving a pass over the logits. Traced tensors (fake, functional)
    are subclasses and never take this path."""
    return (type(g) is torch.Tensor and g.dim() == 0 and g.is_cpu
            and not g.requires_grad and g.item() == 1.0)


def _xent_backward(ctx, gloss, _gdlogits):
    (dlogits,) = ctx.saved_tensors
    if gloss is None:  # not materialised: the loss reached no output
        return None, None, None, None, None, None
    if ctx.none:
        grad = dlogits * (gloss.unsqueeze(1) if ctx.batched else gloss)
    elif _is_one(gloss):
        grad = dlogits
    else:
        grad = dlogits * gloss
    return grad, None, None, None, None, None


softmax_cross_entropy = _define(
    "softmax_cross_entropy(Tensor logits, Tensor labels, Tensor? weight, int ignore_index,"
    " float label_smoothing, str reduction) -> (Tensor, Tensor)",
    _xent_impl, _xent_fake, _xent_backward, _xent_setup)


def _lxent_shapes(h, w, labels, bias, reduction):
    return (_loss_shape(labels, reduction), tuple(h.shape), tuple(w.shape),
            tuple(bias.shape) if bias is not None else (0,))


def _lxent_impl(view, h, w, labels, bias, ignore_index, label_smoothing, reduction):
    if reduction == "none":
        raise ValueError("pyfast::linear_cross_entropy returns the gradients of a reduced "
                         "loss: reduction must be 'mean' or 'sum' (pyfast.torch."
                         "linear_cross_entropy handles 'none')")
    loss, dh, dw, db = (_empty(s, h) for s in _lxent_shapes(h, w, labels, bias, reduction))
    value = pfops.linear_cross_entropy(
        view(h, "h"), view(w, "w"), view(labels, "labels"), bias=view(bias, "bias"),
        ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
        out=(view(dh), view(dw), None if bias is None else view(db)))[0]
    if view is _cpu_view:
        view(loss)[...] = value
    else:
        loss.copy_(torch.as_tensor(value, device=h.device))
    return loss, dh, dw, db


def _lxent_fake(h, w, labels, bias, ignore_index, label_smoothing, reduction):
    return tuple(h.new_empty(s) for s in _lxent_shapes(h, w, labels, bias, reduction))


def _lxent_setup(ctx, inputs, output):
    ctx.has_bias = inputs[3] is not None
    for t in output[1:]:
        ctx.mark_non_differentiable(t)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for dh, dw, db
    ctx.save_for_backward(*output[1:])


def _lxent_backward(ctx, gloss, *_):
    dh, dw, db = ctx.saved_tensors
    if gloss is None:  # not materialised: the loss reached no output
        return None, None, None, None, None, None, None
    if _is_one(gloss):
        return dh, dw, None, db if ctx.has_bias else None, None, None, None
    return (dh * gloss, dw * gloss, None, db * gloss if ctx.has_bias else None, None, None,
            None)


linear_cross_entropy = _define(
    "linear_cross_entropy(Tensor h, Tensor w, Tensor labels, Tensor? bias, int ignore_index,"
    " float label_smoothing, str reduction) -> (Tensor, Tensor, Tensor, Tensor)",
    _lxent_impl, _lxent_fake, _lxent_backward, _lxent_setup)


# ---- optimizer steps ------------------------------------------------------------------------

def _on_device(params):
    if params and isinstance(params[0], torch.Tensor) and params[0].is_cuda:
        return _torch_stream(params[0].device), _cuda_view
    return contextlib.nullcontext(), _cpu_view


def _views(view, ts):
    """Views of a list of tensors; an empty list of optional state stands for None (schemas
    have no optional lists). A list the eager path has viewed already (ReusedViews) passes
    as it is."""
    if not ts:
        return None
    return ts if type(ts[0]) is np.ndarray else [view(t) for t in ts]


class ReusedViews:
    """NumPy views of the tensors an optimizer updates in place, kept from one step to the
    next: its params and state buffers are the same tensors every step, and a view costs
    0.7-1.0 us a tensor (the detach of a parameter included) where checking that the kept
    one still fits costs 0.3. A view is reused while its tensor is the same object with the
    same data pointer, shape and dtype; the view holds the storage it was made from, so a
    tensor given new storage (``p.data = ...``) cannot meet the old address again. Only the
    views used since the last ``next_step()`` are kept, so nothing the optimizer let go of
    stays alive longer than a step. Gradients are not kept: they are usually new tensors
    each step, and keeping them would hold their memory past ``zero_grad``."""

    def __init__(self):
        self._kept, self._used = {}, {}

    def of(self, tensors):
        out = []
        for t in tensors:
            hit = self._kept.get(id(t))
            if (hit is None or hit[0] is not t or hit[1] != t.data_ptr() or hit[2] != t.shape
                    or hit[3] is not t.dtype):
                hit = (t, t.data_ptr(), t.shape, t.dtype, _cpu_view(t))
            self._used[id(t)] = hit
            out.append(hit[4])
        return out

    def next_step(self):
        self._kept, self._used = self._used, {}


def _sgd_step(params: List[torch.Tensor], grads: List[torch.Tensor],
             momentum_bufs: List[torch.Tensor], lr: float, momentum: float,
             dampening: float, nesterov: bool, weight_decay: float, step: int) -> None:
    """torch.optim.SGD's update of every tensor in ``params``, in one kernel call."""
    where, view = _on_device(params)
    with where:
        pfops.sgd_step(_views(view, params), _views(view, grads), _views(view, momentum_bufs),
                       lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                       weight_decay=weight_decay, step=step)


def _adam_step(params: List[torch.Tensor], grads: List[torch.Tensor],
              exp_avgs: List[torch.Tensor], exp_avg_sqs: List[torch.Tensor],
              max_exp_avg_sqs: List[torch.Tensor], step: int, lr: float,
              beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool,
              amsgrad: bool) -> None:
    """torch.optim.Adam's (decoupled: AdamW's) update of every tensor, in one kernel call."""
    where, view = _on_device(params)
    with where:
        pfops.adam_step(_views(view, params), _views(view, grads), _views(view, exp_avgs),
                        _views(view, exp_avg_sqs), step=step, lr=lr, beta1=beta1, beta2=beta2,
                        eps=eps, weight_decay=weight_decay, decoupled=decoupled,
                        amsgrad=amsgrad, max_exp_avg_sq=_views(view, max_exp_avg_sqs))


def _rmsprop_step(params: List[torch.Tensor], grads: List[torch.Tensor],
                 square_avgs: List[torch.Tensor], momentum_bufs: List[torch.Tensor],
                 grad_avgs: List[torch.Tensor], lr: float, alpha: float, eps: float,
                 weight_decay: float, momentum: float, centered: bool) -> None:
    """torch.optim.RMSprop's update of every tensor, in one kernel call."""
    where, view = _on_device(params)
    with where:
        pfops.rmsprop_step(_views(view, params), _views(view, grads),
                           _views(view, square_avgs), lr=lr, alpha=alpha, eps=eps,
                           weight_decay=weight_decay, momentum=momentum,
                           momentum_buf=_views(view, momentum_bufs), centered=centered,
                           grad_avg=_views(view, grad_avgs))


def _step_op(fn, mutates):
    """``pyfast::<name>`` (a custom_op mutating the lists ``mutates``) for fn, and what the
    optimizers call: the operator while compiling, profiling or under functorch, or when the
    params are not plain CPU tensors; otherwise fn itself with the mutated tensors' version
    counters bumped, as the operator does. (The custom_op's Python wrapper cost ~20 us per
    tensor in a step over 100 tensors, twice the kernel's share.) Call it with the lists
    positional and the hyperparameters by keyword; ``reuse=`` (a ReusedViews) gives the
    mutated lists' NumPy views on that eager path."""
    name = fn.__name__.lstrip("_")
    op = torch.library.custom_op(f"pyfast::{name}", mutates_args=mutates)(fn)
    op.register_fake(lambda *args, **kwargs: None)
    names = list(inspect.signature(fn).parameters)
    positions = [names.index(m) for m in mutates]

    def call(*lists, reuse=None, **hyper):
        if compiling() or profiling() or transforming() or _plain_cpu(lists[0]) is None:
            return op(*lists, **hyper)
        if reuse is None:
            fn(*lists, **hyper)
        else:
            fn(*[reuse.of(ts) if i in positions else ts for i, ts in enumerate(lists)],
               **hyper)
        torch.autograd.graph.increment_version([t for i in positions for t in lists[i]])

    call.op = op
    call.__name__ = call.__qualname__ = name
    return call


sgd_step = _step_op(_sgd_step, ("params", "momentum_bufs"))
adam_step = _step_op(_adam_step, ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"))
rmsprop_step = _step_op(_rmsprop_step, ("params", "square_avgs", "momentum_bufs",
                                        "grad_avgs"))
