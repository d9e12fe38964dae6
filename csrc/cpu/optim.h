// Fused optimizer steps on the CPU (torch.optim's update rules), in place over lists of
// tensors: one parallel region and one pass over memory for all of them (see optim.cpp).
// csrc/bindings/cpu_optim.cpp validates the arguments; these functions only compute.
#pragma once

#include <cstdint>
#include <vector>

#include "common/optim_rules.h"

namespace pyfast {

// One parameter tensor, flat: its gradient and up to three state buffers of the same size.
template <typename T>
struct OptimTensor {
    T* param;
    const T* grad;
    T* state[3];           // per optimizer (common/optim_rules.h); nullptr where off
    std::int64_t size;
};

template <typename T>
void sgd_step(const std::vector<OptimTensor<T>>& tensors, const SgdHyper& h);
template <typename T>
void rmsprop_step(const std::vector<OptimTensor<T>>& tensors, const RmspropHyper& h);
template <typename T>
void adam_step(const std::vector<OptimTensor<T>>& tensors, const AdamHyper& h);

}  // namespace pyfast
