// Implicit GEMM on channels-last copies (small images, strides) on the CPU: the forward pass
// and the input gradient.
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


#include <algorithm>
#include <array>
#include <numeric>
#include <vector>

#include "cpu/conv/common.h"
#include "cpu/conv/paths.h"

namespace pyfast::cpu_conv {
namespace {

constexpr int64_t kImplicitChunkBytes = 20 << 10;
// Channels-last copy of a block of images.
constexpr int64_t kImplicitBytes = 384 << 10;
constexpr int64_t kWeightShare = 4;

// The register tile: MR positions x NR output channels.
//                                 type   vec MR  NV
using ImplicitGenericF32 = TileCfg<float,  16, 4, 2>;   // 4 x 8
using ImplicitGenericF64 = TileCfg<double, 16, 4, 2>;   // 4 x 4
using ImplicitAvx2F32    = TileCfg<float,  32, 6, 2>;   // 6 x 16, 12 ymm accumulators
using ImplicitAvx2F64    = TileCfg<double, 32, 6, 2>;   // 6 x 8
using ImplicitAvx512F32  = TileCfg<float,  64, 12, 2>;  // 12 x 32, 24 zmm accumulators
using ImplicitAvx512F64  = TileCfg<double, 64, 12, 2>;  // 12 x 16

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
    int64_t kg, ldy;             // output channels; elements between them in y (1: NHWC)
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
    if (b.ldy == 1) {  // channels-last: a position's channels are neighbours
        for (int i = 0; i < rows; ++i) {
            T* yi = b.y + out[i] + first;
            for (int k = 0; k < cols; ++k) {
                const T v = tile[i][k] + (b.bias ? b.bias[first + k] : T(0));
                yi[k] = b.relu && v < T(0) ? T(0) : v;
            }
        }
        return;
    }
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

// The copy of one image's channels [c0, c0 + cg) of src in channels-last order over the rows
// and columns of the two axes. src points at channel c0 of the image: NCHW (channels x h x w)
// when pixel is 0, else NHWC with `pixel` channels per position (then a row is a few runs of
// cg channels, copied as they are).
template <typename T>
void copy_channels_last(const ImplicitAxis& ra, const ImplicitAxis& ca, int64_t h, int64_t w,
                        int64_t cg, int64_t pixel, const T* src, T* dst) {
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
        if (pixel) {
            const T* s = src + (ih * w + lo - ca.pad) * pixel;
            for (int64_t col = 0; col < hi - lo; ++col)
                std::memcpy(dst + (lo + col) * cg, s + col * pixel, cg * sizeof(T));
            continue;
        }
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

// out_image: elements of the output per image; step: between neighbouring positions (1 for
// NCHW, the image's channels for NHWC).
void plan_block(const PositionOrder& o, const ImplicitAxis& ra, const ImplicitAxis& ca,
                int64_t images, int64_t cg, int64_t out_image, int64_t step, int mr,
                BlockPlan& b) {
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
                b.out.push_back(m * out_image + (row * ow + col) * step);
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

// out (n, groups * outs, positions of the axes) = the implicit product of src (n, groups *
// reds, h, w) and the packed weights, plus bias, ReLU. channels_last: src and out are NHWC
// (the copy then takes runs of channels, and the tiles write each position's channels
// side by side), else NCHW.
template <class Cfg>
void implicit_product(const ImplicitAxis& ra, const ImplicitAxis& ca, int64_t n, int64_t groups,
                      int64_t reds, int64_t h, int64_t w, const typename Cfg::type* src,
                      int64_t outs, const typename Cfg::type* packed, int64_t kh, int64_t kw,
                      const typename Cfg::type* bias, bool relu, typename Cfg::type* out,
                      bool channels_last, ImplicitTilesFn<typename Cfg::type> tiles) {
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
    const int64_t out_image = groups * outs * positions;
    const int64_t step = channels_last ? groups * outs : 1;  // between positions in out

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
        plan_block(order, ra, ca, m, reds, out_image, step, MR, full);
        int64_t steps = 0;
        for (const ImplicitTile& t : full.tiles) steps += tap_count(t.rows, t.cols);
        const double cost = static_cast<double>(steps) / m;
        if (m == most || cost < best * 0.99) best = cost, images = m;
    }
    // Every block but the last has the same plan.
    plan_block(order, ra, ca, images, reds, out_image, step, MR, full);
    const int64_t items = ceil_div(n, images) * groups;
    const bool by_item = threads_take_items(items, threads, false);
    run_items(items, by_item, threads, [&](int64_t item, int) {
        const int64_t n0 = item / groups * images, g = item % groups;
        const int64_t count = std::min(images, n - n0);
        const int inside = by_item ? 1 : threads;
        T* copy = column_buffer().get<T>(count * copy_image);
        const int64_t pixel = channels_last ? groups * reds : 0;
        const T* first = src + n0 * groups * reds * h * w + g * reds * (channels_last ? 1 : h * w);
#pragma omp parallel for num_threads(count > 1 ? inside : 1) schedule(static)
        for (int64_t m = 0; m < count; ++m)
            copy_channels_last(ra, ca, h, w, reds, pixel, first + m * groups * reds * h * w,
                               copy + m * copy_image);
        BlockPlan last;
        if (count < images) plan_block(order, ra, ca, count, reds, out_image, step, MR, last);
        const BlockPlan& plan = count < images ? last : full;
        ImplicitBlock<T> b{copy, plan.window.data(), plan.out.data(), plan.tiles.data(),
                           static_cast<int64_t>(plan.tiles.size()), tap_row.data(), tap_col.data(),
                           kw, taps, reds, packed + g * slivers * taps * reds * NR, outs,
                           channels_last ? 1 : positions,
                           out + n0 * out_image + g * outs * (channels_last ? 1 : positions),
                           bias ? bias + g * outs : nullptr, relu};
        run_item_tiles(tiles, b, slivers * b.ntiles, inside);
    });
}

template <class Cfg>
void forward_on(const ConvShape& s, const typename Cfg::type* x, const typename Cfg::type* w,
                const typename Cfg::type* bias, typename Cfg::type* y, bool relu,
                bool channels_last, ImplicitTilesFn<typename Cfg::type> tiles) {
    using T = typename Cfg::type;
    const Dims d(s);
    T* packed = weight_buffer.get<T>(s.groups * ceil_div(d.kg, Cfg::NR) * Cfg::NR * d.rows);
    pack_implicit_weights<Cfg::NR>(w, s.groups, d.kg, d.cg, d.taps, d.kg * d.rows, d.rows,
                                   d.taps, packed, num_threads());
    implicit_product<Cfg>(forward_axis(s.oh, s.h, s.kh, s.sh, s.ph, s.dh),
                          forward_axis(s.ow, s.w, s.kw, s.sw, s.pw, s.dw), s.n, s.groups, d.cg,
                          s.h, s.w, x, d.kg, packed, s.kh, s.kw, bias, relu, y, channels_last,
                          tiles);
}

// gx (plus bias per channel when given) of the convolution s, for gy.
template <class Cfg>
void input_grad_on(const ConvShape& s, const typename Cfg::type* gy,
                   const typename Cfg::type* w, const typename Cfg::type* bias,
                   typename Cfg::type* gx, bool channels_last,
                   ImplicitTilesFn<typename Cfg::type> tiles) {
    using T = typename Cfg::type;
    const Dims d(s);
    T* packed = weight_buffer.get<T>(s.groups * ceil_div(d.cg, Cfg::NR) * Cfg::NR * d.kg * d.taps);
    pack_implicit_weights<Cfg::NR>(w, s.groups, d.cg, d.kg, d.taps, d.kg * d.rows, d.taps,
                                   d.rows, packed, num_threads());
    implicit_product<Cfg>(input_grad_axis(s.h, s.oh, s.kh, s.sh, s.ph, s.dh),
                          input_grad_axis(s.w, s.ow, s.kw, s.sw, s.pw, s.dw), s.n, s.groups,
                          d.kg, s.oh, s.ow, gy, d.cg, packed, s.kh, s.kw, bias, false, gx,
                          channels_last, tiles);
}

}  // namespace

template <typename T>
void implicit_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                      bool relu, bool channels_last) {
    with_active_isa<ImplicitPaths<T>>([&](auto cfg, auto tiles) {
        forward_on<decltype(cfg)>(s, x, w, bias, y, relu, channels_last, tiles);
    });
}

template <typename T>
void implicit_input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx,
                         bool channels_last) {
    with_active_isa<ImplicitPaths<T>>([&](auto cfg, auto tiles) {
        input_grad_on<decltype(cfg)>(s, gy, w, bias, gx, channels_last, tiles);
    });
}

#define PYFAST_IMPLICIT_INSTANTIATE(T)                                                  \
    template void implicit_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, \
                                      bool, bool);                                       \
    template void implicit_input_grad<T>(const ConvShape&, const T*, const T*, const T*, T*, \
                                         bool);
PYFAST_IMPLICIT_INSTANTIATE(float)
PYFAST_IMPLICIT_INSTANTIATE(double)
#undef PYFAST_IMPLICIT_INSTANTIATE

}  // namespace pyfast::cpu_conv
