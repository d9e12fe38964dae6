// Packed GEMM, BLIS-style: C = act(A @ B + bias), float32 and float64.
//
// Loop nest jc -> pc -> ic -> (jr, ir). For each (jc, pc) the KC x NC panel of B is packed
// into NR-wide column slivers that stay in L2/L3; for each ic the MC x KC block of A is
// packed into MR-tall row slivers that stay in L2; the MR x NR micro-kernel then streams one
// A sliver and one B sliver from L1 and keeps the whole C tile in vector registers for the
// KC-long inner product. Every thread helps pack, then takes a contiguous run of micro-tiles
// (ordered jr-major, so the A block is shared and the B panel is split between threads).
//
// One micro-kernel source serves every ISA: it is written with GCC vector extensions and
// instantiated inside functions marked target("avx2,fma") or target("avx512f"), so the same
// C++ becomes ymm or zmm FMA code, picked at run time from cpuid. Packed panels are padded
// with zeros, so an edge tile (fewer than MR rows or NR columns left) runs the same kernel
// and stores through a small buffer: an odd size costs one tile copy, not a slow path.
// Bias and ReLU are applied as the tile leaves registers after the last K block.

#include "cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/checks.h"
#include "common/runtime.h"
#include "common/thread_buffer.h"

namespace pyfast {
namespace {

using std::int64_t;
using std::ptrdiff_t;

// Register blocking for one (type, ISA): the MR x NR micro-tile (TileCfg, cpu/gemm.h). It is
// fixed by the register file; the cache blocking (MC, KC, NC) is not: it is derived from the
// caches of the machine at first use (cache_blocks below).
//                        type    vec  MR NV
using GenericF32 = TileCfg<float,  16, 4, 2>;   // SSE2 baseline, 4x8
using GenericF64 = TileCfg<double, 16, 4, 2>;   // 4x4
using Avx2F32    = TileCfg<float,  32, 6, 2>;   // 6x16, 12 ymm accumulators
using Avx2F64    = TileCfg<double, 32, 6, 2>;   // 6x8
using Avx512F32  = TileCfg<float,  64, 12, 2>;  // 12x32, 24 zmm accumulators
using Avx512F64  = TileCfg<double, 64, 12, 2>;  // 12x16

// Cache blocking from the data caches one core sees (cpu_caches(): cpuid leaf 4 / 0x8000001D):
//   KC: one micro-kernel call streams a KC x NR sliver of B (reused for every A sliver, so it
//       must stay in L1) and an MR x KC sliver of A; together they about fill L1d:
//       KC = L1d / ((MR + NR) * sizeof(T)), to the nearest multiple of 64, in [64, 1024].
//   MC: the packed MC x KC block of A is re-read for every B sliver, so it stays in L2, in
//       3/4 of it (the rest holds the B sliver and C tiles passing through); taller blocks
//       also mean fewer pack-and-barrier rounds, which multi-threaded runs on a busy machine
//       feel most: MC = 3/4 L2 / (KC * sizeof(T)), down to a multiple of MR, in [MR, 1020].
//   NC: the packed KC x NC panel of B is re-read for every A block, from L3: half of one
//       core's share of it (L3 / CPUs sharing it), down to a multiple of NR, in [4 NR, 4096]
//       (without an L3, the L2 as a whole).
// This gives the KC that measurement had chosen where the constants were tuned: 256 / 192
// for the AVX-512 float / double paths on a Zen 5 (48K L1d) and 384 for the AVX2 float path
// on 32K L1d; on a Zen 4 (32K L1d) the AVX-512 KC drops to 192 (the B sliver alone filled L1
// at 256). On a Zen 3 (32K L1d, 512K L2) the AVX2 float path gets MC 252, KC 384, NC 4096
// against the 240, 384, 3072 tuned before; a shorter block (MC 138, A in 3/8 of L2) measured
// level at one thread and slower at two on a loaded machine (benchmarks/bench_gemm.py).
// PYFAST_GEMM_BLOCKS="MC,KC,NC" (read at the first GEMM) or set_gemm_blocks() overrides all
// three for every configuration (A/B timing, tests); each is still rounded to the micro-tile
// and clamped as above.
struct CacheBlocks {
    int64_t mc, kc, nc;
};

int64_t round_down_clamp(int64_t v, int64_t quantum, int64_t lo, int64_t hi) {
    return std::max(lo, std::min(hi, v / quantum * quantum));
}

template <class Cfg>
CacheBlocks rounded(CacheBlocks b) {
    constexpr int64_t MR = Cfg::MR, NR = Cfg::NR;
    return {round_down_clamp(b.mc, MR, MR, 1020 / MR * MR), round_down_clamp(b.kc, 32, 64, 1024),
            round_down_clamp(b.nc, NR, 4 * NR, 4096 / NR * NR)};
}

template <class Cfg>
CacheBlocks derive_cache_blocks() {
    using T = typename Cfg::type;
    constexpr int64_t MR = Cfg::MR, NR = Cfg::NR, S = sizeof(T);
    const CpuCaches& c = cpu_caches();
    CacheBlocks b;
    b.kc = round_down_clamp(c.l1d / ((MR + NR) * S) + 32, 64, 64, 1024);  // nearest 64
    b.mc = c.l2 * 3 / 4 / (b.kc * S);
    const int64_t l3_share = c.l3 > 0 ? c.l3 / std::max(1, c.l3_sharing) / 2 : c.l2;
    b.nc = l3_share / (b.kc * S);
    return rounded<Cfg>(b);
}

// The forced blocks (0: none), from the environment once, then from set_gemm_blocks.
std::atomic<int64_t> g_forced[3] = {{0}, {0}, {0}};

void read_forced_from_env() {
    static const bool once = [] {
        long long mc = 0, kc = 0, nc = 0;
        const char* env = std::getenv("PYFAST_GEMM_BLOCKS");
        if (env && *env && std::sscanf(env, "%lld,%lld,%lld", &mc, &kc, &nc) == 3 && mc > 0 &&
            kc > 0 && nc > 0)
            set_gemm_blocks(mc, kc, nc);
        return true;
    }();
    (void)once;
}

template <class Cfg>
CacheBlocks cache_blocks() {
    static const CacheBlocks derived = derive_cache_blocks<Cfg>();
    read_forced_from_env();
    const int64_t kc = g_forced[1].load(std::memory_order_relaxed);
    if (kc == 0) return derived;
    return rounded<Cfg>({g_forced[0].load(std::memory_order_relaxed), kc,
                         g_forced[2].load(std::memory_order_relaxed)});
}

// One (pc, ic) step of the loop nest, as seen by the micro-tiles.
template <typename T>
struct Block {
    const T* pa;        // packed A block: ceil(mc / MR) slivers of MR x kc
    const T* pb;        // packed B panel: ceil(nc / NR) slivers of kc x NR
    int64_t mc, nc, kc;
    T* c;               // C(ic, jc)
    ptrdiff_t ldc;
    bool load_c;        // add to what C holds (a later K block, or accumulate)
    bool finish;        // last K block: apply bias and relu
    const T* bias;      // already offset to row ic or column jc
    bool bias_per_row, relu;
};

template <typename V, typename T>
PYFAST_INLINE V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}

template <typename V, typename T>
PYFAST_INLINE void store(T* p, V v) {
    std::memcpy(p, &v, sizeof(V));
}

// MR x NR tile of C (rows x cols of it valid) from one A sliver and one B sliver.
template <class Cfg>
PYFAST_INLINE void micro_kernel(int64_t kc, const typename Cfg::type* __restrict pa,
                                const typename Cfg::type* __restrict pb,
                                const Block<typename Cfg::type>& blk, int64_t row, int64_t col,
                                int rows, int cols) {
    using T = typename Cfg::type;
    typedef T V __attribute__((vector_size(Cfg::vec_bytes)));
    constexpr int MR = Cfg::MR, NV = Cfg::NV, NR = Cfg::NR, L = Cfg::lanes;

    // The C tile is read (later K blocks) or written at the end: start fetching it now.
    T* c = blk.c + row * blk.ldc + col;
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
        __builtin_prefetch(c + i * blk.ldc, 1);
        __builtin_prefetch(c + i * blk.ldc + NR - 1, 1);
    }

    V acc[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = V{};

#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; ++p) {
        V b[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) b[j] = load<V>(pb + j * L);
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) {
            const T ai = pa[i];
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) acc[i][j] += b[j] * ai;
        }
        pa += MR;
        pb += NR;
    }

    // Edge tiles go through a buffer, then the same epilogue runs element by element.
    const V zero = V{};
    if (rows == MR && cols == NR) {
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) {
            T* ci = c + i * blk.ldc;
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) {
                V v = acc[i][j];
                if (blk.load_c) v += load<V>(ci + j * L);
                if (blk.finish) {
                    if (blk.bias) v += blk.bias_per_row ? V{} + blk.bias[row + i]
                                                        : load<V>(blk.bias + col + j * L);
                    if (blk.relu) v = v < zero ? zero : v;  // NaN passes, as torch.relu
                }
                store(ci + j * L, v);
            }
        }
        return;
    }
    alignas(64) T tile[MR * NR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) store(tile + i * NR + j * L, acc[i][j]);
    for (int i = 0; i < rows; ++i) {
        T* ci = c + i * blk.ldc;
        for (int j = 0; j < cols; ++j) {
            T v = tile[i * NR + j];
            if (blk.load_c) v += ci[j];
            if (blk.finish) {
                if (blk.bias) v += blk.bias_per_row ? blk.bias[row + i] : blk.bias[col + j];
                if (blk.relu) v = v < T(0) ? T(0) : v;
            }
            ci[j] = v;
        }
    }
}

// Micro-tiles [t0, t1) of a block, numbered jr-major.
template <class Cfg>
PYFAST_INLINE void run_tiles(const Block<typename Cfg::type>& blk, int64_t t0, int64_t t1) {
    constexpr int MR = Cfg::MR, NR = Cfg::NR;
    const int64_t n_ir = (blk.mc + MR - 1) / MR;
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t jr = t / n_ir, ir = t % n_ir;
        const int64_t row = ir * MR, col = jr * NR;
        micro_kernel<Cfg>(blk.kc, blk.pa + ir * MR * blk.kc, blk.pb + jr * NR * blk.kc, blk,
                          row, col, static_cast<int>(std::min<int64_t>(MR, blk.mc - row)),
                          static_cast<int>(std::min<int64_t>(NR, blk.nc - col)));
    }
}

template <typename T>
using TilesFn = void (*)(const Block<T>&, int64_t, int64_t);

// tiles_generic_f32 ... tiles_avx512_f64 and Paths<float>/<double> (common/runtime.h).
PYFAST_ISA_TILE_PATHS(Paths, Block, run_tiles, tiles, )

// kc x cols of B (cols <= NR) into one sliver: dest[p * NR + j], zero-padded to NR columns.
template <int NR, typename T>
void pack_b_sliver(MatRef<T> b, int64_t kc, int64_t cols, T* __restrict dest) {
    if (b.cs == 1 && cols == NR) {
        for (int64_t p = 0; p < kc; ++p) std::memcpy(dest + p * NR, b.p + p * b.rs, NR * sizeof(T));
        return;
    }
    if (cols < NR)
        for (int64_t p = 0; p < kc; ++p) std::fill(dest + p * NR + cols, dest + (p + 1) * NR, T(0));
    if (b.rs == 1) {  // column-major B (trans_b): read each column contiguously
        for (int64_t j = 0; j < cols; ++j)
            for (int64_t p = 0; p < kc; ++p) dest[p * NR + j] = b.p[j * b.cs + p];
    } else {
        for (int64_t p = 0; p < kc; ++p)
            for (int64_t j = 0; j < cols; ++j) dest[p * NR + j] = b.at(p, j);
    }
}

// rows x kc of A (rows <= MR) into one sliver: dest[p * MR + i], zero-padded to MR rows.
template <int MR, typename T>
void pack_a_sliver(MatRef<T> a, int64_t kc, int64_t rows, T* __restrict dest) {
    if (a.rs == 1 && rows == MR) {  // column-major A (trans_a): each column is a sliver row
        for (int64_t p = 0; p < kc; ++p) std::memcpy(dest + p * MR, a.p + p * a.cs, MR * sizeof(T));
        return;
    }
    if (rows < MR)
        for (int64_t p = 0; p < kc; ++p) std::fill(dest + p * MR + rows, dest + (p + 1) * MR, T(0));
    if (a.cs == 1) {
        for (int64_t i = 0; i < rows; ++i)
            for (int64_t p = 0; p < kc; ++p) dest[p * MR + i] = a.p[i * a.rs + p];
    } else {
        for (int64_t p = 0; p < kc; ++p)
            for (int64_t i = 0; i < rows; ++i) dest[p * MR + i] = a.at(i, p);
    }
}

thread_local ThreadBuffer scratch_a, scratch_b;

// Size of the blocks that split `extent` into as few pieces of at most `limit` as possible,
// all equal up to a multiple of `quantum` (limit is a multiple of quantum).
int64_t balanced_block(int64_t extent, int64_t limit, int64_t quantum) {
    const int64_t pieces = (extent + limit - 1) / limit;
    const int64_t size = (extent + pieces - 1) / pieces;
    return std::min(limit, (size + quantum - 1) / quantum * quantum);
}

template <class Cfg>
void gemm_driver(int64_t m, int64_t n, int64_t k, MatRef<typename Cfg::type> a,
                 MatRef<typename Cfg::type> b, typename Cfg::type* c, ptrdiff_t ldc,
                 const Epilogue<typename Cfg::type>& ep, TilesFn<typename Cfg::type> tiles) {
    using T = typename Cfg::type;
    constexpr int MR = Cfg::MR, NR = Cfg::NR;
    const CacheBlocks blocks = cache_blocks<Cfg>();
    const int64_t MC = blocks.mc, KC = blocks.kc, NC = blocks.nc;
    // Equal blocks rather than full ones plus a sliver: a 16-row or 16-deep tail block would
    // cost a whole pack-and-barrier round (or a whole C reload) for a few percent of the work.
    const int64_t kc_max = balanced_block(k, KC, 1);
    const int64_t mc_max = balanced_block(m, MC, MR);
    const int64_t nc_max = std::min<int64_t>(NC, (n + NR - 1) / NR * NR);
    T* pa = scratch_a.get<T>(mc_max * kc_max);
    T* pb = scratch_b.get<T>(nc_max * kc_max);

    // Below a few MFLOP a parallel region costs more than it saves.
    int threads = num_threads();
    if (2.0 * m * n * k < 4e6) threads = 1;
    if (omp_in_parallel()) threads = 1;  // no nested team: torch's libgomp allows them

#pragma omp parallel num_threads(threads)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        for (int64_t jc = 0; jc < n; jc += NC) {
            const int64_t nc = std::min<int64_t>(NC, n - jc);
            const int64_t n_jr = (nc + NR - 1) / NR;
            for (int64_t pc = 0; pc < k; pc += kc_max) {
                const int64_t kc = std::min<int64_t>(kc_max, k - pc);
#pragma omp for schedule(static)
                for (int64_t jr = 0; jr < n_jr; ++jr) {
                    MatRef<T> sub{b.p + pc * b.rs + (jc + jr * NR) * b.cs, b.rs, b.cs};
                    pack_b_sliver<NR>(sub, kc, std::min<int64_t>(NR, nc - jr * NR), pb + jr * NR * kc);
                }
                for (int64_t ic = 0; ic < m; ic += mc_max) {
                    const int64_t mc = std::min<int64_t>(mc_max, m - ic);
                    const int64_t n_ir = (mc + MR - 1) / MR;
#pragma omp for schedule(static)
                    for (int64_t ir = 0; ir < n_ir; ++ir) {
                        MatRef<T> sub{a.p + (ic + ir * MR) * a.rs + pc * a.cs, a.rs, a.cs};
                        pack_a_sliver<MR>(sub, kc, std::min<int64_t>(MR, mc - ir * MR), pa + ir * MR * kc);
                    }
                    const Block<T> blk{pa, pb, mc, nc, kc, c + ic * ldc + jc, ldc,
                                       pc > 0 || ep.accumulate, pc + kc == k,
                                       ep.bias ? ep.bias + (ep.bias_per_row ? ic : jc) : nullptr,
                                       ep.bias_per_row, ep.relu};
                    const int64_t count = n_ir * n_jr;
                    tiles(blk, count * tid / nth, count * (tid + 1) / nth);
#pragma omp barrier
                }
            }
        }
    }
}

// A product with nothing to sum over (k == 0) is the epilogue alone.
template <typename T>
void epilogue_only(int64_t m, int64_t n, T* c, ptrdiff_t ldc, const Epilogue<T>& ep) {
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            T v = ep.accumulate ? c[i * ldc + j] : T(0);
            if (ep.bias) v += ep.bias[ep.bias_per_row ? i : j];
            if (ep.relu) v = v < T(0) ? T(0) : v;
            c[i * ldc + j] = v;
        }
}

}  // namespace

template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, MatRef<T> a, MatRef<T> b, T* c, ptrdiff_t ldc,
          const Epilogue<T>& ep) {
    if (m == 0 || n == 0) return;
    if (k == 0) return epilogue_only(m, n, c, ldc, ep);
    with_active_isa<Paths<T>>([&](auto cfg, auto tiles) {
        gemm_driver<decltype(cfg)>(m, n, k, a, b, c, ldc, ep, tiles);
    });
}

template <typename T>
GemmBlocking gemm_blocking() {
    return with_active_isa<Paths<T>>([](auto cfg, auto) {
        using Cfg = decltype(cfg);
        const CacheBlocks b = cache_blocks<Cfg>();
        return GemmBlocking{Cfg::MR, Cfg::NR, b.mc, b.kc, b.nc};
    });
}

void set_gemm_blocks(int64_t mc, int64_t kc, int64_t nc) {
    PYFAST_CHECK((mc > 0 && kc > 0 && nc > 0) || (mc == 0 && kc == 0 && nc == 0),
                 "set_gemm_blocks: mc, kc and nc must all be positive (or all 0 for the derived "
                 "blocks), got ", mc, ", ", kc, ", ", nc);
    g_forced[0].store(mc), g_forced[2].store(nc), g_forced[1].store(kc);
}

template GemmBlocking gemm_blocking<float>();
template GemmBlocking gemm_blocking<double>();

template void gemm<float>(int64_t, int64_t, int64_t, MatRef<float>, MatRef<float>, float*,
                          ptrdiff_t, const Epilogue<float>&);
template void gemm<double>(int64_t, int64_t, int64_t, MatRef<double>, MatRef<double>, double*,
                           ptrdiff_t, const Epilogue<double>&);

}  // namespace pyfast
