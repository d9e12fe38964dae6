// Batch normalisation over (N, C, S) arrays (S = product of the spatial axes): statistics
// per channel over N and S, torch's semantics (biased variance normalises, unbiased goes
// into running_var; running statistics move by `momentum`).
#pragma once

#include <cstdint>

namespace pyfast {

// Training: batch statistics normalise; running_mean/var (may be null) are updated.
// Eval: running statistics normalise. weight/bias may be null (1 and 0).
// mean_out/invstd_out (C) receive the mean and 1/sqrt(var + eps) that were used.
// x_batch_stride: elements between x's samples (x[i] itself contiguous), -1 for c * s; so x may
// be a channel prefix of a larger (N, C', S) buffer (DenseNet's growing feature stack) and
// is read in place. The other arrays are contiguous (N, C, S).
// Fused epilogue: y = relu(bn(x) + residual), residual (N, C, S) may be null (none), the ReLU
// only when `relu`. y may not alias x or residual.
template <typename T>
void batch_norm_forward(const T* x, T* y, std::int64_t n, std::int64_t c, std::int64_t s,
                        const T* weight, const T* bias, T* running_mean, T* running_var,
                        T* mean_out, T* invstd_out, bool training, double momentum, double eps,
                        const T* residual = nullptr, bool relu = false,
                        std::int64_t x_batch_stride = -1);

// gx, gweight, gbias may each be null (not needed). weight may be null (1).
// y: the forward's output when it applied a ReLU (gy is masked where y <= 0), else null.
// gresidual (N, C, S), may be null: receives the residual's gradient (the masked gy).
template <typename T>
void batch_norm_backward(const T* gy, const T* x, std::int64_t n, std::int64_t c, std::int64_t s,
                         const T* weight, const T* mean, const T* invstd, T* gx, T* gweight,
                         T* gbias, bool training, const T* y = nullptr, T* gresidual = nullptr,
                         std::int64_t x_batch_stride = -1);

}  // namespace pyfast
