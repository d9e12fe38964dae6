"""RMSprop, plain, centered and with momentum (torch.optim.RMSprop)."""

from pyfast import ops

from .optimizer import Optimizer, check_number


class RMSprop(Optimizer):
    """torch.optim.RMSprop's arguments and defaults (lr=1e-2, alpha=0.99, eps=1e-8).
    ``capturable``, ``foreach`` and ``differentiable`` are accepted for compatibility."""

    _state_keys = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        check_number("learning rate", lr)
        check_number("epsilon", eps)
        check_number("momentum", momentum)
        check_number("weight_decay", weight_decay)
        check_number("alpha", alpha)
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps,
                    "centered": centered, "weight_decay": weight_decay, "capturable": capturable,
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable}
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        for name, label in (("eps", "epsilon"), ("momentum", "momentum"),
                            ("weight_decay", "weight_decay"), ("alpha", "alpha")):
            check_number(label, group[name])

    def _update(self, b, group):
        momentum, centered = group["momentum"], group["centered"]
        square_avg = b.state_buffer("square_avg")
        momentum_buf = b.state_buffer("momentum_buffer") if momentum > 0 else None
        grad_avg = b.state_buffer("grad_avg") if centered else None
        b.step += 1
        ops.rmsprop_step(b.data, b.grad, square_avg, lr=group["lr"], alpha=group["alpha"],
                         eps=group["eps"], weight_decay=group["weight_decay"],
                         momentum=momentum, momentum_buf=momentum_buf, centered=centered,
                         grad_avg=grad_avg)
