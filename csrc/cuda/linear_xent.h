// Fused linear + softmax cross-entropy on the GPU. Host-side declaration, plain C++ so the
// bindings (compiled by g++) can call it; the kernels are in linear_xent.cu. Pointers are
// device memory aligned to the element size; sizes are checked by the caller.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pyfast::cuda {

// Cross-entropy of z = h @ w.T + bias against labels, torch semantics, with grad_scale *
// the gradients of the summed per-row losses; the logits live block_rows rows at a time in
// `workspace`. A label outside [0, v) that is not ignore_index makes its row NaN, never an
// out-of-bounds read (pf.ops checks labels before calling).
template <typename T>
struct LinearXentArgs {
    const T* h;                   // (n, d) C-contiguous
    const T* w;                   // (v, d)
    const T* bias;                // (v) or nullptr
    const std::int64_t* labels;   // (n)
    std::int64_t ignore_index;
    double smoothing, grad_scale;
    T* losses;                    // (n)
    T* dh;                        // (n, d)
    T* dw;                        // (v, d)
    T* db;                        // (v) or nullptr
    T* workspace;                 // (block_rows, v)
    std::int64_t n, d, v, block_rows;  // d >= 1, 1 <= v < 2^31, block_rows >= 1
};

// Enqueued on `stream`, not synchronised. Throws std::runtime_error on a CUDA error.
template <typename T>
void linear_xent(const LinearXentArgs<T>& args, cudaStream_t stream);

}  // namespace pyfast::cuda
