// Shared by the convolution algorithms of cpu/conv/: sizes, the thread schedule, the scratch
// buffer, and the zero-padded planes that the direct forward and the direct weight gradient
// both read. Their register tiles are GEMM's TileCfg (cpu/gemm.h).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>

#include "common/conv_shape.h"
#include "common/runtime.h"
#include "common/thread_buffer.h"
#include "cpu/gemm.h"

namespace pyfast::cpu_conv {

using std::int64_t;

// Per-thread weight-gradient partial sums may take this much in all; beyond it the weight
// gradient runs items in turn with the GEMM parallel inside.
constexpr int64_t kPartialBytes = int64_t(256) << 20;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }  // a >= 0, b > 0

inline int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return std::min(std::max(v, lo), hi); }

// Sizes derived from a ConvShape.
struct Dims {
    int64_t cg, kg;   // channels per group, in and out
    int64_t taps;     // kh * kw
    int64_t rows;     // CRS: rows of the column matrix, Cg * kh * kw
    int64_t hw, p;    // input and output positions per channel

    explicit Dims(const ConvShape& s)
        : cg(s.c / s.groups), kg(s.k / s.groups), taps(s.kh * s.kw), rows(cg * taps),
          hw(s.h * s.w), p(s.oh * s.ow) {}
};

// Scratch memory per thread shared by every algorithm (one runs at a time on a thread): the
// im2col column tile, the direct kernels' planes, the implicit path's channels-last copy.
ThreadBuffer& column_buffer();

// gemm_inside: the items call the GEMM. Where nested parallelism is enabled (torch's libgomp
// sets max-active-levels to INT_MAX) such items are split inside rather than spread over the
// threads. The GEMM starts no nested team either way (inside a parallel region it runs on
// its caller's thread), so this is a choice of schedule now, kept until measured. The
// direct kernels' inner regions ask for one thread explicitly, so nesting does not matter
// to them.
inline bool threads_take_items(int64_t items, int threads, bool gemm_inside) {
    // An imbalance of one item in four is tolerated; less work than that is split inside.
    return threads > 1 && items >= threads && (items % threads == 0 || items >= 4 * threads) &&
           (!gemm_inside || omp_get_max_active_levels() <= 1);
}

// Runs fn(item, thread) for items [0, count): spread over the threads when by_item, else in
// turn on the calling thread. Items that write disjoint outputs are handed out as threads
// come free (a thread slowed by another process does not hold the rest up); those that sum
// into per-thread partials (`fixed`) are split statically, so which items each partial
// holds, and the rounding of the total, depend only on the thread count. An exception
// inside the parallel region is carried out of it.
template <typename F>
inline void run_items(int64_t count, bool by_item, int threads, F&& fn, bool fixed = false) {
    if (!by_item) {
        for (int64_t t = 0; t < count; ++t) fn(t, 0);
        return;
    }
    std::exception_ptr error;
    auto guarded = [&](int64_t t) {
        try {
            fn(t, omp_get_thread_num());
        } catch (...) {
#pragma omp critical(pyfast_conv_error)
            if (!error) error = std::current_exception();
        }
    };
    if (fixed) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t t = 0; t < count; ++t) guarded(t);
    } else {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int64_t t = 0; t < count; ++t) guarded(t);
    }
    if (error) std::rethrow_exception(error);
}

// tiles(b, t0, t1) over tiles [0, count) of one item: on the calling thread when `inside`
// is 1 (the items already keep every thread busy), else split evenly over a nested team.
template <typename Arg>
PYFAST_INLINE void run_item_tiles(void (*tiles)(const Arg&, int64_t, int64_t), const Arg& b,
                                  int64_t count, int inside) {
    if (inside == 1) {
        tiles(b, 0, count);
        return;
    }
#pragma omp parallel num_threads(inside)
    {
        const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
        tiles(b, count * tid / nth, count * (tid + 1) / nth);
    }
}

// ---- zero-padded planes (the direct forward and the direct weight gradient) ----------------

// A band of output rows at a time keeps the planes within kBandBytes.
constexpr int64_t kBandBytes = 512 << 10;

// Width of a padded row. Its left padding doubles as the right padding of the row before:
// the reads of output column ow under tap j reach padded column ow + j*dw < w + 2*pw, and
// what lies past the row's end is the next row's first pw zeros (the last row's are the
// band's tail). So a row needs only w + pw elements, and only wp - ow wide positions per
// row are dropped (1 instead of 2 for a padded 3x3; 15/14 rather than 16/14 of the work on a
// 14x14 image). The output row must fit too, when the padding exceeds the kernel's reach.
inline int64_t wide_row(const ConvShape& s) { return std::max(s.w + s.pw, s.ow); }

// Output rows [oh0, oh0 + rows) need padded rows [oh0, oh0 + rows + (kh-1)*dh): copied from
// x[n, g] with the zero padding around them, into planes `plane` apart, then `tail` zeros
// that the discarded positions of the last tiles may read.
template <typename T>
void fill_band(const ConvShape& s, const Dims& d, const T* xg, int64_t oh0, int64_t in_rows,
               int64_t wp, int64_t tail, T* planes, int threads) {
    const int64_t plane = in_rows * wp;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < d.cg; ++c) {
        for (int64_t r = 0; r < in_rows; ++r) {
            T* dst = planes + c * plane + r * wp;
            const int64_t ih = oh0 + r - s.ph;
            if (ih < 0 || ih >= s.h) {
                std::fill(dst, dst + wp, T(0));
                continue;
            }
            std::fill(dst, dst + s.pw, T(0));
            std::memcpy(dst + s.pw, xg + c * d.hw + ih * s.w, s.w * sizeof(T));
            std::fill(dst + s.pw + s.w, dst + wp, T(0));
        }
    }
    std::fill(planes + d.cg * plane, planes + d.cg * plane + tail, T(0));
}

// A 1x1 convolution without padding needs no copy: its planes would be the band of x itself
// (wp == w, no halo, no dropped columns), d.hw apart, images c * d.hw apart. The kernels read
// x in place there (NCHW), where no tile reads past the band and the planes do not alias:
//  - the forward's tiles read whole vectors of positions, so a band must fill them (rows * w
//    a multiple of `lanes`); the weight gradient's read exactly the band (lanes 1);
//  - planes a multiple of 4 KB apart put one position of every channel into one L1 set, and
//    the forward's tile reads them all: the copy, whose planes are a band's rows apart,
//    wins there.
// Measured (1 thread, AVX-512 Zen 4, ms median of 15, copy vs in place, forward / input
// gradient / weight gradient): DenseNet N32 256->128 16x16 5.87/5.99/6.97 vs 5.36/5.25/6.06,
// 512->128 8x8 3.69/3.44/3.14 vs 2.53/3.78 (implicit)/2.81, 992->128 4x4 weight gradient
// 1.83 vs 1.49; but 32x32 (4 KB planes) 224->128 20.96/19.89/23.74 vs 21.46/20.86/25.03.
template <typename T>
bool reads_in_place(const ConvShape& s, int64_t rows, int lanes) {
    return s.kh == 1 && s.kw == 1 && s.ph == 0 && s.pw == 0 && (rows * s.w) % lanes == 0 &&
           (s.h * s.w * static_cast<int64_t>(sizeof(T))) % 4096 != 0;
}

// fill_band from NHWC x: xg points at channel g*cg of image n, positions s.c apart.
template <typename T>
void fill_band_nhwc(const ConvShape& s, const Dims& d, const T* xg, int64_t oh0,
                    int64_t in_rows, int64_t wp, int64_t tail, T* planes, int threads) {
    const int64_t plane = in_rows * wp;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < in_rows; ++r) {
        const int64_t ih = oh0 + r - s.ph;
        const bool inside = ih >= 0 && ih < s.h;
        for (int64_t c = 0; c < d.cg; ++c) {
            T* dst = planes + c * plane + r * wp;
            std::fill(dst, inside ? dst + s.pw : dst + wp, T(0));
            if (inside) std::fill(dst + s.pw + s.w, dst + wp, T(0));
        }
        if (!inside) continue;
        const T* row = xg + ih * s.w * s.c;
        T* dst = planes + r * wp + s.pw;
        for (int64_t col = 0; col < s.w; ++col)
            for (int64_t c = 0; c < d.cg; ++c) dst[c * plane + col] = row[col * s.c + c];
    }
    std::fill(planes + d.cg * plane, planes + d.cg * plane + tail, T(0));
}

// Output rows per band and bands per (image, group): the band's planes (row_bytes per
// padded row) within kBandBytes, cut finer until the threads have an item each (or the
// items divide evenly among them).
struct Bands {
    int64_t band, bands;
};
inline Bands plan_bands(const ConvShape& s, int64_t row_bytes, int64_t pairs, int threads) {
    const int64_t halo = (s.kh - 1) * s.dh;
    const int64_t most = std::max<int64_t>(1, kBandBytes / row_bytes - halo);
    int64_t bands = ceil_div(s.oh, std::min(most, s.oh));
    while (threads > 1 && (pairs * bands) % threads != 0 && pairs * bands < 4 * threads &&
           bands < s.oh)
        ++bands;
    const int64_t band = ceil_div(s.oh, bands);
    return {band, ceil_div(s.oh, band)};
}

// Images per block: the copy within `budget` bytes, then fewer until the blocks come out
// even over the threads: 32 images of 30 per budget make two blocks of 16, not 30 and 2
// (which left one thread idle most of the time), and 64 of 5 make 16 blocks of 4, not 13.
inline int64_t plan_images(int64_t n, int64_t groups, int64_t image_bytes, int64_t budget,
                           int threads) {
    const int64_t most = clamp(budget / std::max<int64_t>(image_bytes, 1), 1, n);
    if (threads <= 1) return most;
    // Of the block sizes up to `most` (from four times the fewest blocks down), the one whose
    // busiest thread has the fewest images; the largest such.
    int64_t best = most, best_load = INT64_MAX;
    for (int64_t b = ceil_div(n, most); b <= std::min(n, 4 * ceil_div(n, most)); ++b) {
        const int64_t m = ceil_div(n, b);
        const int64_t load = ceil_div(ceil_div(n, m) * groups, threads) * m;
        if (load < best_load) best = m, best_load = load;
    }
    return best;
}

}  // namespace pyfast::cpu_conv
