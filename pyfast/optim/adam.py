"""Adam and AdamW (decoupled weight decay), with AMSGrad (torch.optim.Adam / AdamW)."""

from pyfast import ops

from .optimizer import Optimizer, check_number


class Adam(Optimizer):
    """torch.optim.Adam's arguments and defaults (lr=1e-3, betas=(0.9, 0.999), eps=1e-8).
    ``decoupled_weight_decay=True`` makes it AdamW, as in torch. ``foreach``,
    ``capturable``, ``differentiable`` and ``fused`` are accepted for compatibility."""

    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        betas = _check_betas(betas)
        check_number("learning rate", lr)
        check_number("epsilon", eps)
        check_number("weight_decay", weight_decay)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        group["betas"] = _check_betas(group["betas"])
        check_number("epsilon", group["eps"])
        check_number("weight_decay", group["weight_decay"])

    def _update(self, b, group):
        beta1, beta2 = group["betas"]
        exp_avg = b.state_buffer("exp_avg")
        exp_avg_sq = b.state_buffer("exp_avg_sq")
        max_exp_avg_sq = b.state_buffer("max_exp_avg_sq") if group["amsgrad"] else None
        b.step += 1
        ops.adam_step(b.data, b.grad, exp_avg, exp_avg_sq, step=b.step, lr=group["lr"],
                      beta1=beta1, beta2=beta2, eps=group["eps"],
                      weight_decay=group["weight_decay"],
                      decoupled=bool(group["decoupled_weight_decay"]),
                      amsgrad=bool(group["amsgrad"]), max_exp_avg_sq=max_exp_avg_sq)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, weight_decay=1e-2 by default."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)


def _check_betas(betas):
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair of floats, got {betas!r}") from None
    for i, beta in enumerate((beta1, beta2)):
        try:
            check_number(f"beta parameter at index {i}", beta, high=1.0, high_open=True)
        except ValueError:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}") from None
    return (beta1, beta2)
