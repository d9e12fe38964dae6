// The shape of a 2-D convolution and the argument checks that turn the shapes a binding
// sees into one: shared by the CPU (cpu/conv.h) and CUDA (cuda/conv.h) backends.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>

#include "common/checks.h"

namespace pyfast {

// One convolution y = conv2d(x, w): x (n, c, h, w), w (k, c / groups, kh, kw), y (n, k, oh,
// ow), with y[.., oh, ow] reading x at rows oh * sh - ph + i * dh (and likewise columns);
// rows outside x read as zeros. The kernels take oh and ow as given (no formula ties them to
// h and w) and accept negative padding (a crop), so the transposed convolution and the
// input gradient can be phrased as convolutions of other shapes.
struct ConvShape {
    std::int64_t n, c, h, w;
    std::int64_t k, kh, kw;
    std::int64_t oh, ow;
    std::int64_t sh, sw, ph, pw, dh, dw;
    std::int64_t groups;
};

// ---- argument checks shared by the CPU and CUDA bindings ------------------------------
// Each throws std::invalid_argument (ValueError in Python) naming what does not fit.

using ConvShape4 = std::array<std::int64_t, 4>;
using ConvPair = std::array<std::int64_t, 2>;

// Stride, padding and dilation beyond this describe no real array and could overflow the
// index arithmetic.
constexpr std::int64_t kMaxConvParam = std::int64_t(1) << 30;

inline void check_conv_params(const ConvPair& stride, const ConvPair& padding,
                              const ConvPair& dilation, std::int64_t groups) {
    const ConvPair* pairs[3] = {&stride, &padding, &dilation};
    const char* names[3] = {"stride", "padding", "dilation"};
    for (int p = 0; p < 3; ++p) {
        const std::int64_t minimum = p == 1 ? 0 : 1;
        for (const std::int64_t e : *pairs[p])
            PYFAST_CHECK(e >= minimum && e <= kMaxConvParam, names[p], " must be in ", minimum,
                         "..", kMaxConvParam, ", got (", (*pairs[p])[0], ", ", (*pairs[p])[1],
                         ")");
    }
    PYFAST_CHECK(groups >= 1 && groups <= kMaxConvParam, "groups must be >= 1, got ", groups);
}

// The convolution of an input of shape x by a weight of shape w (k, c/groups, kh, kw), with
// its output extent from the usual formula; the kernel must fit the padded input.
inline ConvShape conv2d_shape(const char* what, const ConvShape4& x, const ConvShape4& w,
                              const ConvPair& stride, const ConvPair& padding,
                              const ConvPair& dilation, std::int64_t groups) {
    check_conv_params(stride, padding, dilation, groups);
    const std::int64_t c = x[1], k = w[0];
    PYFAST_CHECK(c % groups == 0 && k % groups == 0 && w[1] * groups == c, what, ": w has shape ",
                 shape_str(w), ", which does not fit x of shape ", shape_str(x),
                 " with groups=", groups);
    PYFAST_CHECK(w[2] >= 1 && w[3] >= 1, what, ": w has an empty kernel, shape ",
                 shape_str(w));
    std::int64_t out[2];
    const char* axes[2] = {"rows", "columns"};
    for (int a = 0; a < 2; ++a) {
        const std::int64_t size = x[2 + a], span = dilation[a] * (w[2 + a] - 1) + 1;
        PYFAST_CHECK(span <= size + 2 * padding[a], what, ": the kernel spans ", span, " ",
                     axes[a], " (w has shape ", shape_str(w), ") but the padded input has only ",
                     size + 2 * padding[a], " (x has shape ", shape_str(x), ")");
        out[a] = (size + 2 * padding[a] - span) / stride[a] + 1;
    }
    return {x[0], c, x[2], x[3], k, w[2], w[3], out[0], out[1], stride[0], stride[1],
            padding[0], padding[1], dilation[0], dilation[1], groups};
}

// The convolution whose gradients conv2d_backward computes, from the shapes of gy, w and
// the input: x's, or gx's where x is not passed (only gw needs it). With neither, only gb is
// asked for and gy alone decides.
inline ConvShape conv2d_backward_shape(const ConvShape4& gy, const ConvShape4& w,
                                       const std::optional<ConvShape4>& input,
                                       const ConvPair& stride, const ConvPair& padding,
                                       const ConvPair& dilation, std::int64_t groups) {
    PYFAST_CHECK(gy[1] == w[0], "conv2d_backward: gy has shape ", shape_str(gy),
                 " but w has shape ", shape_str(w), " (output channels differ)");
    if (!input) {
        ConvShape s{};
        s.n = gy[0], s.k = gy[1], s.oh = gy[2], s.ow = gy[3];
        return s;
    }
    const ConvShape s =
        conv2d_shape("conv2d_backward", *input, w, stride, padding, dilation, groups);
    const ConvShape4 want{s.n, s.k, s.oh, s.ow};
    PYFAST_CHECK(gy == want, "gy must have shape ", shape_str(want), ", got ", shape_str(gy));
    return s;
}

// conv_transpose2d(x, w) with x (n, cin, h, w), w (cin, cout/groups, kh, kw) and out (n,
// cout, oh, ow): the convolution (input out, output x, weight w) whose input gradient it is.
// out's extent must be one some output_padding in [0, max(stride, dilation)) gives.
inline ConvShape conv_transpose2d_shape(const ConvShape4& x, const ConvShape4& w,
                                        const ConvShape4& out, const ConvPair& stride,
                                        const ConvPair& padding, const ConvPair& dilation,
                                        std::int64_t groups) {
    check_conv_params(stride, padding, dilation, groups);
    PYFAST_CHECK(w[0] == x[1] && x[1] % groups == 0 && out[0] == x[0] && out[1] == w[1] * groups,
                 "conv_transpose2d: x has shape ", shape_str(x), ", w ", shape_str(w),
                 " and out ", shape_str(out), "; with groups=", groups, " they must be (N, Cin, "
                 "H, W), (Cin, Cout/groups, kh, kw) and (N, Cout, OH, OW)");
    PYFAST_CHECK(w[2] >= 1 && w[3] >= 1, "conv_transpose2d: w has an empty kernel, shape ",
                 shape_str(w));
    for (int a = 0; a < 2; ++a) {
        const std::int64_t op = out[2 + a] - ((x[2 + a] - 1) * stride[a] - 2 * padding[a] +
                                              dilation[a] * (w[2 + a] - 1) + 1);
        PYFAST_CHECK(x[2 + a] >= 1 && op >= 0 && op < std::max(stride[a], dilation[a]),
                     "conv_transpose2d: out has shape ", shape_str(out),
                     ", which no output_padding gives for x of shape ", shape_str(x),
                     " and w of shape ", shape_str(w));
    }
    return {out[0], out[1], out[2], out[3], w[0], w[2], w[3], x[2], x[3], stride[0], stride[1],
            padding[0], padding[1], dilation[0], dilation[1], groups};
}

}  // namespace pyfast
