// Convolution on the CPU (NCHW, float32 and float64): forward, both gradients and the
// transposed convolution, for any stride, padding, dilation and groups (a group is a channel
// slice; strides make it free). Three paths, chosen per shape:
//
// Small images (16x16 and below) with 16+ channels, and every strided layer: implicit GEMM on
// a channels-last copy of a block of images (see the implicit section), positions broadcast
// and output channels in vectors, so nothing is computed for the padding or dropped; the
// input gradient of a strided layer is the same kernel over its stride phases. Measured
// against the two paths below (1 thread, AVX-512, float32, ResNet-18 at batch 64): 4x4 512ch
// forward 30.6 -> 17.3 ms, 8x8 256ch 24.2 -> 18.6, the input gradient of 3x3/2 on 8x8 33 -> 11.
//
// Stride 1 (every 3x3 and 1x1 layer of ResNet and U-Net, and the input gradient of those):
// direct kernels on zero-padded copies of the input ("planes", see the direct section). The
// forward micro-kernel reads its B vectors straight from the planes, so nothing is packed
// per output position; the weight gradient broadcasts from them. Measured against im2col +
// the packed GEMM (1 thread, AVX-512, float32, 3x3 N32 C64 32x32): forward 143 -> 234
// GFLOP/s, weight gradient 121 -> 213; the GEMM lost to the packing of a column matrix that
// only 64 output channels share.
//
// What neither takes (strided layers with few channels per tap, the weight gradient of a
// strided layer): im2col + the packed GEMM (gemm.h), per image n and group g, with P = OH*OW
// and CRS = C/groups * kh * kw:
//   forward      y[n,g] (Kg x P)     = W[g] (Kg x CRS) @ cols(x[n,g]) (CRS x P)   bias, ReLU fused
//   weight grad  gW[g]  (Kg x CRS)  += gy[n,g] (Kg x P) @ cols(x[n,g])^T
//   input grad   dcols = W[g]^T @ gy[n,g], scattered back into gx (col2im)
// cols is im2col: row (c, i, j) holds x under kernel tap (i, j) for every output position.
// A stride-1 input gradient is instead the forward convolution of gy with the flipped,
// transposed weights and padding d*(k-1)-p: a gather, on the direct path.
// The column buffer holds one tile of output positions (kColumnBytes), and the direct path's
// planes one band of rows (kBandBytes), so memory is bounded whatever the image size (a
// 512x512 U-Net layer needs about a MB per thread, not GB) and stays in cache.
//
// Threads: when there are at least as many (image, group, tile or band) items as threads,
// and they divide evenly (or are plenty), each thread takes whole items and runs them
// single-threaded (the GEMM runs alone inside a parallel region): no barriers,
// and each thread's data stays in its own L2. Weight gradients then go to per-thread partial
// sums, added up in a fixed order. With fewer items (batch 1, small images) the items run in
// turn with the work inside split over the threads. col2im works on whole (image, group)
// slices in the first mode and splits channels in the second, so no two threads ever add
// into the same element of gx.

#include "cpu/conv.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <numeric>
#include <vector>

#include "common/runtime.h"
#include "common/thread_buffer.h"
#include "cpu/gemm.h"

namespace pyfast {
namespace {

using std::int64_t;

// Column buffer per thread: a tile of it stays in L2 while the GEMM packs it.
constexpr int64_t kColumnBytes = 1 << 20;
// Tile widths are multiples of the widest GEMM micro-tile (32 float32 columns on AVX-512),
// so only the last tile of an image has a ragged edge.
constexpr int64_t kTileQuantum = 32;
// Per-thread weight-gradient partial sums may take this much in all; beyond it the weight
// gradient runs items in turn with the GEMM parallel inside.
constexpr int64_t kPartialBytes = int64_t(256) << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }  // a >= 0, b > 0

int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return std::min(std::max(v, lo), hi); }

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

thread_local ThreadBuffer column_buffer;

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

// gemm_inside: the items call the GEMM. Where nested parallelism is enabled (torch's libgomp
// sets max-active-levels to INT_MAX) such items are split inside rather than spread over the
// threads. The GEMM starts no nested team either way (inside a parallel region it runs on
// its caller's thread), so this is a choice of schedule now, kept until measured. The
// direct kernels' inner regions ask for one thread explicitly, so nesting does not matter
// to them.
bool threads_take_items(int64_t items, int threads, bool gemm_inside) {
    // An imbalance of one item in four is tolerated; less work than that is split inside.
    return threads > 1 && items >= threads && (items % threads == 0 || items >= 4 * threads) &&
           (!gemm_inside || omp_get_max_active_levels() <= 1);
}

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

// Runs fn(item, thread) for items [0, count): spread over the threads when by_item, else in
// turn on the calling thread. Items that write disjoint outputs are handed out as threads
// come free (a thread slowed by another process does not hold the rest up); those that sum
// into per-thread partials (`fixed`) are split statically, so which items each partial
// holds, and the rounding of the total, depend only on the thread count. An exception
// inside the parallel region is carried out of it.
template <typename F>
void run_items(int64_t count, bool by_item, int threads, F&& fn, bool fixed = false) {
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

// ---- direct (stride 1) ----------------------------------------------------------------------
//
// A stride-1 convolution needs no column matrix at all. Copy the input of one (image, group)
// into zero-padded planes of width wp (wide_row) and compute the output on that "wide" grid
// of wp columns per row: output position q = oh * wp + ow reads tap (i, j) of channel c at
// plane[c][q + i*dh*wp + j*dw], so for every tap the positions q..q+NR-1 are NR consecutive
// elements of the padded input. The micro-kernel keeps an MR (output channels) x NR
// (positions) tile in vector registers and runs the whole reduction over (c, i, j) in one
// go: per step NV vector loads straight from the padded planes and MR broadcasts from the
// packed weights, nothing packed per position. The wp - ow columns of each wide row that
// are not outputs are computed and dropped as the tile is written, with
// bias and ReLU. A band of output rows at a time keeps the planes within kBandBytes.

constexpr int64_t kBandBytes = 512 << 10;

// Width of a padded row. Its left padding doubles as the right padding of the row before:
// the reads of output column ow under tap j reach padded column ow + j*dw < w + 2*pw, and
// what lies past the row's end is the next row's first pw zeros (the last row's are the
// band's tail). So a row needs only w + pw elements, and only wp - ow wide positions per
// row are dropped (1 instead of 2 for a padded 3x3; 15/14 rather than 16/14 of the work on a
// 14x14 image). The output row must fit too, when the padding exceeds the kernel's reach.
int64_t wide_row(const ConvShape& s) { return std::max(s.w + s.pw, s.ow); }

template <typename T, int VecBytes, int MR_, int NV_>
struct DirectCfg {
    using type = T;
    static constexpr int lanes = VecBytes / static_cast<int>(sizeof(T));
    static constexpr int vec_bytes = VecBytes;
    static constexpr int MR = MR_, NV = NV_, NR = NV_ * lanes;
};

//                                type   vec MR NV
using DirectGenericF32 = DirectCfg<float,  16, 4, 2>;  // 4 x 8
using DirectGenericF64 = DirectCfg<double, 16, 4, 2>;  // 4 x 4
using DirectAvx2F32    = DirectCfg<float,  32, 6, 2>;  // 6 x 16, 12 ymm accumulators
using DirectAvx2F64    = DirectCfg<double, 32, 6, 2>;  // 6 x 8
using DirectAvx512F32  = DirectCfg<float,  64, 8, 3>;  // 8 x 48, 24 zmm accumulators
using DirectAvx512F64  = DirectCfg<double, 64, 8, 3>;  // 8 x 24

// One band of one (image, group), as the tiles see it.
template <typename T>
struct DirectBand {
    const T* planes;        // cg padded planes, `plane` elements apart, rows wp apart
    int64_t plane, wp;
    const T* weights;       // packed: slivers of MR output channels, each (cg*taps) x MR
    int64_t reduce;         // cg * taps
    int64_t cg, taps;
    const int64_t* offset;  // of each tap within a plane: i*dh*wp + j*dw
    int64_t kg;             // output channels of the group
    int64_t rows, ow;       // output rows in the band, output columns
    int64_t qtiles;         // NR-wide tiles of positions covering rows * wp
    T* y;                   // y[n, first channel of g, first row of the band]
    int64_t ldy;            // elements between output channels: oh * ow
    const T* bias;          // of the group's first channel, or null
    bool relu;
};

template <class Cfg, int NV>
PYFAST_INLINE void direct_tile(const DirectBand<typename Cfg::type>& b, int64_t sliver,
                               int64_t qtile) {
    // NV vectors of positions: Cfg::NV, or fewer for the last tile of a band.
    using T = typename Cfg::type;
    typedef T V __attribute__((vector_size(Cfg::vec_bytes)));
    constexpr int MR = Cfg::MR, L = Cfg::lanes, NR = NV * L;
    const int64_t q0 = qtile * Cfg::NR;

    V acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = V{};

    const T* __restrict a = b.weights + sliver * b.reduce * MR;
    const T* x = b.planes + q0;
    for (int64_t c = 0; c < b.cg; ++c, x += b.plane) {
        for (int64_t t = 0; t < b.taps; ++t, a += MR) {
            const T* xt = x + b.offset[t];
            V v[NV];
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) std::memcpy(&v[j], xt + j * L, sizeof(V));
#pragma GCC unroll 16
            for (int i = 0; i < MR; ++i) {
                const T ai = a[i];
#pragma GCC unroll 4
                for (int j = 0; j < NV; ++j) acc[i][j] += v[j] * ai;
            }
        }
    }

    // Out through a small buffer: positions q0.. map to (row, column) of the wide grid, and
    // only columns < ow of rows < b.rows are outputs.
    alignas(64) T tile[MR][NR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) std::memcpy(&tile[i][j * L], &acc[i][j], sizeof(V));
    const int64_t first = sliver * MR;
    const int rows = static_cast<int>(std::min<int64_t>(MR, b.kg - first));
    int64_t row = q0 / b.wp, col = q0 - row * b.wp;
    for (int64_t q = 0; q < NR && row < b.rows;) {
        const int64_t run = std::min<int64_t>(NR - q, b.wp - col);  // rest of this wide row
        const int64_t out = std::min<int64_t>(run, std::max<int64_t>(b.ow - col, 0));
        if (out > 0) {
            for (int i = 0; i < rows; ++i) {
                const T* src = &tile[i][q];
                T* dst = b.y + (first + i) * b.ldy + row * b.ow + col;
                const T add = b.bias ? b.bias[first + i] : T(0);
                if (b.relu) {
                    for (int64_t e = 0; e < out; ++e) {
                        const T v = src[e] + add;
                        dst[e] = v < T(0) ? T(0) : v;
                    }
                } else {
                    for (int64_t e = 0; e < out; ++e) dst[e] = src[e] + add;
                }
            }
        }
        q += run;
        col += run;
        if (col == b.wp) col = 0, ++row;
    }
}

// Tiles [t0, t1) of a band, numbered sliver-major (consecutive tiles share weights).
template <class Cfg>
PYFAST_INLINE void run_direct_tiles(const DirectBand<typename Cfg::type>& b, int64_t t0,
                                    int64_t t1) {
    constexpr int L = Cfg::lanes;
    // The band's last tile computes only the vectors that hold positions of the band.
    const int64_t tail = b.rows * b.wp - (b.qtiles - 1) * Cfg::NR;
    const int tail_vectors = static_cast<int>(ceil_div(tail, L));
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t sliver = t / b.qtiles, qtile = t % b.qtiles;
        if (qtile + 1 < b.qtiles || tail_vectors >= Cfg::NV)
            direct_tile<Cfg, Cfg::NV>(b, sliver, qtile);
        else if (Cfg::NV > 2 && tail_vectors == 2)
            direct_tile<Cfg, (Cfg::NV > 2 ? 2 : 1)>(b, sliver, qtile);
        else
            direct_tile<Cfg, 1>(b, sliver, qtile);
    }
}

template <typename T>
using DirectTilesFn = void (*)(const DirectBand<T>&, int64_t, int64_t);

// direct_generic_f32 ... direct_avx512_f64 and DirectPaths<float>/<double> (common/runtime.h).
PYFAST_ISA_TILE_PATHS(DirectPaths, DirectBand, run_direct_tiles, direct, Direct)

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

// Output rows per band and bands per (image, group): the band's planes (row_bytes per
// padded row) within kBandBytes, cut finer until the threads have an item each (or the
// items divide evenly among them).
struct Bands {
    int64_t band, bands;
};
Bands plan_bands(const ConvShape& s, int64_t row_bytes, int64_t pairs, int threads) {
    const int64_t halo = (s.kh - 1) * s.dh;
    const int64_t most = std::max<int64_t>(1, kBandBytes / row_bytes - halo);
    int64_t bands = ceil_div(s.oh, std::min(most, s.oh));
    while (threads > 1 && (pairs * bands) % threads != 0 && pairs * bands < 4 * threads &&
           bands < s.oh)
        ++bands;
    const int64_t band = ceil_div(s.oh, bands);
    return {band, ceil_div(s.oh, band)};
}

template <class Cfg>
void direct_forward(const ConvShape& s, const typename Cfg::type* x, const typename Cfg::type* w,
                    const typename Cfg::type* bias, typename Cfg::type* y, bool relu,
                    DirectTilesFn<typename Cfg::type> tiles) {
    using T = typename Cfg::type;
    constexpr int MR = Cfg::MR, NR = Cfg::NR;
    const Dims d(s);
    const int threads = num_threads();
    const int64_t slivers = ceil_div(d.kg, MR);
    const int64_t wp = wide_row(s), halo = (s.kh - 1) * s.dh;

    // Weights of every group as MR-row slivers, zero rows past kg: weights[g][sliver][r][i].
    std::vector<T> packed(static_cast<size_t>(s.groups * slivers * d.rows * MR), T(0));
    for (int64_t k = 0; k < s.k; ++k) {
        const int64_t g = k / d.kg, kl = k % d.kg;
        T* dst = packed.data() + ((g * slivers + kl / MR) * d.rows) * MR + kl % MR;
        for (int64_t r = 0; r < d.rows; ++r) dst[r * MR] = w[k * d.rows + r];
    }
    std::vector<int64_t> offset(d.taps);
    for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j) offset[i * s.kw + j] = i * s.dh * wp + j * s.dw;

    const int64_t pairs = s.n * s.groups;
    const Bands plan = plan_bands(s, d.cg * wp * static_cast<int64_t>(sizeof(T)), pairs, threads);
    const int64_t band = plan.band, bands = plan.bands;
    const int64_t tail = NR + (s.kw - 1) * s.dw;
    const bool by_item = threads_take_items(pairs * bands, threads, false);

    run_items(pairs * bands, by_item, threads, [&](int64_t item, int) {
        const int64_t pair = item / bands, oh0 = item % bands * band;
        const int64_t n = pair / s.groups, g = pair % s.groups;
        const int64_t rows = std::min(band, s.oh - oh0), in_rows = rows + halo;
        T* planes = column_buffer.get<T>(d.cg * in_rows * wp + tail);
        const int inside = by_item ? 1 : threads;
        fill_band(s, d, x + (n * s.c + g * d.cg) * d.hw, oh0, in_rows, wp, tail, planes,
                  d.cg * in_rows * wp < 16384 ? 1 : inside);
        DirectBand<T> b{planes, in_rows * wp, wp,
                        packed.data() + g * slivers * d.rows * MR, d.rows, d.cg, d.taps,
                        offset.data(), d.kg, rows, s.ow, ceil_div(rows * wp, NR),
                        y + (n * s.k + g * d.kg) * d.p + oh0 * s.ow, d.p,
                        bias ? bias + g * d.kg : nullptr, relu};
        run_item_tiles(tiles, b, slivers * b.qtiles, inside);
    });
}

// Wide-grid positions the direct forward computes per output: the dropped columns and the
// last tile's unused lanes (one band per image: what small images, where it matters, get).
template <class Cfg>
double direct_waste(const ConvShape& s) {
    const int64_t positions = s.oh * wide_row(s);
    const int64_t computed = positions / Cfg::NR * Cfg::NR +
                             ceil_div(positions % Cfg::NR, Cfg::lanes) * Cfg::lanes;
    return static_cast<double>(computed) / static_cast<double>(s.oh * s.ow);
}

// Whether the direct path takes this convolution: stride 1, no crop, the usual output
// extent (a transposed convolution's output_padding can add rows the formula does not
// have). A 1x1 one goes there too: reading x without packing it beat the GEMM (which reads
// x as its B matrix) by 8% forward and 20% in the weight gradient (256->64 at 56x56).
// Small images go to im2col with several images per GEMM instead: at 4x4 the wide grid
// computes 2 positions per output and the weight gradient's reductions are 20 long.
// Measured (3x3, 1 thread, AVX-512 float32, forward / weight gradient GFLOP/s, direct vs
// im2col): 4x4 125/115 vs 172/175, 7x7 175/130 vs 168/189, 8x8 208/192 vs 176/170,
// 14x14 234/212 vs 177/183; the cut is at 1.3 positions per output, or fewer than 64 wide
// positions per image.
template <typename T>
bool takes_direct(const ConvShape& s) {
    if (s.sh != 1 || s.sw != 1 || s.ph < 0 || s.pw < 0 ||
        s.oh != s.h + 2 * s.ph - s.dh * (s.kh - 1) || s.ow != s.w + 2 * s.pw - s.dw * (s.kw - 1))
        return false;
    const double waste = with_active_isa<DirectPaths<T>>(
        [&](auto cfg, auto) { return direct_waste<decltype(cfg)>(s); });
    return waste <= 1.3 && s.oh * wide_row(s) >= 64;
}

template <typename T>
void direct_forward_dispatch(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                             bool relu) {
    with_active_isa<DirectPaths<T>>([&](auto cfg, auto tiles) {
        direct_forward<decltype(cfg)>(s, x, w, bias, y, relu, tiles);
    });
}

// ---- direct weight gradient (stride 1) -------------------------------------------------------
//
// gW[k, (c, i, j)] = sum over wide positions q of gy[k, q] * plane[c][q + offset(i, j)], the
// positions of dropped columns carrying gy = 0. The reduction runs along q, so the tile is
// transposed with respect to the forward one: MR rows (c, tap) x NR output channels k. gy is
// packed once per band as gyT[q][k] (zeros in dropped columns), whose rows give the NV
// vectors of a step; the MR broadcasts come straight from the padded planes, one pointer per
// row. A tile sums over every position of the band in registers, then adds into the
// caller's gW^T (rows x K), which run_items keeps per thread. Small images come as blocks of
// whole images instead of bands, the tile summing over all of them: otherwise every 8x8
// image (72 positions) would add a tile into a gW^T of up to tens of MB.

template <typename T, int VecBytes, int MR_, int NV_>
using WgradCfg = DirectCfg<T, VecBytes, MR_, NV_>;

//                               type   vec  MR NV
using WgradGenericF32 = WgradCfg<float,  16, 4, 2>;   // 4 x 8
using WgradGenericF64 = WgradCfg<double, 16, 4, 2>;   // 4 x 4
using WgradAvx2F32    = WgradCfg<float,  32, 6, 2>;   // 6 x 16, 12 ymm accumulators
using WgradAvx2F64    = WgradCfg<double, 32, 6, 2>;   // 6 x 8
using WgradAvx512F32  = WgradCfg<float,  64, 12, 2>;  // 12 x 32, 24 zmm accumulators
using WgradAvx512F64  = WgradCfg<double, 64, 12, 2>;  // 12 x 16

template <typename T>
struct WgradBand {
    const T* planes;        // as DirectBand
    int64_t plane;
    const int64_t* offset;
    int64_t reduce, taps;   // rows of the tile grid: cg * taps
    const T* gyt;           // panels of NR output channels: images x positions x NR each
    int64_t panel, positions;  // elements per panel; wide positions per image
    int64_t kg;
    int64_t rtiles;         // MR-row tiles over reduce
    T* acc;                 // gW^T of the group: reduce x kg, added to
    int64_t images, image;  // images of the block, elements between their planes
    bool fresh;             // store into acc rather than add
};

template <class Cfg>
PYFAST_INLINE void wgrad_tile(const WgradBand<typename Cfg::type>& b, int64_t rtile,
                              int64_t ktile) {
    using T = typename Cfg::type;
    typedef T V __attribute__((vector_size(Cfg::vec_bytes)));
    constexpr int MR = Cfg::MR, NV = Cfg::NV, NR = Cfg::NR, L = Cfg::lanes;
    const int64_t r0 = rtile * MR, k0 = ktile * NR;
    const T* src[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
        const int64_t r = r0 + i;
        // Rows past reduce repeat the last row: they are summed but never written.
        const int64_t rr = std::min(r, b.reduce - 1);
        src[i] = b.planes + rr / b.taps * b.plane + b.offset[rr % b.taps];
    }
    V acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = V{};
    // The images' gyT rows follow each other, so g runs on through the block.
    const T* g = b.gyt + ktile * b.panel;
    for (int64_t m = 0; m < b.images; ++m) {
        for (int64_t q = 0; q < b.positions; ++q, g += NR) {
            V v[NV];
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) std::memcpy(&v[j], g + j * L, sizeof(V));
#pragma GCC unroll 16
            for (int i = 0; i < MR; ++i) {
                const T ai = src[i][q];
#pragma GCC unroll 4
                for (int j = 0; j < NV; ++j) acc[i][j] += v[j] * ai;
            }
        }
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) src[i] += b.image;
    }
    const int rows = static_cast<int>(std::min<int64_t>(MR, b.reduce - r0));
    const int64_t cols = std::min<int64_t>(NR, b.kg - k0);
    alignas(64) T tile[NR];
    for (int i = 0; i < rows; ++i) {
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) std::memcpy(&tile[j * L], &acc[i][j], sizeof(V));
        T* dst = b.acc + (r0 + i) * b.kg + k0;
        if (b.fresh)
            std::memcpy(dst, tile, cols * sizeof(T));
        else
            for (int64_t e = 0; e < cols; ++e) dst[e] += tile[e];
    }
}

template <class Cfg>
PYFAST_INLINE void run_wgrad_tiles(const WgradBand<typename Cfg::type>& b, int64_t t0,
                                   int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) wgrad_tile<Cfg>(b, t % b.rtiles, t / b.rtiles);
}

template <typename T>
using WgradTilesFn = void (*)(const WgradBand<T>&, int64_t, int64_t);

// wgrad_generic_f32 ... wgrad_avx512_f64 and WgradPaths<float>/<double> (common/runtime.h).
PYFAST_ISA_TILE_PATHS(WgradPaths, WgradBand, run_wgrad_tiles, wgrad, Wgrad)

thread_local ThreadBuffer gy_buffer;
thread_local ThreadBuffer partial_sums_buffer;

int64_t plan_images(int64_t n, int64_t groups, int64_t image_bytes, int64_t budget,
                    int threads);

// Images of at most this many wide positions go to the weight gradient in blocks of whole
// images, the block's planes and gyT within kWgradBlockBytes.
constexpr int64_t kWgradBlockPositions = 512;
constexpr int64_t kWgradBlockBytes = 2 << 20;

// gW (K x cg*taps) of a stride-1 convolution; the planes as direct_forward builds them.
template <class Cfg>
void direct_weight_grad(const ConvShape& s, const typename Cfg::type* gy,
                        const typename Cfg::type* x, typename Cfg::type* gw,
                        WgradTilesFn<typename Cfg::type> tiles) {
    using T = typename Cfg::type;
    constexpr int MR = Cfg::MR, NR = Cfg::NR;
    const Dims d(s);
    const int threads = num_threads();
    const int64_t wp = wide_row(s), halo = (s.kh - 1) * s.dh;
    const int64_t ldg = ceil_div(d.kg, NR) * NR;
    std::vector<int64_t> offset(d.taps);
    for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j) offset[i * s.kw + j] = i * s.dh * wp + j * s.dw;

    const int64_t row_bytes = (d.cg + ldg) * wp * static_cast<int64_t>(sizeof(T));
    Bands plan{s.oh, 1};
    int64_t images = 1, blocks = s.n;
    if (s.oh * wp <= kWgradBlockPositions) {
        // Small images: whole images, several per item, so that a tile sums over all of
        // them in registers before it adds into the partial sums (which outgrow the caches
        // at 512+ channels: one image's band of 8x8 summed 36 positions per 19 MB added).
        images = plan_images(s.n, s.groups, (s.oh + halo) * row_bytes, kWgradBlockBytes,
                             threads);
        blocks = ceil_div(s.n, images);
    } else {
        plan = plan_bands(s, row_bytes, s.n * s.groups, threads);
    }
    const int64_t band = plan.band, bands = plan.bands;
    const int64_t items = blocks * s.groups * bands, size = s.k * d.rows;
    bool by_item = threads_take_items(items, threads, false) &&
                   threads * size * static_cast<int64_t>(sizeof(T)) <= kPartialBytes;

    // gW^T per thread (thread 0's is sums[0]); static scheduling fixes who sums what.
    const int partials = by_item ? threads : 1;
    // A partial's first item of a group stores its sums rather than adding them, so
    // nothing is zeroed (tens of MB at 512+ channels); touched says which were stored.
    T* sums = partial_sums_buffer.get<T>(partials * size);
    std::vector<char> touched(static_cast<size_t>(partials * s.groups), 0);
    run_items(items, by_item, threads, [&](int64_t item, int tid) {
        const int64_t pair = item / bands, oh0 = item % bands * band;
        const int64_t n0 = pair / s.groups * images, g = pair % s.groups;
        const bool fresh = !touched[tid * s.groups + g];
        touched[tid * s.groups + g] = 1;
        const int64_t count = std::min(images, s.n - n0);
        const int64_t rows = std::min(band, s.oh - oh0), in_rows = rows + halo;
        const int64_t positions = rows * wp, image = d.cg * in_rows * wp;
        const int inside = by_item ? 1 : threads;
        // The last row's reads run (kw-1)*dw past an image's planes: into the next image's,
        // or zeros after the last (a dropped position multiplies them by gy = 0, which must
        // not meet uninitialised memory: 0 * NaN).
        const int64_t tail = (s.kw - 1) * s.dw;
        T* planes = column_buffer.get<T>(count * image + tail);
        for (int64_t m = 0; m < count; ++m)  // in order: each fill's tail is the next's start
            fill_band(s, d, x + ((n0 + m) * s.c + g * d.cg) * d.hw, oh0, in_rows, wp, tail,
                      planes + m * image, image < 16384 ? 1 : inside);
        // gyT[q][k]: gy of the band on the wide grid, zero in the dropped columns, image
        // after image.
        // In panels of NR channels, so that a tile reads its gy contiguously (rows of kg
        // elements a multiple of 4 KB apart all fell into one L1 set).
        T* gyt = gy_buffer.get<T>(count * positions * ldg);
        const int64_t panel = count * positions * NR;
#pragma omp parallel for num_threads(count * positions * ldg < 16384 ? 1 : inside) schedule(static)
        for (int64_t mr = 0; mr < count * rows; ++mr) {
            const int64_t m = mr / rows, r = mr % rows;
            const T* gyg = gy + ((n0 + m) * s.k + g * d.kg) * d.p + (oh0 + r) * s.ow;
            const int64_t q0 = (m * rows + r) * wp;
            for (int64_t k0 = 0; k0 < ldg; k0 += NR)
                std::fill(gyt + k0 / NR * panel + q0 * NR, gyt + k0 / NR * panel + (q0 + wp) * NR,
                          T(0));
            for (int64_t k = 0; k < d.kg; ++k) {
                const T* src = gyg + k * d.p;
                T* dst = gyt + k / NR * panel + q0 * NR + k % NR;
                for (int64_t c = 0; c < s.ow; ++c) dst[c * NR] = src[c];
            }
        }
        WgradBand<T> b{planes, in_rows * wp, offset.data(), d.rows, d.taps, gyt, panel,
                       positions, d.kg, ceil_div(d.rows, MR),
                       sums + tid * size + g * d.rows * d.kg, count, image, fresh};
        run_item_tiles(tiles, b, b.rtiles * ceil_div(d.kg, NR), inside);
    }, /*fixed=*/true);
    // gw[g*kg + k][r] = sum over the partials that hold group g of sums[.][g][r][k], in
    // blocks of 16 rows r: the block's rows of sums stay in L1 while k runs over them and
    // every write fills a cache line (a row r at a time read one line per element).
    constexpr int64_t kBlock = 16;
    const int64_t rblocks = ceil_div(d.rows, kBlock);
#pragma omp parallel for num_threads(size < 65536 ? 1 : threads) schedule(static)
    for (int64_t gb = 0; gb < s.groups * rblocks; ++gb) {
        const int64_t g = gb / rblocks, r0 = gb % rblocks * kBlock;
        const int64_t r1 = std::min(d.rows, r0 + kBlock);
        T* out = gw + g * d.kg * d.rows;
        bool first = true;
        for (int p = 0; p < partials; ++p) {
            if (!touched[p * s.groups + g]) continue;
            const T* in = sums + p * size + g * d.rows * d.kg;
            for (int64_t k = 0; k < d.kg; ++k)
                for (int64_t r = r0; r < r1; ++r) {
                    const T v = in[r * d.kg + k];
                    out[k * d.rows + r] = first ? v : out[k * d.rows + r] + v;
                }
            first = false;
        }
        if (first)
            for (int64_t k = 0; k < d.kg; ++k)
                std::fill(out + k * d.rows + r0, out + k * d.rows + r1, T(0));
    }
}

// Whether the direct weight gradient takes this convolution: where the forward does, and on
// small images too, which come in blocks (no short reductions); the reduction runs along the
// wide positions, so only the dropped columns are waste, not tile lanes. But im2col + GEMM
// keeps tiny images with 1024+ output channels, where im2col costs little per GEMM flop.
// Measured (3x3, AVX-512 float32, ms at 1 / 2 threads, direct vs im2col): N32 128->32 4x4
// 0.28/0.16 vs 1.31/1.11, N32 64->64 7x7 0.61/0.33 vs 1.56/1.17, N64 512->512 4x4
// 25.8/14.0 vs 29.8/14.9; but N16 512->1024 4x4 18.1/11.0 vs 13.5/9.7, 1024->1024 42/25
// vs 40/21.
template <typename T>
bool takes_direct_weight_grad(const ConvShape& s) {
    if (takes_direct<T>(s)) return true;
    if (s.sh != 1 || s.sw != 1 || s.ph < 0 || s.pw < 0 ||
        s.oh != s.h + 2 * s.ph - s.dh * (s.kh - 1) || s.ow != s.w + 2 * s.pw - s.dw * (s.kw - 1))
        return false;
    return s.oh * wide_row(s) <= 1.3 * s.oh * s.ow && s.k / s.groups < 1024;
}

template <typename T>
void direct_weight_grad_dispatch(const ConvShape& s, const T* gy, const T* x, T* gw) {
    with_active_isa<WgradPaths<T>>([&](auto cfg, auto tiles) {
        direct_weight_grad<decltype(cfg)>(s, gy, x, gw, tiles);
    });
}

// ---- implicit GEMM on channels-last copies (small images, strides) -------------------------
//
// On a 4x4 or 8x8 image the direct kernels' wide grid computes up to 1.5 positions per output
// and im2col copies the input once per tap before the GEMM packs it again; a strided input
// gradient scatters through col2im. Here the source (x for the forward, gy for the input
// gradient) of a block of images is copied once, with zero borders, into channels-last order
// (copy[image][row][column][c]), and the micro-kernel computes out^T (positions x channels) =
// cols^T @ W^T without building cols: an MR (positions) x NR (output channels) tile loads NV
// vectors of packed weights per step ([tap][c][NR] slivers) and broadcasts MR inputs, each
// position through its own pointer into the copy. So positions need not be neighbours:
//  - nothing is computed and dropped, and any stride and dilation is the same loop;
//  - positions are ordered by which taps reach inside the source, and a tile runs only the
//    rectangle of taps its positions need: at 4x4 with a 3x3 kernel and padding 1, 100 of 144
//    tap-position products, the rest being zeros of the padding;
//  - the input gradient of a strided convolution is the same product: gx(ih) takes tap i when
//    i*dh = ih + ph (mod sh), from gy row (ih + ph - i*dh) / sh, so the positions fall into
//    stride phases, each a stride-1 gather with a subset of the taps (no col2im, no scatter).
// The reduction runs in chunks of channels whose weights stay in L1 while the block's tiles
// pass over them, with partial sums kept per tile.

// Weights of one reduction chunk: in L1 with room for the inputs the tiles read.
constexpr int64_t kImplicitChunkBytes = 20 << 10;
// Channels-last copy of a block of images.
constexpr int64_t kImplicitBytes = 384 << 10;
constexpr int64_t kImplicitMaxBytes = 4 << 20;
constexpr int64_t kWeightShare = 4;

template <typename T, int VecBytes, int MR_, int NV_>
using ImplicitCfg = DirectCfg<T, VecBytes, MR_, NV_>;  // MR positions x NR output channels

//                                   type   vec MR  NV
using ImplicitGenericF32 = ImplicitCfg<float,  16, 4, 2>;   // 4 x 8
using ImplicitGenericF64 = ImplicitCfg<double, 16, 4, 2>;   // 4 x 4
using ImplicitAvx2F32    = ImplicitCfg<float,  32, 6, 2>;   // 6 x 16, 12 ymm accumulators
using ImplicitAvx2F64    = ImplicitCfg<double, 32, 6, 2>;   // 6 x 8
using ImplicitAvx512F32  = ImplicitCfg<float,  64, 12, 2>;  // 12 x 32, 24 zmm accumulators
using ImplicitAvx512F64  = ImplicitCfg<double, 64, 12, 2>;  // 12 x 16

// Taps i0, i0 + step, .. < i1 of one kernel axis.
struct TapRange {
    int64_t lo = 0, hi = 0, step = 1;
};

// Up to MR positions (p0..) and the taps they need: rows x columns of TapRanges.
struct ImplicitTile {
    int64_t p0, count;
    TapRange rows, cols;
};

// One block of images of one group, as the tiles see it.
template <typename T>
struct ImplicitBlock {
    const T* x;                  // the channels-last copy
    const int64_t* window;       // per position: offset in x of its tap-(0, 0) read, channel 0
    const int64_t* out;          // per position: offset in y of its element in channel 0
    const ImplicitTile* tiles;
    int64_t ntiles;
    const int64_t* tap_row;      // offset in x of tap row i from the window
    const int64_t* tap_col;      // of tap column j
    int64_t kw, taps, cg;        // cg: channels summed over
    const T* weights;            // slivers of NR output channels, each taps x cg x NR
    int64_t kg, ldy;             // output channels; elements between them in y
    T* y;
    const T* bias;               // of the first output channel, or null
    bool relu;
};

// Channels [c0, c1) of one tile's reduction: from zero (c0 == 0) or the partial sums of the
// earlier channels, into y (c1 == cg, with bias and ReLU) or back to the partial sums.
template <class Cfg>
PYFAST_INLINE void implicit_tile(const ImplicitBlock<typename Cfg::type>& b,
                                 const ImplicitTile& tl, int64_t sliver, int64_t c0, int64_t c1,
                                 typename Cfg::type* partial) {
    using T = typename Cfg::type;
    typedef T V __attribute__((vector_size(Cfg::vec_bytes)));
    constexpr int MR = Cfg::MR, NV = Cfg::NV, NR = Cfg::NR, L = Cfg::lanes;
    const int rows = static_cast<int>(tl.count);
    const T* corner[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)  // idle rows repeat the last position
        corner[i] = b.x + b.window[tl.p0 + std::min(i, rows - 1)] + c0;

    V acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) {
            if (c0 == 0)
                acc[i][j] = V{};
            else
                std::memcpy(&acc[i][j], partial + i * NR + j * L, sizeof(V));
        }
    const T* weights = b.weights + (sliver * b.taps * b.cg + c0) * NR;
    for (int64_t ti = tl.rows.lo; ti < tl.rows.hi; ti += tl.rows.step)
        for (int64_t tj = tl.cols.lo; tj < tl.cols.hi; tj += tl.cols.step) {
            const int64_t off = b.tap_row[ti] + b.tap_col[tj];
            const T* src[MR];
#pragma GCC unroll 16
            for (int i = 0; i < MR; ++i) src[i] = corner[i] + off;
            const T* __restrict a = weights + (ti * b.kw + tj) * b.cg * NR;
            for (int64_t c = 0; c < c1 - c0; ++c, a += NR) {
                V v[NV];
#pragma GCC unroll 4
                for (int j = 0; j < NV; ++j) std::memcpy(&v[j], a + j * L, sizeof(V));
#pragma GCC unroll 16
                for (int i = 0; i < MR; ++i) {
                    const T xi = src[i][c];
#pragma GCC unroll 4
                    for (int j = 0; j < NV; ++j) acc[i][j] += v[j] * xi;
                }
            }
        }
    if (c1 < b.cg) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j)
                std::memcpy(partial + i * NR + j * L, &acc[i][j], sizeof(V));
        return;
    }

    alignas(64) T tile[MR][NR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) std::memcpy(&tile[i][j * L], &acc[i][j], sizeof(V));
    const int64_t first = sliver * NR;
    const int cols = static_cast<int>(std::min<int64_t>(NR, b.kg - first));
    const int64_t* out = b.out + tl.p0;
    for (int k = 0; k < cols; ++k) {
        T* yk = b.y + (first + k) * b.ldy;
        const T add = b.bias ? b.bias[first + k] : T(0);
        for (int i = 0; i < rows; ++i) {
            const T v = tile[i][k] + add;
            yk[out[i]] = b.relu && v < T(0) ? T(0) : v;
        }
    }
}

thread_local ThreadBuffer partial_buffer;

// Tiles [t0, t1) of a block, numbered sliver-major. The reduction runs in chunks of channels
// whose weights (taps x chunk x NR) stay in L1 while every tile of the sliver passes over
// them; the tiles keep their partial sums in between.
template <class Cfg>
PYFAST_INLINE void run_implicit_tiles(const ImplicitBlock<typename Cfg::type>& b, int64_t t0,
                                      int64_t t1) {
    using T = typename Cfg::type;
    constexpr int MR = Cfg::MR, NR = Cfg::NR;
    const int64_t chunk = std::max<int64_t>(
        8, kImplicitChunkBytes / (b.taps * NR * static_cast<int64_t>(sizeof(T))) / 8 * 8);
    T* partial = b.cg > chunk
                     ? partial_buffer.get<T>(std::min(t1 - t0, b.ntiles) * MR * NR)
                     : nullptr;
    for (int64_t t = t0; t < t1;) {
        const int64_t sliver = t / b.ntiles, first = t % b.ntiles;
        const int64_t last = std::min(b.ntiles, first + (t1 - t));
        for (int64_t c0 = 0; c0 < b.cg; c0 += chunk)
            for (int64_t p = first; p < last; ++p)
                implicit_tile<Cfg>(b, b.tiles[p], sliver, c0, std::min(b.cg, c0 + chunk),
                                   partial + (p - first) * MR * NR);
        t += last - first;
    }
}

template <typename T>
using ImplicitTilesFn = void (*)(const ImplicitBlock<T>&, int64_t, int64_t);

// implicit_generic_f32 ... implicit_avx512_f64 and ImplicitPaths<float>/<double>
// (common/runtime.h).
PYFAST_ISA_TILE_PATHS(ImplicitPaths, ImplicitBlock, run_implicit_tiles, implicit, Implicit)

// One axis of an implicit product. Output coordinate o (a row of y for the forward, of gx for
// the input gradient) reads copy row window[o] + offset[i] under tap i; copy row r holds
// source row r - pad (zero outside the source). valid[o]: the taps that land inside the
// source; phase[o]: the residue mod step every tap of o has (taps of other residues read the
// wrong rows, so positions of different phases never share a tile), -1 if none can.
struct ImplicitAxis {
    int64_t pad = 0, extent = 0, step = 1;
    std::vector<int64_t> window, offset, phase;
    std::vector<TapRange> valid;
};

// Taps of a forward axis: output o reads source o*stride - pad + i*dil.
ImplicitAxis forward_axis(int64_t out, int64_t in, int64_t k, int64_t stride, int64_t pad,
                          int64_t dil) {
    ImplicitAxis a;
    a.pad = pad;
    a.extent = (out - 1) * stride + (k - 1) * dil + 1;
    for (int64_t o = 0; o < out; ++o) {
        a.window.push_back(o * stride);
        TapRange r;
        r.lo = k;
        for (int64_t i = 0; i < k; ++i) {
            const int64_t src = o * stride - pad + i * dil;
            if (src >= 0 && src < in) r.lo = std::min(r.lo, i), r.hi = i + 1;
        }
        if (r.hi == 0) r.lo = 0;
        a.valid.push_back(r);
        a.phase.push_back(0);
    }
    for (int64_t i = 0; i < k; ++i) a.offset.push_back(i * dil);
    return a;
}

// Taps of an input-gradient axis: gx coordinate o takes tap i from gy row (o + pad - i*dil) /
// stride when that divides and lands in [0, out); with A(i) = floor(i*dil / stride) that row is
// floor((o + pad) / stride) - A(i), so the window is that first term and tap i's offset -A(i).
ImplicitAxis input_grad_axis(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad,
                             int64_t dil) {
    ImplicitAxis a;
    a.step = stride / std::gcd(stride, dil);
    // Copy rows start at the lowest gy row a tap can read, pad / stride - A(k-1) (rows of
    // zeros above gy where negative): no row the tiles never read, which at 4x4 had cost
    // a block one of its two images.
    a.pad = std::max<int64_t>(0, (k - 1) * dil / stride - pad / stride);
    a.extent = (in - 1 + pad) / stride + a.pad + 1;
    for (int64_t i = 0; i < k; ++i) a.offset.push_back(-(i * dil / stride));
    for (int64_t o = 0; o < in; ++o) {
        a.window.push_back((o + pad) / stride + a.pad);
        TapRange r;
        r.step = a.step;
        r.lo = k;
        int64_t phase = -1;
        for (int64_t i = 0; i < k; ++i) {
            const int64_t at = o + pad - i * dil;
            if (at % stride != 0) continue;
            if (phase < 0) phase = i % a.step;
            if (at >= 0 && at / stride < out) r.lo = std::min(r.lo, i), r.hi = i + 1;
        }
        if (r.hi == 0) r.lo = 0;
        a.valid.push_back(r);
        a.phase.push_back(phase);
    }
    return a;
}

// The copy of one image's channels [c0, c0 + cg) of src (channels x h x w, NCHW) in
// channels-last order over the rows and columns of the two axes.
template <typename T>
void copy_channels_last(const ImplicitAxis& ra, const ImplicitAxis& ca, int64_t h, int64_t w,
                        int64_t cg, const T* src, T* dst) {
    const int64_t lo = clamp(ca.pad, 0, ca.extent), hi = clamp(ca.pad + w, lo, ca.extent);
    const int64_t row = ca.extent * cg;
    for (int64_t r = 0; r < ra.extent; ++r, dst += row) {
        const int64_t ih = r - ra.pad;
        if (ih < 0 || ih >= h) {
            std::fill(dst, dst + row, T(0));
            continue;
        }
        std::fill(dst, dst + lo * cg, T(0));
        std::fill(dst + hi * cg, dst + row, T(0));
        const T* s = src + ih * w + lo - ca.pad;
        for (int64_t c = 0; c < cg; ++c) {
            const T* sc = s + c * h * w;
            T* dc = dst + lo * cg + c;
            for (int64_t col = 0; col < hi - lo; ++col) dc[col * cg] = sc[col];
        }
    }
}

// The positions of one image in tile order: grouped by phase, then by the taps they need
// (positions with equal taps next to each other), with the bounds of each run of equal taps.
struct PositionOrder {
    std::vector<int64_t> row, col;     // of each position, in order
    std::vector<int64_t> run;          // run boundaries: run[r]..run[r+1]
};

PositionOrder order_positions(const ImplicitAxis& ra, const ImplicitAxis& ca) {
    const int64_t oh = ra.window.size(), ow = ca.window.size();
    std::vector<std::array<int64_t, 8>> keys;
    for (int64_t r = 0; r < oh; ++r)
        for (int64_t c = 0; c < ow; ++c)
            keys.push_back({ra.phase[r], ca.phase[c], ra.valid[r].lo, ra.valid[r].hi,
                            ca.valid[c].lo, ca.valid[c].hi, r, c});
    std::sort(keys.begin(), keys.end());
    PositionOrder o;
    for (size_t p = 0; p < keys.size(); ++p) {
        if (p == 0 || !std::equal(keys[p].begin(), keys[p].begin() + 6, keys[p - 1].begin()))
            o.run.push_back(static_cast<int64_t>(p));
        o.row.push_back(keys[p][6]);
        o.col.push_back(keys[p][7]);
    }
    o.run.push_back(static_cast<int64_t>(keys.size()));
    return o;
}

int64_t tap_count(const TapRange& rows, const TapRange& cols) {
    return ceil_div(std::max<int64_t>(rows.hi - rows.lo, 0), rows.step) *
           ceil_div(std::max<int64_t>(cols.hi - cols.lo, 0), cols.step);
}

TapRange cover(const TapRange& a, const TapRange& b) {  // the taps of both (same step)
    if (a.hi <= a.lo) return b;
    if (b.hi <= b.lo) return a;
    return {std::min(a.lo, b.lo), std::max(a.hi, b.hi), a.step};
}

// Positions of a block of `images` images in tile order (run by run, each run for every image
// in turn), their offsets in the copy (window) and in the output (out), and the tiles: up to
// MR positions of one phase, each with the taps its positions need.
struct BlockPlan {
    std::vector<int64_t> window, out;
    std::vector<ImplicitTile> tiles;
};

void plan_block(const PositionOrder& o, const ImplicitAxis& ra, const ImplicitAxis& ca,
                int64_t images, int64_t cg, int64_t out_image, int mr, BlockPlan& b) {
    const int64_t ow = ca.window.size(), copy_image = ra.extent * ca.extent * cg;
    b.window.clear(), b.out.clear(), b.tiles.clear();
    ImplicitTile tile{0, 0, {}, {}};
    std::pair<int64_t, int64_t> phase{-2, -2};
    for (size_t r = 0; r + 1 < o.run.size(); ++r) {
        const int64_t first = o.run[r], last = o.run[r + 1];
        const int64_t row0 = o.row[first], col0 = o.col[first];
        const std::pair<int64_t, int64_t> run_phase{ra.phase[row0], ca.phase[col0]};
        if (run_phase != phase && tile.count > 0) {
            b.tiles.push_back(tile);
            tile = {static_cast<int64_t>(b.window.size()), 0, {}, {}};
        }
        phase = run_phase;
        if (tile.count > 0) {
            // Finish the tile here (idle rows) or let this run join it (more taps for all)?
            const TapRange rows = cover(tile.rows, ra.valid[row0]);
            const TapRange cols = cover(tile.cols, ca.valid[col0]);
            const int64_t now = tap_count(tile.rows, tile.cols), joined = tap_count(rows, cols);
            const int64_t own = tap_count(ra.valid[row0], ca.valid[col0]);
            const int64_t fill = std::min<int64_t>(mr - tile.count, (last - first) * images);
            if ((mr - tile.count) * now < (joined - now) * tile.count + (joined - own) * fill) {
                b.tiles.push_back(tile);
                tile = {static_cast<int64_t>(b.window.size()), 0, {}, {}};
            }
        }
        for (int64_t m = 0; m < images; ++m)
            for (int64_t p = first; p < last; ++p) {
                if (tile.count == mr) {
                    b.tiles.push_back(tile);
                    tile = {static_cast<int64_t>(b.window.size()), 0, {}, {}};
                }
                const int64_t row = o.row[p], col = o.col[p];
                b.window.push_back(m * copy_image + (ra.window[row] * ca.extent + ca.window[col]) * cg);
                b.out.push_back(m * out_image + row * ow + col);
                tile.rows = cover(tile.rows, ra.valid[row]);
                tile.cols = cover(tile.cols, ca.valid[col]);
                ++tile.count;
            }
    }
    if (tile.count > 0) b.tiles.push_back(tile);
    for (ImplicitTile& t : b.tiles) {  // no taps at all: one empty range suffices
        if (t.rows.hi <= t.rows.lo || t.cols.hi <= t.cols.lo) t.rows = t.cols = TapRange{};
    }
}

thread_local ThreadBuffer weight_buffer;

// Weights as the implicit kernels read them: per group, slivers of NR output channels, each
// taps x reds x NR (the taps outermost, zeros past outs), from w where output channel o, summed
// channel r and tap t of group g are at w[g * group + o * out_stride + r * red_stride + t].
// Blocks of 16 summed channels: each output channel's run is read in order while the block's
// destination rows stay in L1 (one element per source row per step would thrash L1: rows a
// multiple of 4 KB apart at 512 channels).
template <int NR, typename T>
void pack_implicit_weights(const T* w, int64_t groups, int64_t outs, int64_t reds, int64_t taps,
                           int64_t group, int64_t out_stride, int64_t red_stride, T* packed,
                           int threads) {
    constexpr int64_t block = 16;
    const int64_t slivers = ceil_div(outs, NR), rows = taps * reds;
#pragma omp parallel for num_threads(groups * outs * rows < 65536 ? 1 : threads) schedule(static)
    for (int64_t gs = 0; gs < groups * slivers; ++gs) {
        const int64_t g = gs / slivers, o0 = gs % slivers * NR;
        const int64_t cols = std::min<int64_t>(NR, outs - o0);
        const T* src = w + g * group + o0 * out_stride;
        T* dst = packed + gs * rows * NR;
        for (int64_t r0 = 0; r0 < reds; r0 += block) {
            const int64_t r1 = std::min(reds, r0 + block);
            // In the order of w: output channel major (forward) or summed channel major.
            const bool out_major = out_stride > red_stride;
            for (int64_t a = 0; a < (out_major ? cols : r1 - r0); ++a)
                for (int64_t b = 0; b < (out_major ? r1 - r0 : cols); ++b) {
                    const int64_t o = out_major ? a : b, r = r0 + (out_major ? b : a);
                    const T* so = src + o * out_stride + r * red_stride;
                    for (int64_t t = 0; t < taps; ++t) dst[(t * reds + r) * NR + o] = so[t];
                }
            if (cols < NR)
                for (int64_t t = 0; t < taps; ++t)
                    for (int64_t r = r0; r < r1; ++r)
                        std::fill(dst + (t * reds + r) * NR + cols, dst + (t * reds + r + 1) * NR,
                                  T(0));
        }
    }
}

thread_local ThreadBuffer plan_buffer;

// Images per block: the copy within `budget` bytes, then fewer until the blocks come out
// even over the threads: 32 images of 30 per budget make two blocks of 16, not 30 and 2
// (which left one thread idle most of the time), and 64 of 5 make 16 blocks of 4, not 13.
int64_t plan_images(int64_t n, int64_t groups, int64_t image_bytes, int64_t budget,
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

// out (n, groups * outs, positions of the axes) = the implicit product of src (n, groups *
// reds, h, w) and the packed weights, plus bias, ReLU.
template <class Cfg>
void implicit_product(const ImplicitAxis& ra, const ImplicitAxis& ca, int64_t n, int64_t groups,
                      int64_t reds, int64_t h, int64_t w, const typename Cfg::type* src,
                      int64_t outs, const typename Cfg::type* packed, int64_t kh, int64_t kw,
                      const typename Cfg::type* bias, bool relu, typename Cfg::type* out,
                      ImplicitTilesFn<typename Cfg::type> tiles) {
    using T = typename Cfg::type;
    constexpr int MR = Cfg::MR, NR = Cfg::NR;
    const int threads = num_threads();
    const int64_t slivers = ceil_div(outs, NR), taps = kh * kw;
    const int64_t positions = static_cast<int64_t>(ra.window.size() * ca.window.size());
    const int64_t copy_image = ra.extent * ca.extent * reds;
    std::vector<int64_t> tap_row(kh), tap_col(kw);
    for (int64_t i = 0; i < kh; ++i) tap_row[i] = ra.offset[i] * ca.extent * reds;
    for (int64_t j = 0; j < kw; ++j) tap_col[j] = ca.offset[j] * reds;
    const PositionOrder order = order_positions(ra, ca);

    // Images per block: of the counts that fit, the one whose tiles run the fewest taps per
    // position (runs of positions that fill whole tiles), then the most images.
    // Each block streams all the weights once and its copy once per sliver: a block of
    // kImplicitBytes keeps the copy in L2, a larger one (up to a quarter of the weights, in
    // L3) spares re-reading weights that outgrow the caches.
    const int64_t weight_bytes = groups * slivers * NR * taps * reds * sizeof(T);
    const int64_t budget = std::max(kImplicitBytes, std::min(weight_bytes / kWeightShare, kImplicitMaxBytes));
    const int64_t most = plan_images(n, groups, copy_image * sizeof(T), budget, threads);
    int64_t images = most;
    BlockPlan full;
    double best = 0;
    for (int64_t m = most; m >= 1 && m * 2 >= most; --m) {
        // With threads, only counts whose blocks spread evenly (as plan_images's do).
        const int64_t blocks = ceil_div(n, m) * groups;
        if (m < most && threads > 1 &&
            (blocks % threads != 0 || n % m != 0) && blocks < 4 * threads)
            continue;
        plan_block(order, ra, ca, m, reds, groups * outs * positions, MR, full);
        int64_t steps = 0;
        for (const ImplicitTile& t : full.tiles) steps += tap_count(t.rows, t.cols);
        const double cost = static_cast<double>(steps) / m;
        if (m == most || cost < best * 0.99) best = cost, images = m;
    }
    // Every block but the last has the same plan.
    plan_block(order, ra, ca, images, reds, groups * outs * positions, MR, full);
    const int64_t items = ceil_div(n, images) * groups;
    const bool by_item = threads_take_items(items, threads, false);
    run_items(items, by_item, threads, [&](int64_t item, int) {
        const int64_t n0 = item / groups * images, g = item % groups;
        const int64_t count = std::min(images, n - n0);
        const int inside = by_item ? 1 : threads;
        T* copy = column_buffer.get<T>(count * copy_image);
#pragma omp parallel for num_threads(count > 1 ? inside : 1) schedule(static)
        for (int64_t m = 0; m < count; ++m)
            copy_channels_last(ra, ca, h, w, reds, src + ((n0 + m) * groups + g) * reds * h * w,
                               copy + m * copy_image);
        BlockPlan last;
        if (count < images) plan_block(order, ra, ca, count, reds, groups * outs * positions, MR, last);
        const BlockPlan& plan = count < images ? last : full;
        ImplicitBlock<T> b{copy, plan.window.data(), plan.out.data(), plan.tiles.data(),
                           static_cast<int64_t>(plan.tiles.size()), tap_row.data(), tap_col.data(),
                           kw, taps, reds, packed + g * slivers * taps * reds * NR, outs,
                           positions, out + (n0 * groups + g) * outs * positions,
                           bias ? bias + g * outs : nullptr, relu};
        run_item_tiles(tiles, b, slivers * b.ntiles, inside);
    });
}

template <class Cfg>
void implicit_forward(const ConvShape& s, const typename Cfg::type* x,
                      const typename Cfg::type* w, const typename Cfg::type* bias,
                      typename Cfg::type* y, bool relu, ImplicitTilesFn<typename Cfg::type> tiles) {
    using T = typename Cfg::type;
    const Dims d(s);
    T* packed = weight_buffer.get<T>(s.groups * ceil_div(d.kg, Cfg::NR) * Cfg::NR * d.rows);
    pack_implicit_weights<Cfg::NR>(w, s.groups, d.kg, d.cg, d.taps, d.kg * d.rows, d.rows,
                                   d.taps, packed, num_threads());
    implicit_product<Cfg>(forward_axis(s.oh, s.h, s.kh, s.sh, s.ph, s.dh),
                          forward_axis(s.ow, s.w, s.kw, s.sw, s.pw, s.dw), s.n, s.groups, d.cg,
                          s.h, s.w, x, d.kg, packed, s.kh, s.kw, bias, relu, y, tiles);
}

// gx (plus bias per channel when given) of the convolution s, for gy.
template <class Cfg>
void implicit_input_grad(const ConvShape& s, const typename Cfg::type* gy,
                         const typename Cfg::type* w, const typename Cfg::type* bias,
                         typename Cfg::type* gx, ImplicitTilesFn<typename Cfg::type> tiles) {
    using T = typename Cfg::type;
    const Dims d(s);
    T* packed = weight_buffer.get<T>(s.groups * ceil_div(d.cg, Cfg::NR) * Cfg::NR * d.kg * d.taps);
    pack_implicit_weights<Cfg::NR>(w, s.groups, d.cg, d.kg, d.taps, d.kg * d.rows, d.taps,
                                   d.rows, packed, num_threads());
    implicit_product<Cfg>(input_grad_axis(s.h, s.oh, s.kh, s.sh, s.ph, s.dh),
                          input_grad_axis(s.w, s.ow, s.kw, s.sw, s.pw, s.dw), s.n, s.groups,
                          d.kg, s.oh, s.ow, gy, d.cg, packed, s.kh, s.kw, bias, false, gx, tiles);
}

template <typename T>
void implicit_forward_dispatch(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                               bool relu) {
    with_active_isa<ImplicitPaths<T>>([&](auto cfg, auto tiles) {
        implicit_forward<decltype(cfg)>(s, x, w, bias, y, relu, tiles);
    });
}

template <typename T>
void implicit_input_grad_dispatch(const ConvShape& s, const T* gy, const T* w, const T* bias,
                                  T* gx) {
    with_active_isa<ImplicitPaths<T>>([&](auto cfg, auto tiles) {
        implicit_input_grad<decltype(cfg)>(s, gy, w, bias, gx, tiles);
    });
}

// Whether the implicit path takes the forward (input_grad false) or the input gradient of
// the convolution s, with `copy_bytes` per image of channels-last copy. Measured (1 thread,
// AVX-512, float32, ms, implicit vs the path that had it before):
//  - stride 1, small images, where the direct kernels' wide grid wastes what the tiles do not:
//    4x4 512ch 17.3 vs 30.6 forward, 18.1 vs 32.5 input gradient; 8x8 256ch 18.6 vs 24.2;
//    14x14 256ch 7.7 vs 8.3; 16x16 128ch 20.3 vs 20.9; at 32x32 64ch direct wins, 10.4 vs 11.6;
//    but a 1x1 goes direct (DenseNet N32, 1t: 16x16 384->128 forward 3.6 vs 5.3, input
//    gradient 3.6 vs 5.4; 8x8 1024->512 forward 9.8 vs 12.2), except the input gradient
//    below 16x16 (8x8 512->1024: 11.5 vs 12.0, 2t 6.0 vs 7.3, the flipped weights built and
//    packed on one thread);
//    with fewer than 16 channels per tap the reductions are too short (3->64: 5.6 vs 1.7);
//  - strided windows that overlap (3x3/2, the 7x7/2 stem 12.2 vs 15.3) in both directions,
//    and the input gradients of up to 16x16 images in any case (3x3/2 on 8x8 11 vs 33, 1x1/2
//    1.8 vs 4.2, U-Net's 2x2/2 transposed 4x4->8x8 7.6 vs 15.9); but im2col + GEMM keeps the
//    forward of 2x2/2 (5.9 vs 7.8: four taps make a short reduction per tile) and 1x1/2 (even).
// An image whose copy outgrows kImplicitMaxBytes stays on the paths with bounded buffers.
constexpr int64_t kImplicitPositions = 256;
constexpr int64_t kImplicitOverlapPositions = 1024;

bool takes_implicit(const ConvShape& s, bool input_grad, int64_t copy_bytes) {
    const Dims d(s);
    const int64_t reds = input_grad ? d.kg : d.cg, positions = input_grad ? d.hw : d.p;
    if (copy_bytes > kImplicitMaxBytes) return false;
    if (s.sh == 1 && s.sw == 1) {
        if (d.taps == 1 && (!input_grad || positions >= kImplicitPositions)) return false;
        return positions <= kImplicitPositions && reds >= 16;
    }
    const bool overlap = (s.kh - 1) * s.dh + 1 > s.sh || (s.kw - 1) * s.dw + 1 > s.sw;
    if (reds * d.taps < 16) return false;
    if (overlap) return positions <= kImplicitOverlapPositions;
    return input_grad && positions <= kImplicitPositions;
}

// ---- forward ------------------------------------------------------------------------------

thread_local ThreadBuffer output_buffer;

// Positions [p0, p1) of images [n0, n1), group g. With several images their columns sit side
// by side (ld = images * P) and the product goes through a buffer to each image's slice.
template <typename T>
void forward_tile(const ConvShape& s, const Dims& d, const T* x, const T* w, const T* bias, T* y,
                  bool relu, const Tiling::Item& it, int threads) {
    const int64_t images = it.n1 - it.n0, width = it.p1 - it.p0, ld = images * width;
    T* cols = column_buffer.get<T>(d.rows * ld);
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

template <typename T>
void forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu) {
    const Dims d(s);
    if (s.n == 0 || s.k == 0 || d.p == 0) return;
    const int64_t copy = ((s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1) *
                         ((s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1) * d.cg * sizeof(T);
    if (takes_implicit(s, false, copy))
        return implicit_forward_dispatch(s, x, w, bias, y, relu);
    if (takes_direct<T>(s)) return direct_forward_dispatch(s, x, w, bias, y, relu);
    const int threads = num_threads();
    const Tiling t = plan_tiles(s.n, s.groups, d.p, d.rows, sizeof(T), threads, true);
    run_items(t.items, t.by_item, threads, [&](int64_t item, int) {
        forward_tile(s, d, x, w, bias, y, relu, t(item, s.n, s.groups, d.p),
                     t.by_item ? 1 : threads);
    });
}

// ---- weight gradient ----------------------------------------------------------------------

// acc (K x CRS, like w) += the item's share of the weight gradient. Several images: their
// gy slices are copied side by side, as their columns are.
template <typename T>
void weight_grad_tile(const ConvShape& s, const Dims& d, const T* gy, const T* x, T* acc,
                      const Tiling::Item& it, int threads) {
    const int64_t images = it.n1 - it.n0, width = it.p1 - it.p0, ld = images * width;
    T* cols = column_buffer.get<T>(d.rows * ld);
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

template <typename T>
void weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw) {
    const Dims d(s);
    const int64_t size = s.k * d.rows;
    if (s.n > 0 && d.p > 0 && size > 0 && takes_direct_weight_grad<T>(s))
        return direct_weight_grad_dispatch(s, gy, x, gw);
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

// ---- bias gradient ------------------------------------------------------------------------

template <typename T>
T sum_of(const T* v, int64_t count) {
    T acc[8] = {};  // eight chains: vectorisable, and the order is fixed
    int64_t i = 0;
    for (; i + 8 <= count; i += 8)
        for (int l = 0; l < 8; ++l) acc[l] += v[i + l];
    T total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < count; ++i) total += v[i];
    return total;
}

template <typename T>
void bias_grad(const ConvShape& s, const T* gy, T* gb) {
    const int64_t p = s.oh * s.ow;
    const int threads = s.n * s.k * p < 65536 ? 1 : num_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t k = 0; k < s.k; ++k) {
        T total = T(0);
        for (int64_t n = 0; n < s.n; ++n) total += sum_of(gy + (n * s.k + k) * p, p);
        gb[k] = total;
    }
}

// ---- input gradient -----------------------------------------------------------------------

// gx (x's shape in s) = the input gradient for gy, plus bias per channel when given.
template <typename T>
void input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx) {
    const Dims d(s);
    if (s.n == 0 || d.hw == 0 || s.c == 0) return;
    const int64_t copy = ((s.h - 1 + s.ph) / s.sh + (s.kh - 1) * s.dh / s.sh + 1) *
                         ((s.w - 1 + s.pw) / s.sw + (s.kw - 1) * s.dw / s.sw + 1) * d.kg *
                         sizeof(T);
    if (takes_implicit(s, true, copy))
        return implicit_input_grad_dispatch(s, gy, w, bias, gx);
    if (s.sh == 1 && s.sw == 1) {
        // gx[h] = sum over taps i of gy[h + p - i*d] w[i]: the convolution of gy with the
        // taps reversed, in and out channels swapped, and padding d*(k-1) - p.
        std::vector<T> flipped(static_cast<size_t>(s.c) * d.kg * d.taps);
        for (int64_t g = 0; g < s.groups; ++g)
            for (int64_t kl = 0; kl < d.kg; ++kl)
                for (int64_t c = 0; c < d.cg; ++c)
                    for (int64_t tap = 0; tap < d.taps; ++tap)
                        flipped[((g * d.cg + c) * d.kg + kl) * d.taps + (d.taps - 1 - tap)] =
                            w[((g * d.kg + kl) * d.cg + c) * d.taps + tap];
        const ConvShape t{s.n, s.k, s.oh, s.ow, s.c, s.kh, s.kw, s.h, s.w, 1, 1,
                          s.dh * (s.kh - 1) - s.ph, s.dw * (s.kw - 1) - s.pw, s.dh, s.dw,
                          s.groups};
        forward(t, gy, flipped.data(), bias, gx, false);
        return;
    }
    // Stride > 1: dcols = W[g]^T @ gy[n, g] per tile, scattered into gx. Each (image, group)
    // slice of gx is filled by one thread (or by all, split over channels).
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
            T* dcols = column_buffer.get<T>(d.rows * (p1 - p0));
            gemm<T>(d.rows, p1 - p0, d.kg, MatRef<T>{w + g * d.kg * d.rows, 1, d.rows},
                    MatRef<T>{gy + (n * s.k + g * d.kg) * d.p + p0, d.p, 1}, dcols, p1 - p0,
                    Epilogue<T>{});
#pragma omp parallel for num_threads(inside) schedule(static)
            for (int64_t c = 0; c < d.cg; ++c) col2im(s, d, dcols, c, c + 1, p0, p1, gxg);
        }
    });
}

}  // namespace

template <typename T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu) {
    forward(s, x, w, bias, y, relu);
}

template <typename T>
void conv2d_backward(const ConvShape& s, const T* gy, const T* x, const T* w, T* gx, T* gw,
                     T* gb) {
    if (gb) bias_grad(s, gy, gb);
    if (gw) weight_grad(s, gy, x, gw);
    if (gx) {
        if (s.k == 0 || s.oh * s.ow == 0)
            std::fill(gx, gx + s.n * s.c * s.h * s.w, T(0));
        else
            input_grad(s, gy, w, static_cast<const T*>(nullptr), gx);
    }
}

template <typename T>
void conv_transpose2d(const ConvShape& s, const T* in, const T* w, const T* bias, T* out) {
    const int64_t size = s.n * s.c * s.h * s.w;
    if (s.k == 0 || s.oh * s.ow == 0) {
        for (int64_t e = 0; e < size; ++e) out[e] = bias ? bias[e / (s.h * s.w) % s.c] : T(0);
        return;
    }
    input_grad(s, in, w, bias, out);
}

#define PYFAST_CONV_INSTANTIATE(T)                                                            \
    template void conv2d_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, bool); \
    template void conv2d_backward<T>(const ConvShape&, const T*, const T*, const T*, T*, T*,   \
                                     T*);                                                      \
    template void conv_transpose2d<T>(const ConvShape&, const T*, const T*, const T*, T*);
PYFAST_CONV_INSTANTIATE(float)
PYFAST_CONV_INSTANTIATE(double)
#undef PYFAST_CONV_INSTANTIATE

}  // namespace pyfast
