// 2-D convolution on the CPU (NCHW), float32 and float64: the entry points of the conv
// family. The algorithms live one per file in cpu/conv/, and cpu/conv/plan.h holds the rules
// that pick one per shape and pass. The shape struct and its checks are common/conv_shape.h.
#pragma once

#include <string>

#include "common/conv_shape.h"

namespace pyfast {

// The algorithms a pass of a convolution may run (cpu/conv/plan.h says which takes what).
// `automatic` asks for the planned one; as a result it means the pass did not run.
enum class ConvAlgo { automatic, direct, implicit_gemm, im2col, winograd };
enum class ConvPass { forward, input_grad, weight_grad };

// The memory order of the activations (x, y and their gradients; a transposed convolution's
// input and output): NCHW, or NHWC (channels last: element (n, c, h, w) at ((n * H + h) * W +
// w) * C + c, as torch's channels_last). Weights are always (K, C/groups, kh, kw). The
// implicit GEMM path reads and writes NHWC as it is (it works on channels-last copies), and so
// does the direct weight gradient (its padded planes and packed gy are copies anyway); the
// other paths run on NCHW copies, converted on the way in and out.
enum class ConvLayout { nchw, nhwc };

// "direct", "implicit_gemm", "im2col", "winograd" (and "auto" for automatic).
const char* conv_algo_name(ConvAlgo algo);
// The inverse of conv_algo_name; throws std::invalid_argument listing the names.
ConvAlgo conv_algo_from_name(const std::string& name);

// The paths conv2d_backward took; automatic for a gradient it was not asked for.
struct ConvBackwardPaths {
    ConvAlgo input_grad = ConvAlgo::automatic, weight_grad = ConvAlgo::automatic;
};

// Each entry point runs the planned path of each pass, or `algo` where it is not automatic
// (for every pass the call runs): a path that cannot take the shape throws
// std::invalid_argument, before any memory is touched. Each returns the path(s) it ran.

// y = relu?(conv2d(x, w) + bias); bias (k values) may be null.
template <typename T>
ConvAlgo conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, T* y,
                        bool relu, ConvAlgo algo = ConvAlgo::automatic,
                        ConvLayout layout = ConvLayout::nchw);

// The gradients of conv2d given gy (the shape of y): gx (x's shape), gw (w's) and gb (k
// values) are overwritten; any may be null when not wanted, and x may be null when gw is.
template <typename T>
ConvBackwardPaths conv2d_backward(const ConvShape& s, const T* gy, const T* x, const T* w,
                                  T* gx, T* gw, T* gb, ConvAlgo algo = ConvAlgo::automatic,
                                  ConvLayout layout = ConvLayout::nchw);

// The transposed convolution: out (x's shape in s) = the input gradient of the convolution s
// for gy = in (y's shape in s), plus bias (s.c values, or null) per channel.
template <typename T>
ConvAlgo conv_transpose2d(const ConvShape& s, const T* in, const T* w, const T* bias, T* out,
                          ConvAlgo algo = ConvAlgo::automatic,
                          ConvLayout layout = ConvLayout::nchw);

}  // namespace pyfast
