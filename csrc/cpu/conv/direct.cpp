// Direct convolution (stride 1) on the CPU: the forward pass, and the input gradient of a
// stride-1 convolution, which the entry points phrase as a forward one (flipped weights).
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

#include <vector>

#include "cpu/conv/common.h"
#include "cpu/conv/paths.h"

namespace pyfast::cpu_conv {
namespace {

//                              type   vec MR NV
using DirectGenericF32 = TileCfg<float,  16, 4, 2>;  // 4 x 8
using DirectGenericF64 = TileCfg<double, 16, 4, 2>;  // 4 x 4
using DirectAvx2F32    = TileCfg<float,  32, 6, 2>;  // 6 x 16, 12 ymm accumulators
using DirectAvx2F64    = TileCfg<double, 32, 6, 2>;  // 6 x 8
using DirectAvx512F32  = TileCfg<float,  64, 8, 3>;  // 8 x 48, 24 zmm accumulators
using DirectAvx512F64  = TileCfg<double, 64, 8, 3>;  // 8 x 24

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

template <class Cfg>
void forward_on(const ConvShape& s, const typename Cfg::type* x, const typename Cfg::type* w,
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
        const T* xg = x + (n * s.c + g * d.cg) * d.hw;
        const int inside = by_item ? 1 : threads;
        const T* planes = xg + oh0 * s.w;
        int64_t plane = d.hw;
        if (!reads_in_place<T>(s, rows, Cfg::lanes)) {
            T* filled = column_buffer().get<T>(d.cg * in_rows * wp + tail);
            fill_band(s, d, xg, oh0, in_rows, wp, tail, filled,
                      d.cg * in_rows * wp < 16384 ? 1 : inside);
            planes = filled, plane = in_rows * wp;
        }
        DirectBand<T> b{planes, plane, wp,
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
double waste_of(const ConvShape& s) {
    const int64_t positions = s.oh * wide_row(s);
    const int64_t computed = positions / Cfg::NR * Cfg::NR +
                             ceil_div(positions % Cfg::NR, Cfg::lanes) * Cfg::lanes;
    return static_cast<double>(computed) / static_cast<double>(s.oh * s.ow);
}

}  // namespace

template <typename T>
void direct_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu) {
    with_active_isa<DirectPaths<T>>([&](auto cfg, auto tiles) {
        forward_on<decltype(cfg)>(s, x, w, bias, y, relu, tiles);
    });
}

template <typename T>
double direct_waste(const ConvShape& s) {
    return with_active_isa<DirectPaths<T>>(
        [&](auto cfg, auto) { return waste_of<decltype(cfg)>(s); });
}

template void direct_forward<float>(const ConvShape&, const float*, const float*, const float*,
                                    float*, bool);
template void direct_forward<double>(const ConvShape&, const double*, const double*,
                                     const double*, double*, bool);
template double direct_waste<float>(const ConvShape&);
template double direct_waste<double>(const ConvShape&);

}  // namespace pyfast::cpu_conv
