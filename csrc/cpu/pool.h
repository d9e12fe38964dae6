// 2-D pooling of (N, C, H, W) arrays: max (with int64 argmax indices, flat within each
// plane), average and adaptive average, forward and backward. torch's window conventions.
#pragma once

#include <cstdint>

namespace pyfast {

struct PoolGeometry {
    std::int64_t planes, h, w, oh, ow;  // planes = N * C
    std::int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

template <typename T>
void max_pool2d(const T* x, T* y, std::int64_t* indices, const PoolGeometry& g);
// Returns the number of indices outside [0, h * w) (skipped, not written).
template <typename T>
std::int64_t max_pool2d_backward(const T* gy, const std::int64_t* indices, T* gx,
                                 const PoolGeometry& g);
// divisor == 0: divide by the window size (with or without padding per count_include_pad)
template <typename T>
void avg_pool2d(const T* x, T* y, const PoolGeometry& g, bool count_include_pad,
                std::int64_t divisor);
template <typename T>
void avg_pool2d_backward(const T* gy, T* gx, const PoolGeometry& g, bool count_include_pad,
                         std::int64_t divisor);
template <typename T>
void adaptive_avg_pool2d(const T* x, T* y, const PoolGeometry& g);
template <typename T>
void adaptive_avg_pool2d_backward(const T* gy, T* gx, const PoolGeometry& g);

}  // namespace pyfast
