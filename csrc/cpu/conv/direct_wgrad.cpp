// Direct weight gradient (stride 1) on the CPU, over the zero-padded planes that the direct
// forward reads (cpu/conv/common.h).
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

#include <vector>

#include "cpu/conv/common.h"
#include "cpu/conv/paths.h"

namespace pyfast::cpu_conv {
namespace {

//                              type   vec  MR NV
using WgradGenericF32 = TileCfg<float,  16, 4, 2>;   // 4 x 8
using WgradGenericF64 = TileCfg<double, 16, 4, 2>;   // 4 x 4
using WgradAvx2F32    = TileCfg<float,  32, 6, 2>;   // 6 x 16, 12 ymm accumulators
using WgradAvx2F64    = TileCfg<double, 32, 6, 2>;   // 6 x 8
using WgradAvx512F32  = TileCfg<float,  64, 12, 2>;  // 12 x 32, 24 zmm accumulators
using WgradAvx512F64  = TileCfg<double, 64, 12, 2>;  // 12 x 16

template <typename T>
struct WgradBand {
    const T* planes;        // as the direct forward's (direct.cpp)
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

// Images of at most this many wide positions go to the weight gradient in blocks of whole
// images, the block's planes and gyT within kWgradBlockBytes.
constexpr int64_t kWgradBlockPositions = 512;
constexpr int64_t kWgradBlockBytes = 2 << 20;

// Rows of the band per chunk of the NCHW gy packing: its stores (chunk positions x NR) stay
// within 16 KB of L1.
constexpr int64_t kPackChunkBytes = 16 << 10;

// gyT of a block of `count` images for output rows [oh0, oh0 + rows) of group g: panel p
// holds channels [p*NR, p*NR + NR) as gyT[q][k], q on the wide grid (rows x wp per image),
// zero in the dropped columns and past kg.
// NCHW gy is read channel by channel along its rows, a chunk of rows at a time, with the next
// channel's run prefetched: each channel's part of the chunk is one contiguous run, and the
// chunk's stores stay in L1. Reading all channels of one row before the next (each channel's
// row is a page away from the next channel's) missed the prefetchers on every line: 45% of a
// 1x1 weight gradient (N32 64->128 32x32, 1 thread, Zen 4) went to that loop; now 25%, and
// the call takes 10.3 ms instead of 20.8 (12.4 without the prefetch).
template <typename T>
void pack_gy_band(const ConvShape& s, const Dims& d, const T* gy, bool channels_last,
                  int64_t n0, int64_t count, int64_t oh0, int64_t rows, int64_t wp, int64_t g,
                  int64_t NR, T* gyt, int threads) {
    const int64_t positions = rows * wp, panel = count * positions * NR;
    const int64_t panels = ceil_div(d.kg, NR);
    if (channels_last) {  // a position's channels are neighbours: runs of NR
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t mr = 0; mr < count * rows; ++mr) {
            const int64_t m = mr / rows, r = mr % rows, q0 = (m * rows + r) * wp;
            for (int64_t p = 0; p < panels; ++p)
                std::fill(gyt + p * panel + q0 * NR, gyt + p * panel + (q0 + wp) * NR, T(0));
            const T* row = gy + (((n0 + m) * s.oh + oh0 + r) * s.ow) * s.k + g * d.kg;
            for (int64_t c = 0; c < s.ow; ++c)
                for (int64_t k0 = 0; k0 < d.kg; k0 += NR)
                    std::memcpy(gyt + k0 / NR * panel + (q0 + c) * NR, row + c * s.k + k0,
                                std::min<int64_t>(NR, d.kg - k0) * sizeof(T));
        }
        return;
    }
    const int64_t chunk = clamp(kPackChunkBytes / (wp * NR * int64_t(sizeof(T))), 1, rows);
    const int64_t chunks = ceil_div(rows, chunk);
    const bool dropped = wp > s.ow;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t item = 0; item < count * panels * chunks; ++item) {
        const int64_t m = item / (panels * chunks), p = item / chunks % panels;
        const int64_t r0 = item % chunks * chunk, r1 = std::min(rows, r0 + chunk);
        T* out = gyt + p * panel + (m * rows + r0) * wp * NR;
        const int64_t width = std::min<int64_t>(NR, d.kg - p * NR);
        if (dropped || width < NR) std::fill(out, out + (r1 - r0) * wp * NR, T(0));
        const T* src = gy + ((n0 + m) * s.k + g * d.kg + p * NR) * d.p + (oh0 + r0) * s.ow;
        const int64_t run = (r1 - r0) * s.ow, line = 64 / int64_t(sizeof(T));
        for (int64_t kk = 0; kk < width; ++kk, src += d.p) {
            // The next channel's run is a page or more away: ask for it now.
            if (kk + 1 < width)
                for (int64_t e = 0; e < run; e += line) __builtin_prefetch(src + d.p + e, 0, 3);
            T* dst = out + kk;
            for (int64_t r = 0; r < r1 - r0; ++r)
                for (int64_t c = 0; c < s.ow; ++c) dst[(r * wp + c) * NR] = src[r * s.ow + c];
        }
    }
}

// gW (K x cg*taps) of a stride-1 convolution; the planes as direct_forward builds them.
template <class Cfg>
void weight_grad_on(const ConvShape& s, const typename Cfg::type* gy,
                    const typename Cfg::type* x, typename Cfg::type* gw, bool channels_last,
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
        const int64_t positions = rows * wp;
        const int inside = by_item ? 1 : threads;
        // The last row's reads run (kw-1)*dw past an image's planes: into the next image's,
        // or zeros after the last (a dropped position multiplies them by gy = 0, which must
        // not meet uninitialised memory: 0 * NaN).
        const int64_t tail = (s.kw - 1) * s.dw;
        const T* planes = x + (n0 * s.c + g * d.cg) * d.hw + oh0 * s.w;
        int64_t plane = d.hw, image = s.c * d.hw;
        if (channels_last || !reads_in_place<T>(s, rows, 1)) {
            plane = in_rows * wp, image = d.cg * plane;
            T* filled = column_buffer().get<T>(count * image + tail);
            for (int64_t m = 0; m < count; ++m) {  // in order: each fill's tail is the next's
                const int team = image < 16384 ? 1 : inside;
                if (channels_last)
                    fill_band_nhwc(s, d, x + (n0 + m) * s.c * d.hw + g * d.cg, oh0, in_rows,
                                   wp, tail, filled + m * image, team);
                else
                    fill_band(s, d, x + ((n0 + m) * s.c + g * d.cg) * d.hw, oh0, in_rows, wp,
                              tail, filled + m * image, team);
            }
            planes = filled;
        }
        // gyT[q][k]: gy of the band on the wide grid, zero in the dropped columns, image
        // after image, in panels of NR channels so that a tile reads its gy contiguously
        // (rows of kg elements a multiple of 4 KB apart all fell into one L1 set).
        T* gyt = gy_buffer.get<T>(count * positions * ldg);
        const int64_t panel = count * positions * NR;
        pack_gy_band(s, d, gy, channels_last, n0, count, oh0, rows, wp, g, NR, gyt,
                     count * positions * ldg < 16384 ? 1 : inside);
        WgradBand<T> b{planes, plane, offset.data(), d.rows, d.taps, gyt, panel,
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

}  // namespace

template <typename T>
void direct_weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw, bool channels_last) {
    with_active_isa<WgradPaths<T>>([&](auto cfg, auto tiles) {
        weight_grad_on<decltype(cfg)>(s, gy, x, gw, channels_last, tiles);
    });
}

template void direct_weight_grad<float>(const ConvShape&, const float*, const float*, float*,
                                        bool);
template void direct_weight_grad<double>(const ConvShape&, const double*, const double*,
                                         double*, bool);

}  // namespace pyfast::cpu_conv
