"""Reference optimizer updates (NumPy or CuPy): torch.optim's single-tensor update rules,
line for line, one parameter tensor at a time."""

import math

from pyfast._arrays import array_module


def sgd_step(params, grads, momentum_bufs, lr, momentum, dampening, nesterov, weight_decay,
             first):
    for i, (p, g) in enumerate(zip(params, grads)):
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            buf = momentum_bufs[i]
            if first:
                buf[...] = g
            else:
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g


def rmsprop_step(params, grads, square_avgs, momentum_bufs, grad_avgs, lr, alpha, eps,
                 weight_decay, momentum, centered):
    for i, (p, g, sq) in enumerate(zip(params, grads, square_avgs)):
        xp = array_module(p)
        if weight_decay:
            g = g + weight_decay * p
        sq *= alpha
        sq += (1 - alpha) * g * g
        if centered:
            ga = grad_avgs[i]
            ga += (1 - alpha) * (g - ga)
            avg = xp.sqrt(sq - ga * ga) + eps
        else:
            avg = xp.sqrt(sq) + eps
        if momentum:
            buf = momentum_bufs[i]
            buf *= momentum
            buf += g / avg
            p -= lr * buf
        else:
            p -= lr * g / avg


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2,
              eps, weight_decay, decoupled, amsgrad):
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    step_size = lr / bias_correction1
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        xp = array_module(p)
        if weight_decay:
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        m += (1 - beta1) * (g - m)
        v *= beta2
        v += (1 - beta2) * g * g
        if amsgrad:
            vmax = max_exp_avg_sqs[i]
            xp.maximum(vmax, v, out=vmax)
            v = vmax
        p -= step_size * m / (xp.sqrt(v) / bias_correction2_sqrt + eps)
