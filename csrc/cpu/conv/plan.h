// Which algorithm runs each pass of a convolution on the CPU: the one function choose_path
// and the rules it applies, with the measurements behind them (so that the path-vs-path
// timings can be rerun: PYFAST_CONV_ALGO or algo= forces a path, and pf.ops.last_conv_path()
// says which ran; see pyfast/ops/conv.py). In short:
//
// Small images (16x16 and below) with 16+ channels, and every strided layer: implicit GEMM on
// a channels-last copy of a block of images (implicit_gemm.cpp), positions broadcast and
// output channels in vectors, so nothing is computed for the padding or dropped; the input
// gradient of a strided layer is the same kernel over its stride phases. Measured against the
// two paths below (1 thread, AVX-512, float32, ResNet-18 at batch 64): 4x4 512ch forward
// 30.6 -> 17.3 ms, 8x8 256ch 24.2 -> 18.6, the input gradient of 3x3/2 on 8x8 33 -> 11.
//
// Stride 1 (every 3x3 and 1x1 layer of ResNet and U-Net, and the input gradient of those):
// direct kernels on zero-padded copies of the input ("planes", direct.cpp and
// direct_wgrad.cpp). The forward micro-kernel reads its B vectors straight from the planes,
// so nothing is packed per output position; the weight gradient broadcasts from them.
// Measured against im2col + the packed GEMM (1 thread, AVX-512, float32, 3x3 N32 C64 32x32):
// forward 143 -> 234 GFLOP/s, weight gradient 121 -> 213; the GEMM lost to the packing of a
// column matrix that only 64 output channels share.
//
// What neither takes (strided layers with few channels per tap, the weight gradient of a
// strided layer): im2col + the packed GEMM (im2col.cpp). A stride-1 input gradient that the
// implicit path does not take is the forward convolution of gy with the flipped, transposed
// weights and padding d*(k-1)-p (flipped_input_grad), which then takes its own path.
//
// Winograd F(4x4, 3x3) (winograd.cpp) comes before both for float32 3x3 stride-1 layers
// with enough channels and tiles, forward and input gradient (takes_winograd) and weight
// gradient (takes_winograd_weight_grad, NCHW: channels-last layers keep the direct one,
// which reads them as they are).
//
// Adding a path: a value in ConvAlgo (cpu/conv.h) with its name in conv_algo_name and
// conv_algo_from_name (conv.cpp) and in CONV_PATHS (pyfast/ops/conv.py), the kernel in its own
// file declared in paths.h, a `takes_` rule here called from choose_path before the rules it
// beats (with the measurement that puts it there), its case in cannot_take, and its call in
// conv.cpp's forward / input_grad / weight_grad.
#pragma once

#include <string>
#include <type_traits>

#include "cpu/conv.h"
#include "cpu/conv/common.h"
#include "cpu/conv/paths.h"

namespace pyfast::cpu_conv {

// The stride-1 input gradient as a forward convolution: gx[h] = sum over taps i of
// gy[h + p - i*d] w[i], the convolution of gy with the taps reversed, in and out channels
// swapped, and padding d*(k-1) - p (negative where p exceeds the kernel's reach: a crop).
inline ConvShape flipped_input_grad(const ConvShape& s) {
    return {s.n, s.k, s.oh, s.ow, s.c, s.kh, s.kw, s.h, s.w, 1, 1, s.dh * (s.kh - 1) - s.ph,
            s.dw * (s.kw - 1) - s.pw, s.dh, s.dw, s.groups};
}

// Stride 1, no crop, the usual output extent (a transposed convolution's output_padding can
// add rows the formula does not have): what the direct kernels' wide grid computes.
inline bool direct_fits(const ConvShape& s) {
    return s.sh == 1 && s.sw == 1 && s.ph >= 0 && s.pw >= 0 &&
           s.oh == s.h + 2 * s.ph - s.dh * (s.kh - 1) && s.ow == s.w + 2 * s.pw - s.dw * (s.kw - 1);
}

// Whether the direct path takes this convolution: where it fits (direct_fits). A 1x1 one goes
// there too: reading x without packing it beat the GEMM (which reads x as its B matrix) by 8%
// forward and 20% in the weight gradient (256->64 at 56x56).
// Small images go to im2col with several images per GEMM instead: at 4x4 the wide grid
// computes 2 positions per output and the weight gradient's reductions are 20 long.
// Measured (3x3, 1 thread, AVX-512 float32, forward / weight gradient GFLOP/s, direct vs
// im2col): 4x4 125/115 vs 172/175, 7x7 175/130 vs 168/189, 8x8 208/192 vs 176/170,
// 14x14 234/212 vs 177/183; the cut is at 1.3 positions per output, or fewer than 64 wide
// positions per image.
// An unpadded 1x1 layer whose planes the direct kernels read in place (reads_in_place in
// common.h) pays no copy, and takes the direct forward on small images too. Measured (1 / 2
// threads, AVX-512 Zen 4, ms median of 15, direct vs im2col (its path before) vs implicit):
// N32 512->128 4x4 0.71/0.40 vs 1.22/0.60 vs 0.89/0.46, N32 992->128 4x4 1.31/0.74 vs
// 2.30/1.15 vs 1.68/0.89, N64 256->512 4x4 2.93/1.72 vs 3.12/1.63 vs 3.14/1.80.
template <typename T>
bool direct_in_place(const ConvShape& s) {
    return reads_in_place<T>(s, s.oh, 64 / static_cast<int>(sizeof(T)));
}

template <typename T>
bool takes_direct(const ConvShape& s) {
    if (!direct_fits(s)) return false;
    return direct_waste<T>(s) <= 1.3 && (s.oh * wide_row(s) >= 64 || direct_in_place<T>(s));
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
    if (!direct_fits(s)) return false;
    return s.oh * wide_row(s) <= 1.3 * s.oh * s.ow && s.k / s.groups < 1024;
}

// Bytes of one image's channels-last copy on the implicit path: of x for the forward, of gy
// for the input gradient (whose rows and columns the stride phases share).
template <typename T>
int64_t implicit_copy_bytes(const ConvShape& s, bool input_grad) {
    const Dims d(s);
    if (!input_grad)
        return ((s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1) *
               ((s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1) * d.cg * int64_t(sizeof(T));
    return ((s.h - 1 + s.ph) / s.sh + (s.kh - 1) * s.dh / s.sh + 1) *
           ((s.w - 1 + s.pw) / s.sw + (s.kw - 1) * s.dw / s.sw + 1) * d.kg * int64_t(sizeof(T));
}

template <typename T>
bool implicit_fits(const ConvShape& s, bool input_grad) {
    return implicit_copy_bytes<T>(s, input_grad) <= kImplicitMaxBytes;
}

// Whether the implicit path takes the forward (input_grad false) or the input gradient of
// the convolution s. Measured (1 thread, AVX-512, float32, ms, implicit vs the path that had
// it before):
//  - stride 1, small images, where the direct kernels' wide grid wastes what the tiles do not:
//    4x4 512ch 17.3 vs 30.6 forward, 18.1 vs 32.5 input gradient; 8x8 256ch 18.6 vs 24.2;
//    14x14 256ch 7.7 vs 8.3; 16x16 128ch 20.3 vs 20.9; at 32x32 64ch direct wins, 10.4 vs 11.6;
//    but a 1x1 goes direct (DenseNet N32, 1t: 16x16 384->128 forward 3.6 vs 5.3, input
//    gradient 3.6 vs 5.4; 8x8 1024->512 forward 9.8 vs 12.2), except the input gradient
//    below 16x16 (8x8 512->1024: 11.5 vs 12.0, 2t 6.0 vs 7.3, the flipped weights built and
//    packed on one thread), unless one_by_one_grad_goes_direct;
//    with fewer than 16 channels per tap the reductions are too short (3->64: 5.6 vs 1.7);
//  - strided windows that overlap (3x3/2, the 7x7/2 stem 12.2 vs 15.3) in both directions,
//    and the input gradients of up to 16x16 images in any case (3x3/2 on 8x8 11 vs 33, 1x1/2
//    1.8 vs 4.2, U-Net's 2x2/2 transposed 4x4->8x8 7.6 vs 15.9); but im2col + GEMM keeps the
//    forward of 2x2/2 (5.9 vs 7.8: four taps make a short reduction per tile) and 1x1/2 (even).
// An image whose copy outgrows kImplicitMaxBytes stays on the paths with bounded buffers.
constexpr int64_t kImplicitPositions = 256;

// The input gradient of an unpadded 1x1 layer on 8x8 images or larger, with 2048+ positions
// in the batch, goes to the direct forward of flipped_input_grad, which reads gy in place.
// Measured (1 / 2 threads, AVX-512 Zen 4, ms median of 15, direct vs implicit): N32 512->128
// 8x8 3.26/1.77 vs 3.72/1.63, N32 992->128 8x8 5.87/2.95 vs 7.26/3.06, N32 1024->512 8x8
// 21.2/11.6 vs 26.2/13.1, N64 512->256 8x8 10.7/5.87 vs 12.6/6.68; but not on fewer
// positions, where the flipped weights are packed for little work (N8 512->1024 8x8
// 8.43/6.70 vs 6.87/3.55), nor at 4x4 (N32 992->128 1.92/1.08 vs 1.70/0.88).
template <typename T>
bool one_by_one_grad_goes_direct(const ConvShape& s) {
    return s.oh * s.ow >= 64 && s.n * s.oh * s.ow >= 2048 &&
           direct_in_place<T>(flipped_input_grad(s));
}
constexpr int64_t kImplicitOverlapPositions = 1024;

template <typename T>
bool takes_implicit(const ConvShape& s, bool input_grad) {
    const Dims d(s);
    const int64_t reds = input_grad ? d.kg : d.cg, positions = input_grad ? d.hw : d.p;
    if (!implicit_fits<T>(s, input_grad)) return false;
    if (s.sh == 1 && s.sw == 1) {
        if (d.taps == 1 && (!input_grad || positions >= kImplicitPositions)) return false;
        if (d.taps == 1 && one_by_one_grad_goes_direct<T>(s)) return false;
        return positions <= kImplicitPositions && reds >= 16;
    }
    const bool overlap = (s.kh - 1) * s.dh + 1 > s.sh || (s.kw - 1) * s.dw + 1 > s.sw;
    if (reds * d.taps < 16) return false;
    if (overlap) return positions <= kImplicitOverlapPositions;
    return input_grad && positions <= kImplicitPositions;
}

// Whether the Winograd path (winograd.cpp) takes the forward convolution s (or, for the input
// gradient, the forward of flipped_input_grad): float32 3x3 layers with stride 1 (winograd_fits)
// with 32+ channels in and out, 32+ output tiles of 4x4, and 16+ tiles per thread. It does a
// quarter of the direct path's multiply-adds, but transforms every input and output tile and
// the 36 x K x C transformed kernels per call (which each block of tiles packs again), so few
// channels or few tiles do not pay. float64 stays on the exact-order paths: the transforms
// cost some ten times the rounding error of a direct sum (the error is stated and bounded in
// tests/kernels/test_winograd.py). Measured (1 thread, AVX2 Zen 3 class host, float32,
// GFLOP/s by the direct count, best of 7 on a loaded host, forward / input gradient, the
// planned path vs Winograd): N64 64->64 32x32 direct 22.7/27.2 vs 52.3/54.5; N32 256->256
// 8x8 implicit 34.8/33.4 vs 78.7/72.0; N64 512->512 4x4 (64 tiles) implicit 32.5/33.2 vs
// 40.1/46.3; N64 32->32 32x32 direct 28.3/25.9 vs 32.4/38.9; but N64 16->16 32x32 34.6/35.0
// vs 29.7/28.2, 3->64 18.4/14.3 vs 10.9/8.0, N8 512->512 8x8 (32 tiles) 26.6/31.4 vs
// 25.6/27.5, N16 512->512 4x4 (16 tiles) 24.4/22.5 vs 12.6/14.6; at 2 threads N8 512->512
// 8x8 (one block of 32 tiles, the threads split inside it) 31.9/35.5 vs 12.1/11.0. The
// channel cut is conservative: N64 24->48 32x32 measured direct 23.8/22.0 vs 35.0/24.4.
// Those small-batch figures had the kernel transform in scalar code, a fixed cost of 38% of
// a 512x512 call; vectorised, few tiles pay. Measured again (Zen 4, float32, ms, forward /
// input gradient, implicit vs Winograd; AVX-512, then the AVX2 path): 32 tiles at 1 thread
// win everywhere (N8 512->512 8x8 26.7/29.1 vs 16.6/15.2, AVX2 26.2/28.6 vs 15.3/15.0; N32
// 128->32 4x4 0.40/0.48 vs 0.35/0.28); at 2 threads N8 512 8x8 13.2/14.7 vs 8.7/8.1 (AVX2
// 13.7/17.9 vs 14.0/12.0), N8 128 8x8 0.83/0.92 vs 0.66/0.66, and even or a little behind
// on the smallest (N32 128->32 4x4 0.26/0.31 vs 0.31/0.25, AVX2 0.28/0.21 vs 0.36/0.31);
// 16 tiles are mixed (N16 512 4x4 2 threads 7.7/9.2 vs 10.9/8.4) and 8 lose (N2 512 8x8
// 10.3/12.3 vs 16.1/14.5). So 32 tiles, and 16 per thread.
constexpr int64_t kWinogradMinChannels = 32;
constexpr int64_t kWinogradMinTiles = 32;
constexpr int64_t kWinogradTilesPerThread = 16;

// The 4x4 output tiles of s, or 0 where Winograd is not a candidate (float64, another
// kernel or stride, fewer than 32 channels in or out).
template <typename T>
int64_t winograd_tiles(const ConvShape& s) {
    if (!std::is_same_v<T, float> || !winograd_fits(s)) return 0;
    if (s.c < kWinogradMinChannels || s.k < kWinogradMinChannels) return 0;
    return s.n * ((s.oh + 3) / 4) * ((s.ow + 3) / 4);
}

template <typename T>
bool takes_winograd(const ConvShape& s) {
    const int64_t tiles = winograd_tiles<T>(s);
    return tiles >= kWinogradMinTiles && tiles >= kWinogradTilesPerThread * num_threads();
}

// Whether the Winograd weight gradient takes s: a candidate layer with 16+ tiles (half a block
// of 32, the rest padding) and 2^17+ tile x channel x output-channel triples. Its threads
// split each block (by channel, then by transform element), so it needs no tiles per thread;
// what does not pay on small layers is its fixed cost, the 36 x K x C transformed gradients
// written, summed and transformed back. Measured (AVX-512 Zen 4, float32, ms at 1 / 2
// threads, direct vs Winograd): N64 64->64 32x32 54.4/27.8 vs 30.5/15.9; N64 512->512 4x4
// 66.9/34.3 vs 25.4/12.9; N16 64->64 64x64 (U-Net) 51.1/25.7 vs 30.2/16.0; N32 128->32
// (DenseNet) 32x32 26.0/13.5 vs 19.6/9.6, 4x4 (32 tiles) 0.59/0.34 vs 0.47/0.27; N16
// 512->512 4x4 (16 tiles) 19.1/11.0 vs 17.3/8.6; N64 32->32 32x32 15.2/7.1 vs 13.8/7.1; but
// N4 32->32 16x16 (64 tiles, 2^16 triples) 0.25/0.13 vs 0.31/0.17, N2 64->64 8x8 0.15/0.13
// vs 0.39/0.23, N4 512->512 4x4 (4 tiles) 8.5/5.4 vs 17.1/8.2.
constexpr int64_t kWinogradGradMinTiles = 16;
constexpr int64_t kWinogradGradMinTriples = int64_t(1) << 17;

template <typename T>
bool takes_winograd_weight_grad(const ConvShape& s) {
    const int64_t tiles = winograd_tiles<T>(s);
    return tiles >= kWinogradGradMinTiles && tiles * s.c * s.k >= kWinogradGradMinTriples;
}

// Channels last (NHWC activations): the implicit path reads and writes them as they are, while
// the others pay a transpose on the way in and one on the way out, so it takes every pass
// whose copy fits and whose reductions are not short (16+ channels summed per tap, as for
// strided layers). Measured (1 thread, float32, ResNet-18 N32 64->64 32x32 3x3, on a heavily
// loaded 2-core EPYC: ms median of 7, interleaved): forward 103 implicit vs 162 direct with
// the transposes (125 direct on NCHW arrays), forward + both gradients 356 vs 440.
template <typename T>
bool takes_implicit_nhwc(const ConvShape& s, bool input_grad) {
    return implicit_fits<T>(s, input_grad) && (input_grad ? s.k : s.c) / s.groups >= 16;
}

// The path each pass of s takes by default.
template <typename T>
ConvAlgo choose_path(const ConvShape& s, ConvPass pass, ConvLayout layout = ConvLayout::nchw) {
    if (layout == ConvLayout::nhwc && pass != ConvPass::weight_grad &&
        takes_implicit_nhwc<T>(s, pass == ConvPass::input_grad))
        return ConvAlgo::implicit_gemm;
    switch (pass) {
        case ConvPass::forward:
            if (takes_winograd<T>(s)) return ConvAlgo::winograd;
            if (takes_implicit<T>(s, false)) return ConvAlgo::implicit_gemm;
            if (takes_direct<T>(s)) return ConvAlgo::direct;
            return ConvAlgo::im2col;
        case ConvPass::input_grad:
            if (s.sh == 1 && s.sw == 1 && takes_winograd<T>(flipped_input_grad(s)))
                return ConvAlgo::winograd;
            if (takes_implicit<T>(s, true)) return ConvAlgo::implicit_gemm;
            if (s.sh == 1 && s.sw == 1)
                return choose_path<T>(flipped_input_grad(s), ConvPass::forward);
            return ConvAlgo::im2col;
        case ConvPass::weight_grad:
            if (layout == ConvLayout::nchw && takes_winograd_weight_grad<T>(s))
                return ConvAlgo::winograd;
            return takes_direct_weight_grad<T>(s) ? ConvAlgo::direct : ConvAlgo::im2col;
    }
    return ConvAlgo::im2col;
}

// Why `algo` cannot run this pass of s, or null when it can (whatever it would cost).
template <typename T>
const char* cannot_take(const ConvShape& s, ConvPass pass, ConvAlgo algo) {
    const bool stride1 = s.sh == 1 && s.sw == 1;
    switch (algo) {
        case ConvAlgo::automatic:
        case ConvAlgo::im2col:
            return nullptr;
        case ConvAlgo::direct:
            if (pass == ConvPass::input_grad)
                return stride1 && direct_fits(flipped_input_grad(s))
                           ? nullptr
                           : "the direct input gradient needs stride 1 and the usual output "
                             "extent (no output_padding)";
            return direct_fits(s) ? nullptr
                                  : "the direct path needs stride 1, no negative padding and "
                                    "the usual output extent";
        case ConvAlgo::winograd:
            return winograd_fits(s) ? nullptr
                                    : "the Winograd path needs a 3x3 kernel, stride 1, "
                                      "dilation 1 and groups 1";
        case ConvAlgo::implicit_gemm:
            if (pass == ConvPass::weight_grad)
                return "the implicit GEMM path has no weight gradient";
            if (implicit_fits<T>(s, pass == ConvPass::input_grad)) return nullptr;
            // A stride-1 input gradient may run as the forward of flipped_input_grad(s).
            if (pass == ConvPass::input_grad && stride1 &&
                implicit_fits<T>(flipped_input_grad(s), false))
                return nullptr;
            return "the implicit GEMM path's channels-last copy of one image would exceed its "
                   "4 MiB bound";
    }
    return "unknown path";
}

std::string describe(const ConvShape& s);  // "x (n, c, h, w), w (k, c/g, kh, kw), stride .."

// choose_path, or `forced` where it is not automatic and can run the pass (else throws
// std::invalid_argument saying why).
template <typename T>
ConvAlgo plan_path(const ConvShape& s, ConvPass pass, ConvAlgo forced,
                   ConvLayout layout = ConvLayout::nchw) {
    if (forced == ConvAlgo::automatic) return choose_path<T>(s, pass, layout);
    if (const char* why = cannot_take<T>(s, pass, forced)) {
        static const char* const passes[] = {"forward pass", "input gradient", "weight gradient"};
        fail("conv algo='", conv_algo_name(forced), "' cannot run the ",
             passes[static_cast<int>(pass)], " of the convolution ", describe(s), ": ", why);
    }
    return forced;
}

}  // namespace pyfast::cpu_conv
