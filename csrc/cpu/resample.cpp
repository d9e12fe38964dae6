// Nearest and bilinear resampling, float32 and float64, forward and backward.
//
// Where each output row and column samples is decided by the caller (pf.ops computes the
// index and weight tables with torch's arithmetic), so these loops are pure gathers and
// scatters. Threads take whole (n, c) planes: a backward's scatter-add into its input plane
// never races. The bilinear forward blends the two source rows first (a vectorisable pass
// along the row), then the columns, as two separable passes over a row buffer.

#include "cpu/resample.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "common/runtime.h"

namespace pyfast {
namespace {
using std::int64_t;
}  // namespace

template <typename T>
void upsample_nearest2d(const T* x, T* y, const int64_t* src_h, const int64_t* src_w,
                        const ResampleGeometry& g) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
#pragma omp parallel for schedule(static) num_threads(team(g.planes * out_plane, g.planes))
    for (int64_t p = 0; p < g.planes; ++p) {
        const T* src = x + p * in_plane;
        T* dst = y + p * out_plane;
        for (int64_t oh = 0; oh < g.oh; ++oh) {
            const T* row = src + src_h[oh] * g.w;
            T* out = dst + oh * g.ow;
            for (int64_t ow = 0; ow < g.ow; ++ow) out[ow] = row[src_w[ow]];
        }
    }
}

template <typename T>
void upsample_nearest2d_backward(const T* gy, T* gx, const int64_t* src_h, const int64_t* src_w,
                                 const ResampleGeometry& g) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
#pragma omp parallel for schedule(static) num_threads(team(g.planes * out_plane, g.planes))
    for (int64_t p = 0; p < g.planes; ++p) {
        T* dst = gx + p * in_plane;
        const T* src = gy + p * out_plane;
        std::fill(dst, dst + in_plane, T(0));
        for (int64_t oh = 0; oh < g.oh; ++oh) {
            T* row = dst + src_h[oh] * g.w;
            const T* g_row = src + oh * g.ow;
            for (int64_t ow = 0; ow < g.ow; ++ow) row[src_w[ow]] += g_row[ow];
        }
    }
}

template <typename T>
void upsample_bilinear2d(const T* x, T* y, const BilinearTables& t, const T* lh0, const T* lh1,
                         const T* lw0, const T* lw1, const ResampleGeometry& g) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
    const int threads = team(g.planes * out_plane, g.planes);
#pragma omp parallel num_threads(threads)
    {
        std::vector<T> blend(g.w);
#pragma omp for schedule(static)
        for (int64_t p = 0; p < g.planes; ++p) {
            const T* src = x + p * in_plane;
            T* dst = y + p * out_plane;
            for (int64_t oh = 0; oh < g.oh; ++oh) {
                const T* r0 = src + t.h0[oh] * g.w;
                const T* r1 = src + t.h1[oh] * g.w;
                const T a = lh0[oh], b = lh1[oh];
                T* mix = blend.data();
#pragma omp simd
                for (int64_t iw = 0; iw < g.w; ++iw) mix[iw] = a * r0[iw] + b * r1[iw];
                T* out = dst + oh * g.ow;
                for (int64_t ow = 0; ow < g.ow; ++ow)
                    out[ow] = lw0[ow] * mix[t.w0[ow]] + lw1[ow] * mix[t.w1[ow]];
            }
        }
    }
}

template <typename T>
void upsample_bilinear2d_backward(const T* gy, T* gx, const BilinearTables& t, const T* lh0,
                                  const T* lh1, const T* lw0, const T* lw1,
                                  const ResampleGeometry& g) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
    const int threads = team(g.planes * out_plane, g.planes);
#pragma omp parallel num_threads(threads)
    {
        std::vector<T> cols(g.w);
#pragma omp for schedule(static)
        for (int64_t p = 0; p < g.planes; ++p) {
            T* dst = gx + p * in_plane;
            const T* src = gy + p * out_plane;
            std::fill(dst, dst + in_plane, T(0));
            for (int64_t oh = 0; oh < g.oh; ++oh) {
                // the row's gradient folded onto the input columns, then onto the two rows
                T* c = cols.data();
                std::fill(c, c + g.w, T(0));
                const T* g_row = src + oh * g.ow;
                for (int64_t ow = 0; ow < g.ow; ++ow) {
                    c[t.w0[ow]] += lw0[ow] * g_row[ow];
                    c[t.w1[ow]] += lw1[ow] * g_row[ow];
                }
                T* r0 = dst + t.h0[oh] * g.w;
                T* r1 = dst + t.h1[oh] * g.w;
                const T a = lh0[oh], b = lh1[oh];
                for (int64_t iw = 0; iw < g.w; ++iw) {
                    r0[iw] += a * c[iw];
                    r1[iw] += b * c[iw];
                }
            }
        }
    }
}

#define PYFAST_INSTANTIATE(T)                                                                 \
    template void upsample_nearest2d<T>(const T*, T*, const int64_t*, const int64_t*,         \
                                        const ResampleGeometry&);                             \
    template void upsample_nearest2d_backward<T>(const T*, T*, const int64_t*, const int64_t*, \
                                                 const ResampleGeometry&);                    \
    template void upsample_bilinear2d<T>(const T*, T*, const BilinearTables&, const T*,       \
                                         const T*, const T*, const T*, const ResampleGeometry&); \
    template void upsample_bilinear2d_backward<T>(const T*, T*, const BilinearTables&,        \
                                                  const T*, const T*, const T*, const T*,     \
                                                  const ResampleGeometry&);
PYFAST_INSTANTIATE(float)
PYFAST_INSTANTIATE(double)
#undef PYFAST_INSTANTIATE

}  // namespace pyfast
