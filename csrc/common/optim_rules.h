// The hyperparameters of the fused optimizer steps (torch.optim's SGD, RMSprop, Adam/AdamW)
// and the per-step scalars the CPU and CUDA kernels read, derived from them in one place so
// that both backends round the same numbers the same way. Plain C++: nvcc and g++ both read
// it, and the scalar structs are passed by value to the CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

namespace pyfast {

// Tensor states: SGD {momentum_buf}; RMSprop {square_avg, momentum_buf, grad_avg};
// Adam {exp_avg, exp_avg_sq, max_exp_avg_sq}.
struct SgdHyper {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
    bool first;            // step 1: the momentum buffer takes the gradient
};

struct RmspropHyper {
    double lr, alpha, eps, weight_decay, momentum;
    bool centered;
};

struct AdamHyper {
    double lr, beta1, beta2, eps, weight_decay;
    std::int64_t step;     // >= 1
    bool decoupled;        // AdamW
    bool amsgrad;
};

// Scalars of one step in the element type, and the switches of the rule.
template <typename T>
struct SgdK {
    T lr, momentum, one_minus_dampening, weight_decay;
    bool decay, has_momentum, nesterov, first;
};

template <typename T>
struct RmspropK {
    T lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
    bool decay, has_momentum, centered, lerp_from_start;
};

template <typename T>
struct AdamK {
    T lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay_factor,
        step_size, bias_correction2_sqrt;
    bool decay, decoupled, amsgrad, lerp_from_start;
};

template <typename T>
SgdK<T> step_scalars(const SgdHyper& h) {
    SgdK<T> k;
    k.lr = static_cast<T>(h.lr);
    k.momentum = static_cast<T>(h.momentum);
    k.one_minus_dampening = static_cast<T>(1 - h.dampening);
    k.weight_decay = static_cast<T>(h.weight_decay);
    k.decay = h.weight_decay != 0;
    k.has_momentum = h.momentum != 0;
    k.nesterov = h.nesterov;
    k.first = h.first;
    return k;
}

template <typename T>
RmspropK<T> step_scalars(const RmspropHyper& h) {
    RmspropK<T> k;
    k.lr = static_cast<T>(h.lr);
    k.alpha = static_cast<T>(h.alpha);
    k.one_minus_alpha = static_cast<T>(1 - h.alpha);
    k.eps = static_cast<T>(h.eps);
    k.weight_decay = static_cast<T>(h.weight_decay);
    k.momentum = static_cast<T>(h.momentum);
    k.decay = h.weight_decay != 0;
    k.has_momentum = h.momentum > 0;
    k.centered = h.centered;
    k.lerp_from_start = 1 - h.alpha < 0.5;
    return k;
}

template <typename T>
AdamK<T> step_scalars(const AdamHyper& h) {
    // The bias corrections in double, as torch computes them from Python floats.
    const double step = static_cast<double>(h.step);
    const double bias_correction1 = 1 - std::pow(h.beta1, step);
    const double bias_correction2 = 1 - std::pow(h.beta2, step);
    AdamK<T> k;
    k.lr = static_cast<T>(h.lr);
    k.beta1 = static_cast<T>(h.beta1);
    k.one_minus_beta1 = static_cast<T>(1 - h.beta1);
    k.beta2 = static_cast<T>(h.beta2);
    k.one_minus_beta2 = static_cast<T>(1 - h.beta2);
    k.eps = static_cast<T>(h.eps);
    k.weight_decay = static_cast<T>(h.weight_decay);
    k.decay_factor = static_cast<T>(1 - h.lr * h.weight_decay);
    k.step_size = static_cast<T>(h.lr / bias_correction1);
    k.bias_correction2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
    k.decay = h.weight_decay != 0;
    k.decoupled = h.decoupled;
    k.amsgrad = h.amsgrad;
    k.lerp_from_start = 1 - h.beta1 < 0.5;
    return k;
}

}  // namespace pyfast
