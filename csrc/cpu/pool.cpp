// 2-D pooling, float32 and float64: max (argmax indices), average, adaptive average, each
// with its backward.
//
// Threads take whole (n, c) planes, so a backward's scatter into its input plane never
// races and needs no atomics. Max pooling runs output row by output row: the outputs whose
// window lies inside the plane compare their k-th candidates together (a vectorised loop
// with branch-free selects), the few clipped ones at the edges one by one.
//
// Window bounds follow torch's CPU kernels exactly: a max window starts at its first
// in-bounds row/column (that position is the argmax if every value is -inf; -1 if the
// window lies wholly in the padding, which dilation allows), a larger value
// or any NaN takes over (so ties keep the first maximum in scan order); an average window's
// divisor counts the padding up to H + pad (not the ceil-mode overhang) unless
// count_include_pad is false or divisor_override is given; adaptive windows are
// [floor(i*H/OH), ceil((i+1)*H/OH)).

#include "cpu/pool.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "common/runtime.h"
#include "cpu/select.h"

namespace pyfast {
namespace {

using std::int64_t;

// First in-bounds position of a window starting at `start` (stepping by dilation).
inline int64_t first_inside(int64_t start, int64_t dilation) {
    while (start < 0) start += dilation;
    return start;
}

struct AvgWindow {
    int64_t h0, h1, w0, w1;
    double divisor;
};

inline AvgWindow avg_window(const PoolGeometry& g, int64_t oh, int64_t ow,
                            bool count_include_pad, int64_t divisor) {
    int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    int64_t h1 = std::min(h0 + g.kh, g.h + g.ph), w1 = std::min(w0 + g.kw, g.w + g.pw);
    const int64_t padded_size = (h1 - h0) * (w1 - w0);
    h0 = std::max<int64_t>(h0, 0);
    w0 = std::max<int64_t>(w0, 0);
    h1 = std::min(h1, g.h);
    w1 = std::min(w1, g.w);
    double d;
    if (divisor != 0)
        d = static_cast<double>(divisor);
    else if (count_include_pad)
        d = static_cast<double>(padded_size);
    else
        d = static_cast<double>((h1 - h0) * (w1 - w0));
    return {h0, h1, w0, w1, d};
}

// Sum of a contiguous run with 16 independent partial sums: a single running sum would be
// bound by the add latency, not by memory.
template <typename T>
inline T sum_run(const T* p, int64_t len) {
    T acc[16] = {};
    int64_t j = 0;
    for (; j + 16 <= len; j += 16)
        for (int k = 0; k < 16; ++k) acc[k] += p[j + k];
    T sum = 0;
    for (; j < len; ++j) sum += p[j];
    for (int k = 0; k < 16; ++k) sum += acc[k];
    return sum;
}

inline int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
inline int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
    return ((i + 1) * in + out - 1) / out;
}

}  // namespace

// One output element the plain way: its window clipped to the plane, scanned in order.
template <typename T>
PYFAST_INLINE void max_window(const T* src, const PoolGeometry& g, int64_t h0, int64_t h1,
                              int64_t w_start, T& best_out, int64_t& at_out) {
    const int64_t w0 = first_inside(w_start, g.dw);
    const int64_t w1 = std::min(w_start + (g.kw - 1) * g.dw + 1, g.w);
    // a window wholly in the padding (possible with dilation) has no input position: -1
    int64_t at = (h0 < h1 && w0 < w1) ? h0 * g.w + w0 : -1;
    T best = -INFINITY;
    for (int64_t ih = h0; ih < h1; ih += g.dh)
        for (int64_t iw = w0; iw < w1; iw += g.dw) {
            const T v = src[ih * g.w + iw];
            const bool take = __builtin_isgreater(v, best) | __builtin_isunordered(v, v);
            best = blend(take, v, best);
            at = blend(take, ih * g.w + iw, at);
        }
    best_out = best;
    at_out = at;
}

// The interior outputs [lo, hi) of a row, candidate by candidate. Stride is a template
// constant for the common 1 and 2 (strided loads then vectorise as shuffles), else 0 for a
// run-time stride.
template <typename T, int Stride>
PYFAST_INLINE void max_interior(const T* src, T* dst, int64_t* idx, const PoolGeometry& g,
                                int64_t h0, int64_t h1, int64_t lo, int64_t hi, int64_t base) {
    const int64_t sw = Stride ? Stride : g.sw;
    const int64_t count = hi - lo;
    T* best = dst + lo;
    int64_t* at = idx + lo;
    for (int64_t ih = h0; ih < h1; ih += g.dh) {
        for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t col0 = base + j * g.dw;
            const T* cand = src + ih * g.w + col0;
            const int64_t pos0 = ih * g.w + col0;
#pragma omp simd
            for (int64_t k = 0; k < count; ++k) {
                const T v = cand[k * sw];
                const T b = best[k];
                const bool take = __builtin_isgreater(v, b) | __builtin_isunordered(v, v);
                best[k] = blend(take, v, b);
                at[k] = blend(take, pos0 + k * sw, at[k]);
            }
        }
    }
}

// One output row. Columns whose window lies inside the plane (all but a few at the edges)
// are done together: for each window offset (in torch's scan order) every such output
// compares one candidate, a loop over outputs with stride-sw loads that vectorises. The
// edge columns go through max_window.
template <typename T>
void max_pool_row(const T* src, T* dst, int64_t* idx, const PoolGeometry& g, int64_t oh) {
    const int64_t h_start = oh * g.sh - g.ph;
    const int64_t h0 = first_inside(h_start, g.dh);
    const int64_t h1 = std::min(h_start + (g.kh - 1) * g.dh + 1, g.h);
    if (h0 >= h1) {  // every window of the row lies in the padding rows
        std::fill(dst, dst + g.ow, T(-INFINITY));
        std::fill(idx, idx + g.ow, int64_t(-1));
        return;
    }
    // interior columns: w_start >= 0 and w_start + (kw - 1) * dw < w
    const int64_t lo = std::min(g.ow, (g.pw + g.sw - 1) / g.sw);
    const int64_t span = (g.kw - 1) * g.dw;
    const int64_t hi = std::max(lo, std::min(g.ow, (g.w - 1 - span + g.pw) / g.sw + 1));
    for (int64_t ow = 0; ow < lo; ++ow)
        max_window(src, g, h0, h1, ow * g.sw - g.pw, dst[ow], idx[ow]);
    for (int64_t ow = hi; ow < g.ow; ++ow)
        max_window(src, g, h0, h1, ow * g.sw - g.pw, dst[ow], idx[ow]);
    if (hi <= lo) return;
    const int64_t base = lo * g.sw - g.pw;  // input column of output lo's first candidate
#pragma omp simd
    for (int64_t ow = lo; ow < hi; ++ow) {
        dst[ow] = -INFINITY;
        idx[ow] = h0 * g.w + base + (ow - lo) * g.sw;
    }
    if (g.sw == 1)
        max_interior<T, 1>(src, dst, idx, g, h0, h1, lo, hi, base);
    else if (g.sw == 2)
        max_interior<T, 2>(src, dst, idx, g, h0, h1, lo, hi, base);
    else
        max_interior<T, 0>(src, dst, idx, g, h0, h1, lo, hi, base);
}

template <typename T>
void max_pool2d(const T* x, T* y, int64_t* indices, const PoolGeometry& g) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
#pragma omp parallel for schedule(static) num_threads(team(g.planes * in_plane, g.planes))
    for (int64_t p = 0; p < g.planes; ++p)
        for (int64_t oh = 0; oh < g.oh; ++oh)
            max_pool_row(x + p * in_plane, y + p * out_plane + oh * g.ow,
                         indices + p * out_plane + oh * g.ow, g, oh);
}

template <typename T>
int64_t max_pool2d_backward(const T* gy, const int64_t* indices, T* gx, const PoolGeometry& g) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
    int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) \
    num_threads(team(g.planes * (in_plane + out_plane), g.planes))
    for (int64_t p = 0; p < g.planes; ++p) {
        T* dst = gx + p * in_plane;
        const T* src = gy + p * out_plane;
        const int64_t* idx = indices + p * out_plane;
        std::fill(dst, dst + in_plane, T(0));
        for (int64_t o = 0; o < out_plane; ++o) {
            const int64_t at = idx[o];
            if (at == -1) continue;  // a window in the padding: no input received its max
            if (at < 0 || at >= in_plane) {
                ++bad;
                continue;
            }
            dst[at] += src[o];
        }
    }
    return bad;
}

template <typename T>
void avg_pool2d(const T* x, T* y, const PoolGeometry& g, bool count_include_pad,
                int64_t divisor) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
#pragma omp parallel for schedule(static) num_threads(team(g.planes * in_plane, g.planes))
    for (int64_t p = 0; p < g.planes; ++p) {
        const T* src = x + p * in_plane;
        T* dst = y + p * out_plane;
        for (int64_t oh = 0; oh < g.oh; ++oh)
            for (int64_t ow = 0; ow < g.ow; ++ow) {
                const AvgWindow win = avg_window(g, oh, ow, count_include_pad, divisor);
                T sum = 0;
                for (int64_t ih = win.h0; ih < win.h1; ++ih)
                    for (int64_t iw = win.w0; iw < win.w1; ++iw) sum += src[ih * g.w + iw];
                dst[oh * g.ow + ow] = sum / static_cast<T>(win.divisor);
            }
    }
}

template <typename T>
void avg_pool2d_backward(const T* gy, T* gx, const PoolGeometry& g, bool count_include_pad,
                         int64_t divisor) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
#pragma omp parallel for schedule(static) num_threads(team(g.planes * in_plane, g.planes))
    for (int64_t p = 0; p < g.planes; ++p) {
        T* dst = gx + p * in_plane;
        const T* src = gy + p * out_plane;
        std::fill(dst, dst + in_plane, T(0));
        for (int64_t oh = 0; oh < g.oh; ++oh)
            for (int64_t ow = 0; ow < g.ow; ++ow) {
                const AvgWindow win = avg_window(g, oh, ow, count_include_pad, divisor);
                const T share = src[oh * g.ow + ow] / static_cast<T>(win.divisor);
                for (int64_t ih = win.h0; ih < win.h1; ++ih)
                    for (int64_t iw = win.w0; iw < win.w1; ++iw) dst[ih * g.w + iw] += share;
            }
    }
}

template <typename T>
void adaptive_avg_pool2d(const T* x, T* y, const PoolGeometry& g) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
#pragma omp parallel for schedule(static) num_threads(team(g.planes * in_plane, g.planes))
    for (int64_t p = 0; p < g.planes; ++p) {
        const T* src = x + p * in_plane;
        T* dst = y + p * out_plane;
        for (int64_t oh = 0; oh < g.oh; ++oh) {
            const int64_t h0 = adaptive_start(oh, g.h, g.oh), h1 = adaptive_end(oh, g.h, g.oh);
            for (int64_t ow = 0; ow < g.ow; ++ow) {
                const int64_t w0 = adaptive_start(ow, g.w, g.ow), w1 = adaptive_end(ow, g.w, g.ow);
                T sum = 0;
                if (w0 == 0 && w1 == g.w) {  // whole rows (global pooling): one flat run
                    sum = sum_run(src + h0 * g.w, (h1 - h0) * g.w);
                } else {
                    for (int64_t ih = h0; ih < h1; ++ih)
                        sum += sum_run(src + ih * g.w + w0, w1 - w0);
                }
                dst[oh * g.ow + ow] = sum / static_cast<T>((h1 - h0) * (w1 - w0));
            }
        }
    }
}

template <typename T>
void adaptive_avg_pool2d_backward(const T* gy, T* gx, const PoolGeometry& g) {
    const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
#pragma omp parallel for schedule(static) num_threads(team(g.planes * in_plane, g.planes))
    for (int64_t p = 0; p < g.planes; ++p) {
        T* dst = gx + p * in_plane;
        const T* src = gy + p * out_plane;
        std::fill(dst, dst + in_plane, T(0));
        for (int64_t oh = 0; oh < g.oh; ++oh) {
            const int64_t h0 = adaptive_start(oh, g.h, g.oh), h1 = adaptive_end(oh, g.h, g.oh);
            for (int64_t ow = 0; ow < g.ow; ++ow) {
                const int64_t w0 = adaptive_start(ow, g.w, g.ow), w1 = adaptive_end(ow, g.w, g.ow);
                const T share = src[oh * g.ow + ow] / static_cast<T>((h1 - h0) * (w1 - w0));
                for (int64_t ih = h0; ih < h1; ++ih) {
                    T* row = dst + ih * g.w;
#pragma omp simd
                    for (int64_t iw = w0; iw < w1; ++iw) row[iw] += share;
                }
            }
        }
    }
}

#define PYFAST_INSTANTIATE(T)                                                               \
    template void max_pool2d<T>(const T*, T*, int64_t*, const PoolGeometry&);               \
    template int64_t max_pool2d_backward<T>(const T*, const int64_t*, T*, const PoolGeometry&); \
    template void avg_pool2d<T>(const T*, T*, const PoolGeometry&, bool, int64_t);          \
    template void avg_pool2d_backward<T>(const T*, T*, const PoolGeometry&, bool, int64_t); \
    template void adaptive_avg_pool2d<T>(const T*, T*, const PoolGeometry&);                \
    template void adaptive_avg_pool2d_backward<T>(const T*, T*, const PoolGeometry&);
PYFAST_INSTANTIATE(float)
PYFAST_INSTANTIATE(double)
#undef PYFAST_INSTANTIATE

}  // namespace pyfast
