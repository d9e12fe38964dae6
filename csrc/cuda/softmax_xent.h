// The softmax_xent family on the GPU: softmax, log-softmax, softmax cross-entropy,
// BCE-with-logits and MSE, losses returned with their gradients. Host-side declarations,
// plain C++ so the bindings (compiled by g++) can call them; the kernels are in
// softmax_xent.cu. Every function enqueues on `stream` and returns without synchronising,
// except the pointwise losses asked for their sum (they wait for it). Pointers are device
// memory, aligned to the element size; sizes are checked by the caller.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pyfast::cuda {

// Softmax cross-entropy of (n, c, s) logits against (n, s) labels, torch semantics.
// A label outside [0, c) that is not ignore_index is never used as an index: that
// position's loss and gradient become NaN (pf.ops checks labels before calling).
template <typename T>
struct XentArgs {
    const T* logits;              // (n, c, s) C-contiguous
    const std::int64_t* labels;   // (n, s)
    const T* weight;              // (c) or nullptr
    std::int64_t ignore_index;
    double smoothing, grad_scale;
    T* dlogits;                   // (n, c, s); may be logits itself
    T* losses;                    // (n, s)
    std::int64_t n, c, s;         // 1 <= c < 2^31
};

template <typename T>
void softmax_xent(const XentArgs<T>& args, cudaStream_t stream);

// out = softmax (or log-softmax) of x over axis 1 of (a, c, b), both C-contiguous.
template <typename T>
void softmax(const T* x, T* out, std::int64_t a, std::int64_t c, std::int64_t b, bool log,
             cudaStream_t stream);

// Pointwise losses over flat (m) arrays; element i takes weight[i % weight_period] and
// pos_weight[i % pos_weight_period] (nullptr: none). With losses == nullptr the sum is
// returned (the call waits for it), else 0.
template <typename T>
struct BceArgs {
    const T* x;
    const T* y;
    const T* weight;
    std::int64_t weight_period;
    const T* pos_weight;
    std::int64_t pos_weight_period;
    double grad_scale;
    T* grad;
    T* losses;
    std::int64_t m;
};

template <typename T>
double bce_with_logits(const BceArgs<T>& args, cudaStream_t stream);

template <typename T>
double mse(const T* x, const T* y, double grad_scale, T* grad, T* losses, std::int64_t m,
           cudaStream_t stream);

}  // namespace pyfast::cuda
