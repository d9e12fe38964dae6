// Fused linear + softmax cross-entropy on the CPU (see linear_xent.cpp).
// csrc/bindings/cpu_linear_xent.cpp validates the arguments; this only computes.
#pragma once

#include <cstdint>

namespace pyfast {

// Cross-entropy of z = h @ w.T + bias against labels, torch semantics, with the gradients
// of grad_scale * (sum of the per-row losses), the (n, v) logits held block_rows rows at
// a time in `workspace`.
template <typename T>
struct LinearXentArgs {
    const T* h;                   // (n, d) C-contiguous
    const T* w;                   // (v, d)
    const T* bias;                // (v) or nullptr
    const std::int64_t* labels;   // (n), each in [0, v) or ignore_index
    std::int64_t ignore_index;
    double smoothing;             // in [0, 1]
    double grad_scale;
    T* losses;                    // (n): per-row losses, 0 where ignored
    T* dh;                        // (n, d)
    T* dw;                        // (v, d)
    T* db;                        // (v) or nullptr
    T* workspace;                 // (block_rows, v) scratch
    std::int64_t n, d, v, block_rows;  // v < 2^31, block_rows >= 1
};

template <typename T>
void linear_xent(const LinearXentArgs<T>& args);

}  // namespace pyfast
