// Fused optimizer steps on the GPU (torch.optim's update rules) over lists of tensors, all
// of them in one kernel launch. Host-side declarations, plain C++ for the bindings; the
// kernels are in optim.cu. Enqueued on `stream`, not synchronised.
#pragma once

#include <cuda_runtime_api.h>

#include "common/optim_rules.h"

#include <cstdint>
#include <vector>

namespace pyfast::cuda {

// One parameter tensor in device memory: its gradient and up to three state buffers of the
// same size (nullptr where an option is off). The states per optimizer are those of
// common/optim_rules.h: SGD {momentum_buf}, RMSprop {square_avg, momentum_buf, grad_avg},
// Adam {exp_avg, exp_avg_sq, max_exp_avg_sq}.
template <typename T>
struct DeviceTensor {
    T* param;
    const T* grad;
    T* state[3];
    std::int64_t size;
};

template <typename T>
void sgd_step(const std::vector<DeviceTensor<T>>& tensors, const SgdHyper& h, cudaStream_t stream);
template <typename T>
void rmsprop_step(const std::vector<DeviceTensor<T>>& tensors, const RmspropHyper& h,
                  cudaStream_t stream);
template <typename T>
void adam_step(const std::vector<DeviceTensor<T>>& tensors, const AdamHyper& h,
               cudaStream_t stream);

}  // namespace pyfast::cuda
