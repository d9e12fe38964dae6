// 2-D resampling of (N, C, H, W) arrays by per-row and per-column tables computed by the
// caller (pf.ops): nearest takes one source index per output row/column, bilinear two
// indices and two weights. Kernels gather (forward) and scatter-add (backward).
#pragma once

#include <cstdint>

namespace pyfast {

struct ResampleGeometry {
    std::int64_t planes, h, w, oh, ow;  // planes = N * C
};

template <typename T>
void upsample_nearest2d(const T* x, T* y, const std::int64_t* src_h, const std::int64_t* src_w,
                        const ResampleGeometry& g);
template <typename T>
void upsample_nearest2d_backward(const T* gy, T* gx, const std::int64_t* src_h,
                                 const std::int64_t* src_w, const ResampleGeometry& g);

struct BilinearTables {
    const std::int64_t *h0, *h1, *w0, *w1;
};

template <typename T>
void upsample_bilinear2d(const T* x, T* y, const BilinearTables& t, const T* lh0, const T* lh1,
                         const T* lw0, const T* lw1, const ResampleGeometry& g);
template <typename T>
void upsample_bilinear2d_backward(const T* gy, T* gx, const BilinearTables& t, const T* lh0,
                                  const T* lh1, const T* lw0, const T* lw1,
                                  const ResampleGeometry& g);

}  // namespace pyfast
