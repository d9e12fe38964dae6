"""SGD with momentum, dampening, Nesterov and weight decay (torch.optim.SGD)."""

from pyfast import ops

from .optimizer import Optimizer, check_number


class SGD(Optimizer):
    """torch.optim.SGD's arguments and defaults (torch 2.13: lr=1e-3). ``foreach``,
    ``differentiable`` and ``fused`` are accepted for compatibility; every step is fused."""

    _state_keys = ("momentum_buffer",)
    _has_step_state = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        check_number("learning rate", lr)
        check_number("momentum", momentum)
        check_number("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "foreach": foreach, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        check_number("momentum", group["momentum"])
        check_number("dampening", group["dampening"], low=float("-inf"))
        check_number("weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, b, group):
        momentum = group["momentum"]
        buf = None
        if momentum != 0:
            if "momentum_buffer" not in b.state:
                b.step = 0     # a new buffer takes the gradient at its first step, as torch
            buf = b.state_buffer("momentum_buffer")
            b.step += 1
        ops.sgd_step(b.data, b.grad, buf, lr=group["lr"], momentum=momentum,
                     dampening=group["dampening"], nesterov=group["nesterov"],
                     weight_decay=group["weight_decay"], step=max(b.step, 1))
