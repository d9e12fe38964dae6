"""The per-step scalars and switches of the fused optimizer rules, shared by the Numba CPU
and CUDA kernels (csrc/common/optim_rules.h is the native kernels' twin): each function
returns (k, flags) in the order the rules of kernels/_optim_rules.py read."""


def sgd(lr, momentum, dampening, nesterov, weight_decay, first):
    return ((lr, momentum, 1 - dampening, weight_decay),
            (weight_decay != 0, momentum != 0, bool(nesterov), bool(first)))


def rmsprop(lr, alpha, eps, weight_decay, momentum, centered):
    return ((lr, alpha, 1 - alpha, eps, weight_decay, momentum),
            (weight_decay != 0, momentum > 0, bool(centered), 1 - alpha < 0.5))


def adam(step, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad):
    """The bias corrections in double, as torch computes them from Python floats."""
    return ((beta1, 1 - beta1, beta2, 1 - beta2, eps, weight_decay, 1 - lr * weight_decay,
             lr / (1 - beta1 ** step), (1 - beta2 ** step) ** 0.5),
            (weight_decay != 0, bool(decoupled), bool(amsgrad), 1 - beta1 < 0.5))
