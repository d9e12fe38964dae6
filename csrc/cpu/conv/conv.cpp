// Convolution on the CPU (NCHW, float32 and float64): forward, both gradients and the
// transposed convolution, for any stride, padding, dilation and groups (a group is a channel
// slice; strides make it free). The entry points: each pass takes the path plan.h chooses (or
// the one forced), one algorithm per file beside this one.
//
// Memory: the im2col column buffer holds one tile of output positions, the direct path's
// planes one band of rows, the implicit path's copy a bounded block of images, so memory is
// bounded whatever the image size (a 512x512 U-Net layer needs about a MB per thread, not GB)
// and stays in cache.
//
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

#include <algorithm>
#include <memory>
#include <vector>

#include "cpu/conv/common.h"
#include "cpu/conv/paths.h"
#include "cpu/conv/plan.h"

namespace pyfast {

const char* conv_algo_name(ConvAlgo algo) {
    switch (algo) {
        case ConvAlgo::automatic: return "auto";
        case ConvAlgo::direct: return "direct";
        case ConvAlgo::implicit_gemm: return "implicit_gemm";
        case ConvAlgo::im2col: return "im2col";
        case ConvAlgo::winograd: return "winograd";
    }
    return "unknown";
}

ConvAlgo conv_algo_from_name(const std::string& name) {
    for (ConvAlgo a : {ConvAlgo::automatic, ConvAlgo::direct, ConvAlgo::implicit_gemm,
                       ConvAlgo::im2col, ConvAlgo::winograd})
        if (name == conv_algo_name(a)) return a;
    fail("conv algo must be one of 'auto', 'direct', 'implicit_gemm', 'im2col', 'winograd', "
         "got '", name, "'");
}

namespace cpu_conv {

ThreadBuffer& column_buffer() {
    thread_local ThreadBuffer buffer;
    return buffer;
}

std::string describe(const ConvShape& s) {
    std::ostringstream out;
    out << "x (" << s.n << ", " << s.c << ", " << s.h << ", " << s.w << "), w (" << s.k << ", "
        << s.c / s.groups << ", " << s.kh << ", " << s.kw << "), output " << s.oh << "x" << s.ow
        << ", stride (" << s.sh << ", " << s.sw << "), padding (" << s.ph << ", " << s.pw
        << "), dilation (" << s.dh << ", " << s.dw << "), groups " << s.groups;
    return out.str();
}

namespace {

// ---- NHWC <-> NCHW, for the paths that run on NCHW ------------------------------------------

// Uninitialised room for `count` T (filled by the transposes).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t count) {
    return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(count, 1))]);
}

// dst[m] = src[m]^T for n images of rows x cols, in blocks of 32 x 32 (both sides stay in L1).
template <typename T>
void transpose_images(const T* src, T* dst, int64_t n, int64_t rows, int64_t cols) {
    constexpr int64_t kBlock = 32;
    const int64_t blocks = ceil_div(rows, kBlock);
#pragma omp parallel for num_threads(team(n * rows * cols, n * blocks)) schedule(static)
    for (int64_t t = 0; t < n * blocks; ++t) {
        const int64_t m = t / blocks, r0 = t % blocks * kBlock, r1 = std::min(rows, r0 + kBlock);
        const T* sm = src + m * rows * cols;
        T* dm = dst + m * rows * cols;
        for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
            const int64_t c1 = std::min(cols, c0 + kBlock);
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t c = c0; c < c1; ++c) dm[c * rows + r] = sm[r * cols + c];
        }
    }
}

template <typename T>
std::unique_ptr<T[]> nchw_copy(const T* nhwc, int64_t n, int64_t c, int64_t hw) {
    auto out = scratch<T>(n * c * hw);
    transpose_images(nhwc, out.get(), n, hw, c);
    return out;
}

template <typename T>
void store_nhwc(const T* nchw, T* nhwc, int64_t n, int64_t c, int64_t hw) {
    transpose_images(nchw, nhwc, n, c, hw);
}

// ---- the passes -----------------------------------------------------------------------------

template <typename T>
ConvAlgo forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y, bool relu,
                 ConvAlgo forced, ConvLayout layout = ConvLayout::nchw) {
    const ConvAlgo path = plan_path<T>(s, ConvPass::forward, forced, layout);
    if (s.n == 0 || s.k == 0 || s.oh * s.ow == 0) return path;
    if (path == ConvAlgo::implicit_gemm) {
        implicit_forward(s, x, w, bias, y, relu, layout == ConvLayout::nhwc);
        return path;
    }
    if (layout == ConvLayout::nhwc) {
        const auto xc = nchw_copy(x, s.n, s.c, s.h * s.w);
        auto yc = scratch<T>(s.n * s.k * s.oh * s.ow);
        forward(s, xc.get(), w, bias, yc.get(), relu, path);
        store_nhwc(yc.get(), y, s.n, s.k, s.oh * s.ow);
        return path;
    }
    if (path == ConvAlgo::direct)
        direct_forward(s, x, w, bias, y, relu);
    else if (path == ConvAlgo::winograd)
        winograd_forward(s, x, w, bias, y, relu);
    else
        im2col_forward(s, x, w, bias, y, relu);
    return path;
}

// The NCHW weight gradient on `path` (Winograd or im2col).
template <typename T>
void weight_grad_nchw(const ConvShape& s, const T* gy, const T* x, T* gw, ConvAlgo path) {
    if (path == ConvAlgo::winograd)
        winograd_weight_grad(s, gy, x, gw);
    else
        im2col_weight_grad(s, gy, x, gw);  // zeros alone for an empty sum
}

// NHWC: the direct weight gradient reads gy and x as they are; the others run on NCHW copies
// (gy's, when the caller has one, is shared with the input gradient).
template <typename T>
ConvAlgo weight_grad(const ConvShape& s, const T* gy, const T* x, T* gw, ConvAlgo path,
                     ConvLayout layout, std::unique_ptr<T[]>* gy_nchw) {
    const int64_t size = s.k * (s.c / s.groups) * s.kh * s.kw;
    const bool nhwc = layout == ConvLayout::nhwc;
    if (path == ConvAlgo::direct && s.n > 0 && s.oh * s.ow > 0 && size > 0) {
        direct_weight_grad(s, gy, x, gw, nhwc);
    } else if (nhwc) {
        *gy_nchw = nchw_copy(gy, s.n, s.k, s.oh * s.ow);
        const auto x_nchw = nchw_copy(x, s.n, s.c, s.h * s.w);
        weight_grad_nchw(s, gy_nchw->get(), x_nchw.get(), gw, path);
    } else {
        weight_grad_nchw(s, gy, x, gw, path);
    }
    return path;
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

// gb of an NHWC gy: the column sums of its (N*OH*OW) x K matrix, in row order per channel.
template <typename T>
void bias_grad_nhwc(const ConvShape& s, const T* gy, T* gb) {
    const int64_t rows = s.n * s.oh * s.ow;
    constexpr int64_t kChunk = 16;  // channels per thread item
#pragma omp parallel for num_threads(team(rows * s.k, ceil_div(s.k, kChunk))) schedule(static)
    for (int64_t k0 = 0; k0 < s.k; k0 += kChunk) {
        const int64_t k1 = std::min(s.k, k0 + kChunk);
        T acc[kChunk] = {};
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t k = k0; k < k1; ++k) acc[k - k0] += gy[r * s.k + k];
        for (int64_t k = k0; k < k1; ++k) gb[k] = acc[k - k0];
    }
}

// gx (x's shape in s) = the input gradient for gy, plus bias per channel when given.
template <typename T>
ConvAlgo input_grad(const ConvShape& s, const T* gy, const T* w, const T* bias, T* gx,
                    ConvAlgo forced, ConvLayout layout = ConvLayout::nchw,
                    const T* gy_nchw = nullptr) {
    const ConvAlgo path = plan_path<T>(s, ConvPass::input_grad, forced, layout);
    const Dims d(s);
    if (s.n == 0 || d.hw == 0 || s.c == 0) return path;
    // The implicit path runs the stride phases of s itself when its copy fits; otherwise (a
    // stride-1 s) the forward of the flipped convolution, as the direct path and im2col do.
    if (path == ConvAlgo::implicit_gemm && implicit_fits<T>(s, true)) {
        implicit_input_grad(s, gy, w, bias, gx, layout == ConvLayout::nhwc);
        return path;
    }
    if (layout == ConvLayout::nhwc) {  // gy_nchw: an NCHW copy of gy the caller has made
        std::unique_ptr<T[]> copy;
        if (!gy_nchw) copy = nchw_copy(gy, s.n, s.k, s.oh * s.ow), gy_nchw = copy.get();
        auto gxc = scratch<T>(s.n * s.c * d.hw);
        input_grad(s, gy_nchw, w, bias, gxc.get(), path);
        store_nhwc(gxc.get(), gx, s.n, s.c, d.hw);
        return path;
    }
    if (s.sh != 1 || s.sw != 1) {
        col2im_input_grad(s, gy, w, bias, gx);
        return path;
    }
    if (path == ConvAlgo::winograd) {  // flips the kernels as it transforms them
        winograd_input_grad(s, gy, w, bias, gx);
        return path;
    }
    std::vector<T> flipped(static_cast<size_t>(s.c) * d.kg * d.taps);
    for (int64_t g = 0; g < s.groups; ++g)
        for (int64_t kl = 0; kl < d.kg; ++kl)
            for (int64_t c = 0; c < d.cg; ++c)
                for (int64_t tap = 0; tap < d.taps; ++tap)
                    flipped[((g * d.cg + c) * d.kg + kl) * d.taps + (d.taps - 1 - tap)] =
                        w[((g * d.kg + kl) * d.cg + c) * d.taps + tap];
    return forward(flipped_input_grad(s), gy, flipped.data(), bias, gx, false, path);
}

}  // namespace
}  // namespace cpu_conv

template <typename T>
ConvAlgo conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                        bool relu, ConvAlgo algo, ConvLayout layout) {
    return cpu_conv::forward(s, x, w, bias, y, relu, algo, layout);
}

template <typename T>
ConvBackwardPaths conv2d_backward(const ConvShape& s, const T* gy, const T* x, const T* w,
                                  T* gx, T* gw, T* gb, ConvAlgo algo, ConvLayout layout) {
    // Every pass asked for is planned (a forced path checked) before any is run.
    ConvBackwardPaths paths;
    const bool nhwc = layout == ConvLayout::nhwc, gx_empty = s.k == 0 || s.oh * s.ow == 0;
    if (gx) paths.input_grad = cpu_conv::plan_path<T>(s, ConvPass::input_grad, algo, layout);
    if (gw) paths.weight_grad = cpu_conv::plan_path<T>(s, ConvPass::weight_grad, algo, layout);
    if (gb) {
        if (nhwc)
            cpu_conv::bias_grad_nhwc(s, gy, gb);
        else
            cpu_conv::bias_grad(s, gy, gb);
    }
    // An NCHW copy of an NHWC gy, if the weight gradient makes one, serves the input
    // gradient too.
    std::unique_ptr<T[]> gy_nchw;
    if (gw) cpu_conv::weight_grad(s, gy, x, gw, paths.weight_grad, layout, &gy_nchw);
    if (gx) {
        if (gx_empty)
            std::fill(gx, gx + s.n * s.c * s.h * s.w, T(0));
        else
            paths.input_grad = cpu_conv::input_grad(s, gy, w, static_cast<const T*>(nullptr), gx,
                                                    paths.input_grad, layout, gy_nchw.get());
    }
    return paths;
}

template <typename T>
ConvAlgo conv_transpose2d(const ConvShape& s, const T* in, const T* w, const T* bias, T* out,
                          ConvAlgo algo, ConvLayout layout) {
    const ConvAlgo path = cpu_conv::plan_path<T>(s, ConvPass::input_grad, algo, layout);
    const int64_t size = s.n * s.c * s.h * s.w;
    if (s.k == 0 || s.oh * s.ow == 0) {
        const bool nhwc = layout == ConvLayout::nhwc;
        for (int64_t e = 0; e < size; ++e)
            out[e] = bias ? bias[nhwc ? e % s.c : e / (s.h * s.w) % s.c] : T(0);
        return path;
    }
    return cpu_conv::input_grad(s, in, w, bias, out, path, layout);
}

#define PYFAST_CONV_INSTANTIATE(T)                                                             \
    template ConvAlgo conv2d_forward<T>(const ConvShape&, const T*, const T*, const T*, T*,     \
                                        bool, ConvAlgo, ConvLayout);                             \
    template ConvBackwardPaths conv2d_backward<T>(const ConvShape&, const T*, const T*,         \
                                                  const T*, T*, T*, T*, ConvAlgo, ConvLayout);   \
    template ConvAlgo conv_transpose2d<T>(const ConvShape&, const T*, const T*, const T*, T*,   \
                                          ConvAlgo, ConvLayout);
PYFAST_CONV_INSTANTIATE(float)
PYFAST_CONV_INSTANTIATE(double)
#undef PYFAST_CONV_INSTANTIATE

}  // namespace pyfast
