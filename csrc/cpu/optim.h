// Fused optimizer steps on the CPU (torch.optim's update rules), in place over lists of
// tensors: one parallel region and one pass over memory for all of them (see optim.cpp).
// csrc/bindings/cpu_optim.cpp validates the arguments; these functions only compute.
#pragma once

#include <cstdint>
#include <vector>

namespace pyfast {

// One parameter tensor, flat: its gradient and up to three state buffers of the same size.
template <typename T>
struct OptimTensor {
    T* param;
    const T* grad;
    T* state[3];           // per optimizer, see below; nullptr where an option is off
    std::int64_t size;
};

// state: {momentum_buf}
struct SgdHyper {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
    bool first;            // step 1: the momentum buffer takes the gradient
};

// state: {square_avg, momentum_buf, grad_avg}
struct RmspropHyper {
    double lr, alpha, eps, weight_decay, momentum;
    bool centered;
};

// state: {exp_avg, exp_avg_sq, max_exp_avg_sq}
struct AdamHyper {
    double lr, beta1, beta2, eps, weight_decay;
    std::int64_t step;     // >= 1
    bool decoupled;        // AdamW
    bool amsgrad;
};

template <typename T>
void sgd_step(const std::vector<OptimTensor<T>>& tensors, const SgdHyper& h);
template <typename T>
void rmsprop_step(const std::vector<OptimTensor<T>>& tensors, const RmspropHyper& h);
template <typename T>
void adam_step(const std::vector<OptimTensor<T>>& tensors, const AdamHyper& h);

}  // namespace pyfast
