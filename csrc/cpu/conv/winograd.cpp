// Winograd F(4x4, 3x3) for stride-1 3x3 convolutions (NCHW, float32 and float64).
//
// The output is cut into 4x4 tiles; tile t reads a 6x6 patch d of each input channel (rows
// 4*ty - ph .. +5, zeros outside the image). With the transforms of F(4x4, 3x3) (points 0,
// +-1, +-2, infinity), for every channel c and output channel k
//   U[k][c] = G g[k][c] G^T   (6x6, the 3x3 kernel transformed, once per call)
//   V[c][t] = B^T d[c][t] B   (6x6, the input patch transformed)
//   y[k][t] = A^T (sum_c U[k][c] .* V[c][t]) A   (4x4)
// and the sum over c is, for each of the 36 elements e of the 6x6 transform domain, one
// matrix product M[e] (K x tiles) = U[e] (K x C) @ V[e] (C x tiles): 36 GEMMs on the
// project's packed GEMM (gemm.h), which does 36 multiply-adds per tile, channel and output
// channel where the direct convolution does 16 * 9 = 144.
//
// Blocks of tiles: each block transforms its inputs into V (36 x C x ld), runs the 36
// products into M (36 x K x ld) and transforms M into the output. ld (tiles per block) comes
// from the cache sizes (see block_tiles). Threads take whole blocks (the GEMM runs on its
// caller's thread inside a parallel region); with fewer blocks than threads
// the blocks run in turn with the transforms split over channels and the GEMM parallel.
//
// The transforms are vectorised across L tiles at once (L lanes of the ISA's vector): the
// 6x6 patches of L tiles are gathered into a 36 x L buffer, transformed with vector adds and
// multiplies, and stored as L consecutive columns of V. The output transform reads 36 vectors
// of M and scatters 16 outputs per lane, with bias and ReLU. One source serves every ISA,
// instantiated per target like the GEMM's micro-kernel (PYFAST_ISA_TILE_PATHS).
//
// Error: the input transform sums patch values with weights up to 5 and the output
// transform the 36 products with weights up to 8, so the rounding error exceeds a direct
// sum's: measured against float64 (float32, standard normal data), the largest error of a
// layer is 3.5-15 eps times the layer's largest sum |x| |w| from 17 to 1024 channels, up to
// 37 with one (the direct path: 0.5-1.7 eps); the weight gradient's, 1.2-14 eps times the
// largest sum |gy| |x|. tests/kernels/test_winograd.py bounds both at 64 eps times that, per
// layer. float64 callers want the exact-order sums, so the planner (plan.h) sends only float32
// here.
//
// F(4x4, 3x3) rather than F(6x6, 3x3): F(6x6) would do 64 / 36 = 1.78 multiply-adds per
// output where F(4x4) does 2.25 (1.27x fewer), but its transforms have weights up to ~100
// (an error some ten times larger again), and ResNet-18's 4x4 and 8x8 images would mostly
// be padding to it: a 4x4 image takes one 8x8 patch for 16 outputs, an 8x8 image four (64
// products each) where F(4x4) takes four 6x6 ones. Not measured: only F(4x4) is written.
//
// The weight gradient is the same factorisation read backwards. y[k][t] = A^T M[k][t] A is
// linear in M, and M[e] = U[e] @ V[e], so with the 4x4 tile of the output gradient gy:
//   dM[k][t] = A gy[k][t] A^T            (6x6, gy's tile transformed, zeros past the image)
//   dU[e] (K x C) = sum over tiles of dM[e] (K x tiles) @ V[e]^T (tiles x C)
//   gw[k][c] = G^T dU[k][c] G            (3x3, once per call)
// the same 36 products with the tiles as their reduction, against the direct weight
// gradient's 144 multiply-adds per tile, channel pair and output channel. The blocks of tiles
// run in turn, each accumulating into dU, the threads splitting the transforms by channel
// and the products by element e (a private dU per thread would take 36 x K x C each: 38 MB
// at 512 channels). Its error is stated and bounded in tests/kernels/test_winograd.py.

#include "cpu/conv/common.h"
#include "cpu/conv/paths.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/runtime.h"
#include "common/thread_buffer.h"
#include "cpu/gemm.h"

namespace pyfast::cpu_conv {
namespace {

using std::int64_t;

constexpr int kOut = 4;     // output tile side
constexpr int kIn = 6;      // input patch side, and side of the transform domain
constexpr int kElems = 36;  // elements of the transform domain: one GEMM each
// Blocks hold a multiple of this many tiles: the widest vector of lanes (16 float32 on
// AVX-512) and the widest GEMM micro-tile (32 columns), so a block needs no edge cases.
constexpr int64_t kBlockQuantum = 32;

template <typename T, int VecBytes>
struct WinoCfg {
    using type = T;
    static constexpr int vec_bytes = VecBytes;
    static constexpr int lanes = VecBytes / static_cast<int>(sizeof(T));
};
using WinoGenericF32 = WinoCfg<float, 16>;
using WinoGenericF64 = WinoCfg<double, 16>;
using WinoAvx2F32 = WinoCfg<float, 32>;
using WinoAvx2F64 = WinoCfg<double, 32>;
using WinoAvx512F32 = WinoCfg<float, 64>;
using WinoAvx512F64 = WinoCfg<double, 64>;

// Where one tile of a block lies: its patch's (or output's) first row and column, the
// offset of image n's channel 0, and whether it is whole inside the image.
struct TilePos {
    int64_t in_base, out_base;  // offsets of element (row0, col0) of image n, channel 0
    int32_t row0, col0;         // first input row and column (may be negative)
    int32_t oy0, ox0;           // first output row and column
    int8_t r_lo, r_hi, b_lo, b_hi;  // the patch's rows and columns inside the image
    bool in_inside, out_inside, valid;
};

// One block of tiles, as the transform functions see it (the convolution is the forward
// one: x (n, c, h, w) -> y (n, k, oh, ow)).
template <typename T>
struct WinoJob {
    int64_t c, k, h, w, oh, ow;
    const T* x;
    const T* bias;
    T* y;
    bool relu;
    const TilePos* pos;  // ld entries; those past the block's tiles are not valid
    int64_t ld;          // tiles per block, padded: the row stride of V and M
    int64_t ves, mes;    // element strides of V and M (element_stride)
    T* v;                // V block: v[e * ves + ch * ld + tile]
    T* m;                // M block: m[e * mes + kk * ld + tile] (dM for the weight gradient)
    const T* gy;         // the weight gradient's output gradient (n, k, oh, ow), else null
};

// The distance between the 36 matrices of one transform, for `size` elements each: a little
// more than size, so that the 36 rows a transform writes (or reads) at once do not all sit
// at the same offset modulo 4 KB, which would put them in one set of the L1 (eight ways)
// and evict each line before it is whole.
template <typename T>
int64_t element_stride(int64_t size) {
    constexpr int64_t line = 64 / sizeof(T);
    int64_t stride = (size + line - 1) / line * line + line;
    if (stride * static_cast<int64_t>(sizeof(T)) % 4096 == 0) stride += line;
    return stride;
}

// ---- the three transforms (one axis each; applied to rows, then to columns) ----------------

// d (6) -> B^T d (6).
template <typename V>
PYFAST_INLINE void input_1d(const V& d0, const V& d1, const V& d2, const V& d3, const V& d4,
                            const V& d5, V* t) {
    const V a = d4 - d2 * 4, b = d3 - d1 * 4;
    const V c = d4 - d2, e = (d3 - d1) * 2;
    t[0] = d0 * 4 - d2 * 5 + d4;
    t[1] = a + b;
    t[2] = a - b;
    t[3] = c + e;
    t[4] = c - e;
    t[5] = d1 * 4 - d3 * 5 + d5;
}

// m (6) -> A^T m (4).
template <typename V>
PYFAST_INLINE void output_1d(const V& m0, const V& m1, const V& m2, const V& m3, const V& m4,
                             const V& m5, V* o) {
    const V s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
    o[0] = m0 + s12 + s34;
    o[1] = d12 + d34 * 2;
    o[2] = s12 + s34 * 4;
    o[3] = d12 + d34 * 8 + m5;
}

// o (4) -> A o (6): the transpose of output_1d, for the gradient of the sums it took.
template <typename V>
PYFAST_INLINE void output_grad_1d(const V& o0, const V& o1, const V& o2, const V& o3, V* m) {
    const V s02 = o0 + o2, s13 = o1 + o3;
    const V a = o0 + o2 * 4, b = o1 * 2 + o3 * 8;
    m[0] = o0;
    m[1] = s02 + s13;
    m[2] = s02 - s13;
    m[3] = a + b;
    m[4] = a - b;
    m[5] = o3;
}

// g (3) -> G g (6) for elements S (vectors of them, or scalars): multiplications by the
// reciprocals, not divisions, which would cost more than the rest of the transform.
template <typename S, typename V>
PYFAST_INLINE void kernel_1d(const V& g0, const V& g1, const V& g2, V* u) {
    constexpr S sixth = S(1) / 6, twelfth = S(1) / 12, twentyfourth = S(1) / 24;
    const V a = (g0 + g2) * sixth, b = g1 * sixth;
    const V c = g0 * twentyfourth + g2 * sixth, e = g1 * twelfth;
    u[0] = g0 * S(0.25);
    u[1] = -a - b;
    u[2] = -a + b;
    u[3] = c + e;
    u[4] = c - e;
    u[5] = g2;
}

// z (6, stride apart) -> G^T z (3): the transpose of kernel_1d.
template <typename S, typename V>
PYFAST_INLINE void kernel_grad_1d(const V* z, int stride, V* g) {
    constexpr S sixth = S(1) / 6, twelfth = S(1) / 12, twentyfourth = S(1) / 24;
    const V s12 = z[stride] + z[2 * stride], d21 = z[2 * stride] - z[stride];
    const V s34 = z[3 * stride] + z[4 * stride], d34 = z[3 * stride] - z[4 * stride];
    g[0] = z[0] * S(0.25) - s12 * sixth + s34 * twentyfourth;
    g[1] = d21 * sixth + d34 * twelfth;
    g[2] = (s34 - s12) * sixth + z[5 * stride];
}

// ---- input transform: channels [c0, c1) of a block into V -----------------------------------

template <class Cfg>
PYFAST_INLINE void input_tiles(const WinoJob<typename Cfg::type>& j, int64_t c0, int64_t c1) {
    using T = typename Cfg::type;
    typedef T V __attribute__((vector_size(Cfg::vec_bytes)));
    constexpr int L = Cfg::lanes;
    alignas(64) T buf[kElems * L];
    const int64_t plane = j.h * j.w;
    for (int64_t ch = c0; ch < c1; ++ch) {
        const T* xc = j.x + ch * plane;
        for (int64_t g0 = 0; g0 < j.ld; g0 += L) {
            for (int l = 0; l < L; ++l) {
                const TilePos& p = j.pos[g0 + l];
                if (p.in_inside) {
                    const T* src = xc + p.in_base;
#pragma GCC unroll 6
                    for (int r = 0; r < kIn; ++r)
#pragma GCC unroll 6
                        for (int b = 0; b < kIn; ++b) buf[(r * kIn + b) * L + l] = src[r * j.w + b];
                } else {  // zeros, then the part of the patch inside the image
#pragma GCC unroll 36
                    for (int e = 0; e < kElems; ++e) buf[e * L + l] = T(0);
                    const T* src = xc + p.in_base;
                    for (int r = p.r_lo; r < p.r_hi; ++r)
                        for (int b = p.b_lo; b < p.b_hi; ++b)
                            buf[(r * kIn + b) * L + l] = src[r * j.w + b];
                }
            }
            V d[kElems];
#pragma GCC unroll 36
            for (int e = 0; e < kElems; ++e) std::memcpy(&d[e], buf + e * L, sizeof(V));
            V t[kElems];  // rows transformed along their columns: t[r][jj]
#pragma GCC unroll 6
            for (int r = 0; r < kIn; ++r) {
                const V* dr = d + r * kIn;
                input_1d(dr[0], dr[1], dr[2], dr[3], dr[4], dr[5], t + r * kIn);
            }
#pragma GCC unroll 6
            for (int jj = 0; jj < kIn; ++jj) {
                V col[kIn];
                input_1d(t[jj], t[kIn + jj], t[2 * kIn + jj], t[3 * kIn + jj], t[4 * kIn + jj],
                         t[5 * kIn + jj], col);
#pragma GCC unroll 6
                for (int i = 0; i < kIn; ++i)
                    std::memcpy(j.v + (i * kIn + jj) * j.ves + ch * j.ld + g0, &col[i],
                                sizeof(V));
            }
        }
    }
}

// ---- output transform: output channels [k0, k1) of a block from M --------------------------

template <class Cfg>
PYFAST_INLINE void output_tiles(const WinoJob<typename Cfg::type>& j, int64_t k0, int64_t k1) {
    using T = typename Cfg::type;
    typedef T V __attribute__((vector_size(Cfg::vec_bytes)));
    constexpr int L = Cfg::lanes;
    alignas(64) T buf[kOut * kOut * L];
    const int64_t plane = j.oh * j.ow;
    for (int64_t kk = k0; kk < k1; ++kk) {
        T* yk = j.y + kk * plane;
        const T bias = j.bias ? j.bias[kk] : T(0);
        for (int64_t g0 = 0; g0 < j.ld; g0 += L) {
            V m[kElems];
#pragma GCC unroll 36
            for (int e = 0; e < kElems; ++e)
                std::memcpy(&m[e], j.m + e * j.mes + kk * j.ld + g0, sizeof(V));
            V t[kOut * kIn];  // t[p][jj]: the columns of m transformed along their rows
#pragma GCC unroll 6
            for (int jj = 0; jj < kIn; ++jj) {
                V o[kOut];
                output_1d(m[jj], m[kIn + jj], m[2 * kIn + jj], m[3 * kIn + jj], m[4 * kIn + jj],
                          m[5 * kIn + jj], o);
#pragma GCC unroll 4
                for (int p = 0; p < kOut; ++p) t[p * kIn + jj] = o[p];
            }
            const V zero = V{};
#pragma GCC unroll 4
            for (int p = 0; p < kOut; ++p) {
                const V* tp = t + p * kIn;
                V o[kOut];
                output_1d(tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], o);
#pragma GCC unroll 4
                for (int q = 0; q < kOut; ++q) {
                    V v = o[q] + bias;
                    if (j.relu) v = v < zero ? zero : v;  // NaN passes, as torch.relu
                    std::memcpy(buf + (p * kOut + q) * L, &v, sizeof(V));
                }
            }
            for (int l = 0; l < L; ++l) {
                const TilePos& tp = j.pos[g0 + l];
                if (!tp.valid) continue;
                T* dst = yk + tp.out_base;
                if (tp.out_inside) {
#pragma GCC unroll 4
                    for (int p = 0; p < kOut; ++p)
#pragma GCC unroll 4
                        for (int q = 0; q < kOut; ++q) dst[p * j.ow + q] = buf[(p * kOut + q) * L + l];
                } else {
                    const int rows = static_cast<int>(std::min<int64_t>(kOut, j.oh - tp.oy0));
                    const int cols = static_cast<int>(std::min<int64_t>(kOut, j.ow - tp.ox0));
                    for (int p = 0; p < rows; ++p)
                        for (int q = 0; q < cols; ++q) dst[p * j.ow + q] = buf[(p * kOut + q) * L + l];
                }
            }
        }
    }
}

// ---- output-gradient transform: output channels [k0, k1) of a block into dM ----------------

template <class Cfg>
PYFAST_INLINE void output_grad_tiles(const WinoJob<typename Cfg::type>& j, int64_t k0,
                                     int64_t k1) {
    using T = typename Cfg::type;
    typedef T V __attribute__((vector_size(Cfg::vec_bytes)));
    constexpr int L = Cfg::lanes;
    alignas(64) T buf[kOut * kOut * L];
    const int64_t plane = j.oh * j.ow;
    for (int64_t kk = k0; kk < k1; ++kk) {
        const T* gk = j.gy + kk * plane;
        for (int64_t g0 = 0; g0 < j.ld; g0 += L) {
            for (int l = 0; l < L; ++l) {  // gy's tile, zeros past the output's edge
                const TilePos& tp = j.pos[g0 + l];
                const T* src = tp.valid ? gk + tp.out_base : gk;
                if (tp.valid && tp.out_inside) {
#pragma GCC unroll 4
                    for (int p = 0; p < kOut; ++p)
#pragma GCC unroll 4
                        for (int q = 0; q < kOut; ++q) buf[(p * kOut + q) * L + l] = src[p * j.ow + q];
                    continue;
                }
#pragma GCC unroll 16
                for (int e = 0; e < kOut * kOut; ++e) buf[e * L + l] = T(0);
                if (!tp.valid) continue;
                const int rows = static_cast<int>(std::min<int64_t>(kOut, j.oh - tp.oy0));
                const int cols = static_cast<int>(std::min<int64_t>(kOut, j.ow - tp.ox0));
                for (int p = 0; p < rows; ++p)
                    for (int q = 0; q < cols; ++q) buf[(p * kOut + q) * L + l] = src[p * j.ow + q];
            }
            V o[kOut * kOut];
#pragma GCC unroll 16
            for (int e = 0; e < kOut * kOut; ++e) std::memcpy(&o[e], buf + e * L, sizeof(V));
            V t[kOut * kIn];  // t[p][jj]: the rows of the tile transformed along their columns
#pragma GCC unroll 4
            for (int p = 0; p < kOut; ++p) {
                const V* op = o + p * kOut;
                output_grad_1d(op[0], op[1], op[2], op[3], t + p * kIn);
            }
#pragma GCC unroll 6
            for (int jj = 0; jj < kIn; ++jj) {
                V col[kIn];
                output_grad_1d(t[jj], t[kIn + jj], t[2 * kIn + jj], t[3 * kIn + jj], col);
#pragma GCC unroll 6
                for (int i = 0; i < kIn; ++i)
                    std::memcpy(j.m + (i * kIn + jj) * j.mes + kk * j.ld + g0, &col[i],
                                sizeof(V));
            }
        }
    }
}

// input_generic_f32 ... and InputPaths<T>; likewise OutputPaths<T> and OutputGradPaths<T>.
PYFAST_ISA_TILE_PATHS(InputPaths, WinoJob, input_tiles, input, Wino)
PYFAST_ISA_TILE_PATHS(OutputPaths, WinoJob, output_tiles, output, Wino)
PYFAST_ISA_TILE_PATHS(OutputGradPaths, WinoJob, output_grad_tiles, output_grad, Wino)

// ---- the kernel transform and its inverse for the weight gradient -------------------------
//
// Both work on runs of kRun kernels at a time, one vector of kRun elements per value (GCC
// splits it into the target's registers): the transform on runs of output channels, whose
// 36 transformed values land as 36 contiguous pieces of U; the inverse on runs of input
// channels, whose 9 taps each land in kRun consecutive kernels. Both in double, rounded to T
// once: in float32 the rounding of 1/6, 1/12 and 1/24 raised the worst error of a
// one-channel layer from 37 to 50 eps. (On a 512 x 512 layer the scalar transform took 38%
// of a forward call of 64 images: 45 -> 25 ms vectorised.)
constexpr int64_t kRun = 16;

template <typename T>
struct KernelJob {
    int64_t c, k;  // the forward convolution's channels and output channels
    const T* w;    // its kernels (k, c, 3, 3), or flipped: those of (c, k, 3, 3) taps reversed
    bool flipped;
    T* u;          // u[e * ues + ch * k + kk] = (G w[kk][ch] G^T)[e]
    int64_t ues;
};

// Channels [c0, c1) of U, all output channels of each in runs of kRun: each channel's 36
// rows of U are written whole and in order (writing the runs of one output channel block
// across all channels instead scattered 64-byte pieces over the 38 MB of a 512 x 512 U,
// each line written back and read again 32 times: 1.6x slower), while the kernels read
// for one channel (a cache line per output channel) stay in the L2 for the next.
template <class Cfg>
PYFAST_INLINE void kernel_runs(const KernelJob<typename Cfg::type>& j, int64_t c0, int64_t c1) {
    using T = typename Cfg::type;
    typedef T VT __attribute__((vector_size(kRun * sizeof(T))));
    typedef double V __attribute__((vector_size(kRun * sizeof(double))));
    alignas(64) T buf[9 * kRun];
    for (int64_t ch = c0; ch < c1; ++ch) {
        for (int64_t k0 = 0; k0 < j.k; k0 += kRun) {
            const int64_t count = std::min(kRun, j.k - k0);
            if (count < kRun) std::fill(buf, buf + 9 * kRun, T(0));  // lanes past the last
            if (j.flipped) {
                const T* src = j.w + (ch * j.k + k0) * 9;  // count kernels in a row
                for (int64_t l = 0; l < count; ++l)
#pragma GCC unroll 9
                    for (int tap = 0; tap < 9; ++tap) buf[tap * kRun + l] = src[l * 9 + 8 - tap];
            } else {
                const T* src = j.w + (k0 * j.c + ch) * 9;  // count kernels c * 9 apart
                for (int64_t l = 0; l < count; ++l)
#pragma GCC unroll 9
                    for (int tap = 0; tap < 9; ++tap) buf[tap * kRun + l] = src[l * j.c * 9 + tap];
            }
            V g[9], rows[3 * kIn];  // rows[i][jj] = G g[i][.]
#pragma GCC unroll 9
            for (int tap = 0; tap < 9; ++tap) {
                VT t;
                std::memcpy(&t, buf + tap * kRun, sizeof(VT));
                g[tap] = __builtin_convertvector(t, V);
            }
#pragma GCC unroll 3
            for (int i = 0; i < 3; ++i)
                kernel_1d<double>(g[i * 3], g[i * 3 + 1], g[i * 3 + 2], rows + i * kIn);
#pragma GCC unroll 6
            for (int jj = 0; jj < kIn; ++jj) {
                V out[kIn];
                kernel_1d<double>(rows[jj], rows[kIn + jj], rows[2 * kIn + jj], out);
#pragma GCC unroll 6
                for (int i = 0; i < kIn; ++i) {
                    const VT t = __builtin_convertvector(out[i], VT);
                    T* dst = j.u + (i * kIn + jj) * j.ues + ch * j.k + k0;
                    if (count == kRun)  // a constant size: one vector store, no call
                        std::memcpy(dst, &t, sizeof(VT));
                    else
                        std::memcpy(dst, &t, count * sizeof(T));
                }
            }
        }
    }
}

template <typename T>
struct KernelGradJob {
    int64_t c, k;  // the convolution's channels and output channels
    const T* du;   // du[e * dues + kk * c + ch]: the gradient of U[e][kk][ch]
    int64_t dues;
    T* gw;         // (k, c, 3, 3): G^T dU G
};

// Runs [r0, r1) of gw, run r being output channel r / runs_per_k and kRun input channels.
template <class Cfg>
PYFAST_INLINE void kernel_grad_runs(const KernelGradJob<typename Cfg::type>& j, int64_t r0,
                                    int64_t r1) {
    using T = typename Cfg::type;
    typedef T VT __attribute__((vector_size(kRun * sizeof(T))));
    typedef double V __attribute__((vector_size(kRun * sizeof(double))));
    const int64_t per_k = (j.c + kRun - 1) / kRun;
    alignas(64) T buf[9 * kRun];
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t kk = r / per_k, c0 = r % per_k * kRun, count = std::min(kRun, j.c - c0);
        V z[kElems], rows[kIn * 3], g[3];  // rows[i][b]: the rows of dU along their columns
#pragma GCC unroll 36
        for (int e = 0; e < kElems; ++e) {
            VT t = VT{};
            const T* src = j.du + e * j.dues + kk * j.c + c0;
            if (count == kRun)
                std::memcpy(&t, src, sizeof(VT));
            else
                std::memcpy(&t, src, count * sizeof(T));
            z[e] = __builtin_convertvector(t, V);
        }
#pragma GCC unroll 6
        for (int i = 0; i < kIn; ++i) kernel_grad_1d<double>(z + i * kIn, 1, rows + i * 3);
#pragma GCC unroll 3
        for (int b = 0; b < 3; ++b) {
            kernel_grad_1d<double>(rows + b, 3, g);
#pragma GCC unroll 3
            for (int a = 0; a < 3; ++a) {
                const VT t = __builtin_convertvector(g[a], VT);
                std::memcpy(buf + (a * 3 + b) * kRun, &t, sizeof(VT));
            }
        }
        T* out = j.gw + (kk * j.c + c0) * 9;
        for (int64_t l = 0; l < count; ++l)
            for (int tap = 0; tap < 9; ++tap) out[l * 9 + tap] = buf[tap * kRun + l];
    }
}

PYFAST_ISA_TILE_PATHS(KernelPaths, KernelJob, kernel_runs, kernel, Wino)
PYFAST_ISA_TILE_PATHS(KernelGradPaths, KernelGradJob, kernel_grad_runs, kernel_grad, Wino)

// ---- blocks ---------------------------------------------------------------------------------

// Tiles per block. The GEMM wants wide blocks: each block repacks the 36 transformed
// kernels (36 x K x C) for its products, so fewer, wider blocks pack less; the transforms
// want the block's V (36 x C per tile) and M (36 x K) to stay in cache between the transform
// that writes them and the GEMM that reads them. The L2 is too small for both (64 channels
// in and out take 18 KB per tile), so V and M get half this core's share of the L3. Measured
// (1 thread, AVX2, 512 KB L2, 16 MB L3 share; float32, ResNet-18/U-Net 3x3 layers from 64
// to 256 channels): 32 tiles per block ran 30-40% slower than 64-256, which were level
// within the noise of a loaded host. So: that many tiles, at least 64 and at most 256,
// and no more than it takes to give every thread a block.
int64_t block_tiles(int64_t c, int64_t k, int64_t tiles, int threads, std::size_t elem) {
    const CpuCaches& caches = cpu_caches();
    const int64_t l3_share = caches.l3 / std::max(1, caches.l3_sharing);
    const int64_t per_tile = kElems * (c + k) * static_cast<int64_t>(elem);
    int64_t ld = l3_share / 2 / std::max<int64_t>(per_tile, 1);
    ld = std::max<int64_t>(2 * kBlockQuantum, std::min<int64_t>(8 * kBlockQuantum, ld));
    const int64_t share = (tiles + threads - 1) / threads;
    ld = std::min(ld, std::max<int64_t>(kBlockQuantum, share));
    return (ld + kBlockQuantum - 1) / kBlockQuantum * kBlockQuantum;
}

thread_local ThreadBuffer v_buffer, m_buffer, pos_buffer;

template <typename T>
struct Plan {
    const ConvShape& s;
    int64_t th, tw, per_image, tiles, ld, blocks;
};

// The positions of tiles [t0, t0 + ld) (those past the last tile marked invalid).
template <typename T>
void place_tiles(const Plan<T>& pl, int64_t t0, TilePos* pos) {
    const ConvShape& s = pl.s;
    for (int64_t l = 0; l < pl.ld; ++l) {
        TilePos& p = pos[l];
        const int64_t t = t0 + l;
        p.valid = t < pl.tiles;
        if (!p.valid) {  // an empty patch: zeros, and no output
            p.in_inside = p.out_inside = false;
            p.r_lo = p.r_hi = p.b_lo = p.b_hi = 0;
            p.in_base = p.out_base = 0;
            p.row0 = p.col0 = p.oy0 = p.ox0 = 0;
            continue;
        }
        const int64_t n = t / pl.per_image, r = t % pl.per_image;
        const int64_t oy0 = (r / pl.tw) * kOut, ox0 = (r % pl.tw) * kOut;
        const int64_t row0 = oy0 - s.ph, col0 = ox0 - s.pw;
        p.oy0 = static_cast<int32_t>(oy0), p.ox0 = static_cast<int32_t>(ox0);
        p.row0 = static_cast<int32_t>(row0), p.col0 = static_cast<int32_t>(col0);
        p.in_base = n * s.c * s.h * s.w + row0 * s.w + col0;
        p.out_base = n * s.k * s.oh * s.ow + oy0 * s.ow + ox0;
        p.r_lo = static_cast<int8_t>(clamp(-row0, 0, kIn));
        p.r_hi = static_cast<int8_t>(clamp(s.h - row0, p.r_lo, kIn));
        p.b_lo = static_cast<int8_t>(clamp(-col0, 0, kIn));
        p.b_hi = static_cast<int8_t>(clamp(s.w - col0, p.b_lo, kIn));
        p.in_inside = p.r_lo == 0 && p.r_hi == kIn && p.b_lo == 0 && p.b_hi == kIn;
        p.out_inside = oy0 + kOut <= s.oh && ox0 + kOut <= s.ow;
    }
}

template <typename T>
void run_block(const Plan<T>& pl, const T* x, const T* u, const T* bias, T* y, bool relu,
               int64_t block, int inside) {
    const ConvShape& s = pl.s;
    const int64_t ld = pl.ld;
    const int64_t ves = element_stride<T>(s.c * ld), mes = element_stride<T>(s.k * ld);
    T* v = v_buffer.get<T>(kElems * ves);
    T* m = m_buffer.get<T>(kElems * mes);
    TilePos* pos = pos_buffer.get<TilePos>(ld);
    place_tiles(pl, block * ld, pos);
    const WinoJob<T> job{s.c, s.k, s.h,  s.w, s.oh, s.ow, x, bias, y,
                         relu, pos, ld, ves, mes, v, m,  nullptr};
    run_item_tiles(active_tiles<InputPaths<T>>(), job, s.c, inside);
    for (int e = 0; e < kElems; ++e)
        gemm<T>(s.k, ld, s.c, MatRef<T>{u + e * element_stride<T>(s.c * s.k), 1, s.k},
                MatRef<T>{v + e * ves, ld, 1}, m + e * mes, ld, Epilogue<T>{});
    run_item_tiles(active_tiles<OutputPaths<T>>(), job, s.k, inside);
}

// The forward convolution s (Winograd-shaped) with kernels already transformed into u.
template <typename T>
void run(const ConvShape& s, const T* x, const T* u, const T* bias, T* y, bool relu) {
    const int threads = num_threads();
    const int64_t th = (s.oh + kOut - 1) / kOut, tw = (s.ow + kOut - 1) / kOut;
    const int64_t tiles = s.n * th * tw;
    const int64_t ld = block_tiles(s.c, s.k, tiles, threads, sizeof(T));
    const Plan<T> pl{s, th, tw, th * tw, tiles, ld, (tiles + ld - 1) / ld};
    if (pl.blocks < threads || threads == 1 || omp_in_parallel()) {
        const int inside = omp_in_parallel() ? 1 : threads;
        for (int64_t b = 0; b < pl.blocks; ++b) run_block(pl, x, u, bias, y, relu, b, inside);
        return;
    }
    run_items(pl.blocks, true, threads,
              [&](int64_t b, int) { run_block(pl, x, u, bias, y, relu, b, 1); });
}

thread_local ThreadBuffer kernel_buffer;

// Threads for a kernel transform: one below 4096 kernels (a team costs more than the work).
int kernel_threads(const ConvShape& s) {
    return s.k * s.c < 4096 || omp_in_parallel() ? 1 : num_threads();
}

template <typename T>
void forward_of(const ConvShape& s, const T* x, const T* w, bool flipped, const T* bias, T* y,
                bool relu) {
    if (s.n == 0 || s.k == 0 || s.oh <= 0 || s.ow <= 0) return;
    const int64_t ues = element_stride<T>(s.c * s.k);
    T* u = kernel_buffer.get<T>(kElems * ues);
    run_item_tiles(active_tiles<KernelPaths<T>>(), KernelJob<T>{s.c, s.k, w, flipped, u, ues},
                   s.c, kernel_threads(s));
    run(s, x, u, bias, y, relu);
}

// ---- the weight gradient --------------------------------------------------------------------

// The weight gradient of the forward convolution s (Winograd-shaped, nothing empty).
template <typename T>
void weight_grad_of(const ConvShape& s, const T* gy, const T* x, T* gw) {
    const int threads = omp_in_parallel() ? 1 : num_threads();
    const int64_t th = (s.oh + kOut - 1) / kOut, tw = (s.ow + kOut - 1) / kOut;
    const int64_t tiles = s.n * th * tw;
    const int64_t ld = block_tiles(s.c, s.k, tiles, 1, sizeof(T));  // the team shares a block
    const Plan<T> pl{s, th, tw, th * tw, tiles, ld, (tiles + ld - 1) / ld};
    const int64_t ves = element_stride<T>(s.c * ld), mes = element_stride<T>(s.k * ld);
    const int64_t dues = element_stride<T>(s.k * s.c);
    T* du = kernel_buffer.get<T>(kElems * dues);
    T* v = v_buffer.get<T>(kElems * ves);
    T* m = m_buffer.get<T>(kElems * mes);
    TilePos* pos = pos_buffer.get<TilePos>(ld);
    for (int64_t b = 0; b < pl.blocks; ++b) {
        place_tiles(pl, b * ld, pos);
        const WinoJob<T> job{s.c, s.k, s.h, s.w, s.oh, s.ow, x,  nullptr, nullptr,
                             false, pos, ld,  ves, mes,  v,    m, gy};
        run_item_tiles(active_tiles<InputPaths<T>>(), job, s.c, threads);
        run_item_tiles(active_tiles<OutputGradPaths<T>>(), job, s.k, threads);
        // dU[e] (+)= dM[e] (K x ld) @ V[e]^T (ld x C), one element e per thread at a time.
        const Epilogue<T> ep{b > 0};
        run_items(kElems, threads > 1, threads, [&](int64_t e, int) {
            gemm<T>(s.k, s.c, ld, MatRef<T>{m + e * mes, ld, 1}, MatRef<T>{v + e * ves, 1, ld},
                    du + e * dues, s.c, ep);
        }, /*fixed=*/true);
    }
    run_item_tiles(active_tiles<KernelGradPaths<T>>(), KernelGradJob<T>{s.c, s.k, du, dues, gw},
                   s.k * ((s.c + kRun - 1) / kRun), kernel_threads(s));
}

}  // namespace

bool winograd_fits(const ConvShape& s) {
    return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
           s.groups == 1;
}

template <typename T>
void winograd_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                      bool relu) {
    PYFAST_CHECK(winograd_fits(s), "winograd: needs a 3x3 kernel, stride 1, dilation 1 and "
                 "groups 1");
    if (s.c == 0) {  // an empty sum: bias (and ReLU) alone
        const int64_t plane = s.oh * s.ow;
        for (int64_t n = 0; n < s.n; ++n)
            for (int64_t kk = 0; kk < s.k; ++kk) {
                T v = bias ? bias[kk] : T(0);
                if (relu) v = v < T(0) ? T(0) : v;
                std::fill(y + (n * s.k + kk) * plane, y + (n * s.k + kk + 1) * plane, v);
            }
        return;
    }
    forward_of(s, x, w, false, bias, y, relu);
}

template <typename T>
void winograd_input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx) {
    PYFAST_CHECK(winograd_fits(s), "winograd: needs a 3x3 kernel, stride 1, dilation 1 and "
                 "groups 1");
    const ConvShape t{s.n, s.k, s.oh, s.ow, s.c, 3, 3, s.h, s.w, 1, 1,
                      2 - s.ph, 2 - s.pw, 1, 1, 1};
    if (s.k == 0) {
        const int64_t plane = s.h * s.w;
        for (int64_t n = 0; n < s.n; ++n)
            for (int64_t ch = 0; ch < s.c; ++ch)
                std::fill(gx + (n * s.c + ch) * plane, gx + (n * s.c + ch + 1) * plane,
                          bias ? bias[ch] : T(0));
        return;
    }
    forward_of(t, gy, w, true, bias, gx, false);
}

template <typename T>
void winograd_weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw) {
    PYFAST_CHECK(winograd_fits(s), "winograd: needs a 3x3 kernel, stride 1, dilation 1 and "
                 "groups 1");
    if (s.n == 0 || s.k == 0 || s.c == 0 || s.oh <= 0 || s.ow <= 0) {  // an empty sum
        std::fill(gw, gw + s.k * s.c * 9, T(0));
        return;
    }
    weight_grad_of(s, gy, x, gw);
}

#define PYFAST_WINOGRAD_INSTANTIATE(T)                                                       \
    template void winograd_forward<T>(const ConvShape&, const T*, const T*, const T*, T*,    \
                                      bool);                                                 \
    template void winograd_input_grad<T>(const ConvShape&, const T*, const T*, const T*, T*); \
    template void winograd_weight_grad<T>(const ConvShape&, const T*, const T*, T*);
PYFAST_WINOGRAD_INSTANTIATE(float)
PYFAST_WINOGRAD_INSTANTIATE(double)
#undef PYFAST_WINOGRAD_INSTANTIATE

}  // namespace pyfast::cpu_conv
