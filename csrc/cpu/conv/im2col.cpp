// im2col + the packed GEMM (cpu/gemm.h) on the CPU: the convolutions the direct and implicit
// paths do not take (strided layers with few channels per tap, the weight gradient of a
// strided layer), per image n and group g, with P = OH*OW and CRS = C/groups * kh * kw:
//   forward      y[n,g] (Kg x P)     = W[g] (Kg x CRS) @ cols(x[n,g]) (CRS x P)   bias, ReLU fused
//   weight grad  gW[g]  (Kg x CRS)  += gy[n,g] (Kg x P) @ cols(x[n,g])^T
//   input grad   dcols = W[g]^T @ gy[n,g], scattered back into gx (col2im)
// cols is im2col: row (c, i, j) holds x under kernel tap (i, j) for every output position.
// The column buffer holds one tile of output positions (kColumnBytes), so memory is bounded
// whatever the image size and stays in cache. col2im works on whole (image, group) slices
// when the threads take items, and splits channels otherwise, so no two threads ever add
// into the same element of gx.

#include <vector>

#include "cpu/conv/common.h"
#include "cpu/conv/paths.h"
#include "cpu/gemm.h"

namespace pyfast::cpu_conv {
namespace {

// Column buffer per thread: a tile of it stays in L2 while the GEMM packs it.
constexpr int64_t kColumnBytes = 1 << 20;
// Tile widths are multiples of the widest GEMM micro-tile (32 float32 columns on AVX-512),
// so only the last tile of an image has a ragged edge.
constexpr int64_t kTileQuantum = 32;

// Output columns ow whose input column ow * sw + off lies inside [0, w): [lo, hi).
struct Span {
    int64_t lo, hi;
};
Span inside_columns(const ConvShape& s, int64_t off) {
    const int64_t lo = off >= 0 ? 0 : ceil_div(-off, s.sw);
    const int64_t hi = s.w - 1 - off < 0 ? 0 : std::min(s.ow, (s.w - 1 - off) / s.sw + 1);
    return {std::min(lo, s.ow), std::max(hi, std::min(lo, s.ow))};
}

// Calls f(input row ih, or -1 for a padding row; column offset off; span; ow_begin, ow_end;
// offset into the tile) for each output-row segment of positions [p0, p1) under tap (i, j).
template <typename F>
PYFAST_INLINE void for_segments(const ConvShape& s, int64_t i, int64_t j, int64_t p0,
                                int64_t p1, F&& f) {
    const int64_t off = j * s.dw - s.pw;
    const Span span = inside_columns(s, off);
    for (int64_t p = p0; p < p1;) {
        const int64_t oh = p / s.ow, a = p - oh * s.ow, b = std::min(s.ow, a + (p1 - p));
        const int64_t ih = oh * s.sh - s.ph + i * s.dh;
        f(ih >= 0 && ih < s.h ? ih : -1, off, span, a, b, p - p0);
        p += b - a;
    }
}

// Rows [r0, r1) of the column matrix of one image's channel slice xg (Cg x h x w), over
// output positions [p0, p1): cols[(r - r0) * ld + p - p0].
template <typename T>
void im2col(const ConvShape& s, const Dims& d, const T* xg, int64_t r0, int64_t r1, int64_t p0,
            int64_t p1, T* cols, int64_t ld) {
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t c = r / d.taps, i = r % d.taps / s.kw, j = r % s.kw;
        const T* xc = xg + c * d.hw;
        T* dst = cols + (r - r0) * ld;
        for_segments(s, i, j, p0, p1, [&](int64_t ih, int64_t off, Span span, int64_t a,
                                           int64_t b, int64_t at) {
            T* out = dst + at - a;  // out[ow] for ow in [a, b)
            if (ih < 0) {
                std::fill(out + a, out + b, T(0));
                return;
            }
            const T* row = xc + ih * s.w;
            const int64_t lo = clamp(span.lo, a, b), hi = clamp(span.hi, lo, b);
            std::fill(out + a, out + lo, T(0));
            if (s.sw == 1) {
                if (hi > lo) std::memcpy(out + lo, row + lo + off, (hi - lo) * sizeof(T));
            } else {
                for (int64_t ow = lo; ow < hi; ++ow) out[ow] = row[ow * s.sw + off];
            }
            std::fill(out + hi, out + b, T(0));
        });
    }
}

// The reverse of im2col for channels [c0, c1): xg (Cg x h x w) += each element of cols
// (all rows, positions [p0, p1)) at the place im2col took it from.
template <typename T>
void col2im(const ConvShape& s, const Dims& d, const T* cols, int64_t c0, int64_t c1,
            int64_t p0, int64_t p1, T* xg) {
    const int64_t ld = p1 - p0;
    for (int64_t r = c0 * d.taps; r < c1 * d.taps; ++r) {
        const int64_t c = r / d.taps, i = r % d.taps / s.kw, j = r % s.kw;
        T* xc = xg + c * d.hw;
        const T* src = cols + r * ld;
        for_segments(s, i, j, p0, p1, [&](int64_t ih, int64_t off, Span span, int64_t a,
                                           int64_t b, int64_t at) {
            if (ih < 0) return;
            const T* in = src + at - a;
            T* row = xc + ih * s.w;
            const int64_t lo = clamp(span.lo, a, b), hi = clamp(span.hi, lo, b);
            if (s.sw == 1) {
                T* dst = row + off;
                for (int64_t ow = lo; ow < hi; ++ow) dst[ow] += in[ow];
            } else {
                for (int64_t ow = lo; ow < hi; ++ow) row[ow * s.sw + off] += in[ow];
            }
        });
    }
}

// How the output positions of one (image, group) are cut into tiles, and who runs them.
struct Tiling {
    int64_t width = 0, tiles = 0;  // positions per tile (the last may be narrower), tiles
    int64_t images = 1;            // whole images per item (then tiles == 1), else 1
    int64_t items = 0;             // image blocks * groups * tiles
    bool by_item = false;          // threads take whole items, else items run in turn

    // Item -> images [n0, n1), group g, positions [p0, p1).
    struct Item {
        int64_t n0, n1, g, p0, p1;
    };
    Item operator()(int64_t item, int64_t n, int64_t groups, int64_t positions) const {
        const int64_t tile = item % tiles, pair = item / tiles;
        const int64_t block = pair / groups, g = pair % groups;
        const int64_t p0 = tile * width;
        return {block * images, std::min(n, (block + 1) * images), g, p0,
                std::min(positions, p0 + width)};
    }
};

// Small images make narrow GEMMs: the forward and the weight gradient then put several whole
// images side by side in one column matrix of up to kBatchBytes, aiming at kBatchPositions
// columns (the GEMM's output goes through a buffer back to NCHW).
constexpr int64_t kBatchBytes = 4 << 20;
constexpr int64_t kBatchPositions = 512;

// rows: column-matrix rows. split: cut tiles finer so that every thread gets an item, and
// put small images together (forward and weight gradient; col2im needs whole images).
Tiling plan_tiles(int64_t n, int64_t groups, int64_t positions, int64_t rows, int64_t elem,
                  int threads, bool split) {
    Tiling t;
    if (split && positions < kBatchPositions) {
        int64_t m = std::min({n, kBatchPositions / positions,
                              std::max<int64_t>(1, kBatchBytes / (rows * positions * elem))});
        while (m > 1 && ceil_div(n, m) * groups < threads) m = ceil_div(m, 2);
        if (m > 1) {
            t.images = m, t.width = positions, t.tiles = 1;
            t.items = ceil_div(n, m) * groups;
            t.by_item = threads_take_items(t.items, threads, true);
            return t;
        }
    }
    const int64_t pairs = n * groups;
    int64_t width = positions;
    if (rows > 0)
        width = std::max(kTileQuantum,
                         kColumnBytes / (rows * elem) / kTileQuantum * kTileQuantum);
    int64_t tiles = ceil_div(positions, std::min(width, positions));
    if (split)
        while (threads > 1 && (pairs * tiles) % threads != 0 && pairs * tiles < 4 * threads &&
               positions / (tiles + 1) >= kTileQuantum)
            ++tiles;
    t.width = std::min(positions, ceil_div(ceil_div(positions, tiles), kTileQuantum) * kTileQuantum);
    t.tiles = ceil_div(positions, t.width);
    t.items = pairs * t.tiles;
    t.by_item = threads_take_items(split ? t.items : pairs, threads, true);
    return t;
}

// im2col of a whole tile (rows ld apart), over row ranges in parallel when asked.
template <typename T>
void im2col_tile(const ConvShape& s, const Dims& d, const T* xg, int64_t p0, int64_t p1,
                 T* cols, int64_t ld, int threads) {
    if (threads <= 1 || d.rows * (p1 - p0) < 32768) {
        im2col(s, d, xg, 0, d.rows, p0, p1, cols, ld);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < d.rows; ++r) im2col(s, d, xg, r, r + 1, p0, p1, cols + r * ld, ld);
}

thread_local ThreadBuffer output_buffer;

// Positions [p0, p1) of images [n0, n1), group g. With several images their columns sit side
// by side (ld = images * P) and the product goes through a buffer to each image's slice.
template <typename T>
void forward_tile(const ConvShape& s, const Dims& d, const T* x, const T* w, const T* bias, T* y,
                  bool relu, const Tiling::Item& it, int threads) {
    const int64_t images = it.n1 - it.n0, width = it.p1 - it.p0, ld = images * width;
    T* cols = column_buffer().get<T>(d.rows * ld);
    for (int64_t j = 0; j < images; ++j)
        im2col_tile(s, d, x + ((it.n0 + j) * s.c + it.g * d.cg) * d.hw, it.p0, it.p1,
                    cols + j * width, ld, threads);
    Epilogue<T> ep;
    ep.bias = bias ? bias + it.g * d.kg : nullptr;
    ep.bias_per_row = true;
    ep.relu = relu;
    T* out = y + (it.n0 * s.k + it.g * d.kg) * d.p + it.p0;
    if (images == 1) {
        gemm<T>(d.kg, width, d.rows, MatRef<T>{w + it.g * d.kg * d.rows, d.rows, 1},
                MatRef<T>{cols, ld, 1}, out, d.p, ep);
        return;
    }
    T* product = output_buffer.get<T>(d.kg * ld);
    gemm<T>(d.kg, ld, d.rows, MatRef<T>{w + it.g * d.kg * d.rows, d.rows, 1},
            MatRef<T>{cols, ld, 1}, product, ld, ep);
    for (int64_t j = 0; j < images; ++j)
        for (int64_t k = 0; k < d.kg; ++k)
            std::memcpy(out + j * s.k * d.p + k * d.p, product + k * ld + j * width,
                        width * sizeof(T));
}

// acc (K x CRS, like w) += the item's share of the weight gradient. Several images: their
// gy slices are copied side by side, as their columns are.
template <typename T>
void weight_grad_tile(const ConvShape& s, const Dims& d, const T* gy, const T* x, T* acc,
                      const Tiling::Item& it, int threads) {
    const int64_t images = it.n1 - it.n0, width = it.p1 - it.p0, ld = images * width;
    T* cols = column_buffer().get<T>(d.rows * ld);
    for (int64_t j = 0; j < images; ++j)
        im2col_tile(s, d, x + ((it.n0 + j) * s.c + it.g * d.cg) * d.hw, it.p0, it.p1,
                    cols + j * width, ld, threads);
    const T* gyg = gy + (it.n0 * s.k + it.g * d.kg) * d.p + it.p0;
    MatRef<T> a{gyg, d.p, 1};
    if (images > 1) {
        T* side_by_side = output_buffer.get<T>(d.kg * ld);
        for (int64_t j = 0; j < images; ++j)
            for (int64_t k = 0; k < d.kg; ++k)
                std::memcpy(side_by_side + k * ld + j * width, gyg + j * s.k * d.p + k * d.p,
                            width * sizeof(T));
        a = {side_by_side, ld, 1};
    }
    Epilogue<T> ep;
    ep.accumulate = true;
    gemm<T>(d.kg, d.rows, ld, a, MatRef<T>{cols, 1, ld},  // the columns transposed
            acc + it.g * d.kg * d.rows, d.rows, ep);
}

}  // namespace

template <typename T>
void im2col_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu) {
    const Dims d(s);
    const int threads = num_threads();
    const Tiling t = plan_tiles(s.n, s.groups, d.p, d.rows, sizeof(T), threads, true);
    run_items(t.items, t.by_item, threads, [&](int64_t item, int) {
        forward_tile(s, d, x, w, bias, y, relu, t(item, s.n, s.groups, d.p),
                     t.by_item ? 1 : threads);
    });
}

template <typename T>
void im2col_weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw) {
    const Dims d(s);
    const int64_t size = s.k * d.rows;
    std::fill(gw, gw + size, T(0));
    if (s.n == 0 || d.p == 0 || size == 0) return;
    const int threads = num_threads();
    Tiling t = plan_tiles(s.n, s.groups, d.p, d.rows, sizeof(T), threads, true);
    if (t.by_item && threads * size * static_cast<int64_t>(sizeof(T)) > kPartialBytes)
        t.by_item = false;
    auto tile_of = [&](int64_t item, T* acc, int inside) {
        weight_grad_tile(s, d, gy, x, acc, t(item, s.n, s.groups, d.p), inside);
    };
    if (!t.by_item) {
        run_items(t.items, false, threads, [&](int64_t item, int) { tile_of(item, gw, threads); });
        return;
    }
    // Thread 0 sums into gw, the others into partials; static scheduling fixes which items
    // each thread sums, so the result depends only on the thread count.
    std::vector<T> partial(static_cast<size_t>(threads - 1) * size, T(0));
    run_items(t.items, true, threads, [&](int64_t item, int tid) {
        tile_of(item, tid == 0 ? gw : partial.data() + (tid - 1) * size, 1);
    }, /*fixed=*/true);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t e = 0; e < size; ++e)
        for (int th = 1; th < threads; ++th) gw[e] += partial[(th - 1) * size + e];
}

// dcols = W[g]^T @ gy[n, g] per tile, scattered into gx (plus bias per channel when given).
// Each (image, group) slice of gx is filled by one thread (or by all, split over channels).
template <typename T>
void col2im_input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx) {
    const Dims d(s);
    const int threads = num_threads();
    const Tiling t = plan_tiles(s.n, s.groups, d.p, d.rows, sizeof(T), threads, false);
    run_items(s.n * s.groups, t.by_item, threads, [&](int64_t pair, int) {
        const int64_t n = pair / s.groups, g = pair % s.groups;
        const int inside = t.by_item ? 1 : threads;
        T* gxg = gx + (n * s.c + g * d.cg) * d.hw;
#pragma omp parallel for num_threads(inside) schedule(static)
        for (int64_t c = 0; c < d.cg; ++c)
            std::fill(gxg + c * d.hw, gxg + (c + 1) * d.hw, bias ? bias[g * d.cg + c] : T(0));
        if (s.k == 0) return;
        for (int64_t p0 = 0; p0 < d.p; p0 += t.width) {
            const int64_t p1 = std::min(d.p, p0 + t.width);
            T* dcols = column_buffer().get<T>(d.rows * (p1 - p0));
            gemm<T>(d.rows, p1 - p0, d.kg, MatRef<T>{w + g * d.kg * d.rows, 1, d.rows},
                    MatRef<T>{gy + (n * s.k + g * d.kg) * d.p + p0, d.p, 1}, dcols, p1 - p0,
                    Epilogue<T>{});
#pragma omp parallel for num_threads(inside) schedule(static)
            for (int64_t c = 0; c < d.cg; ++c) col2im(s, d, dcols, c, c + 1, p0, p1, gxg);
        }
    });
}


#define PYFAST_IM2COL_INSTANTIATE(T)                                                        \
    template void im2col_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, bool); \
    template void im2col_weight_grad<T>(const ConvShape&, const T*, const T*, T*);             \
    template void col2im_input_grad<T>(const ConvShape&, const T*, const T*, const T*, T*);
PYFAST_IM2COL_INSTANTIATE(float)
PYFAST_IM2COL_INSTANTIATE(double)
#undef PYFAST_IM2COL_INSTANTIATE

}  // namespace pyfast::cpu_conv
