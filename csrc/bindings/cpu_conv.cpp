// pyfast._C's conv family: conv2d (forward, with bias and ReLU fused), its backward pass and
// conv_transpose2d. The shape rules are common/conv_shape.h's, which the CUDA bindings share;
// the dtype of w decides and every other array must match it. `algo` forces an algorithm
// (cpu/conv/plan.h; None or "auto" plans it); each call returns the path(s) it ran.

#include "bindings/arrays.h"
#include "cpu/conv.h"

namespace pyfast::binding {
namespace {

ConvAlgo algo_of(const std::optional<std::string>& algo) {
    return algo ? conv_algo_from_name(*algo) : ConvAlgo::automatic;
}

py::object path_name(ConvAlgo path) {
    if (path == ConvAlgo::automatic) return py::none();
    return py::str(conv_algo_name(path));
}

ConvShape4 shape4(const py::array& x, const char* name) {
    check_ndim(x, 4, name, "4-D");
    return {x.shape(0), x.shape(1), x.shape(2), x.shape(3)};
}

// An activation's data: C-contiguous, or with channels_last an (N, C, H, W) array whose memory
// is NHWC (x.transpose(0, 2, 3, 1) C-contiguous; extents of 1 may have any stride).
template <typename T>
const T* activation(const py::array& x, const char* name, bool channels_last) {
    if (!channels_last) return input<T>(x, name);
    const T* p = data_of<T>(x, name);
    const py::ssize_t item = sizeof(T), c = x.shape(1), w = x.shape(3), h = x.shape(2);
    const py::ssize_t want[4] = {h * w * c * item, item, w * c * item, c * item};
    for (int a = 0; a < 4; ++a)
        PYFAST_CHECK(x.shape(a) == 1 || x.strides(a) == want[a], name,
                     " must be channels-last (NHWC memory of an (N, C, H, W) array) with "
                     "channels_last=True; its shape is ", shape_str(x), " and its strides ",
                     shape_str(std::vector<py::ssize_t>(x.strides(), x.strides() + 4)));
    return p;
}

template <typename T>
T* activation_out(py::array& x, const char* name, const ConvShape4& shape, bool channels_last) {
    if (!channels_last) return output<T>(x, name, shape);
    check_shape(x, name, shape);
    PYFAST_CHECK(x.writeable(), name, " is read-only");
    return const_cast<T*>(activation<T>(x, name, true));
}

ConvLayout layout_of(bool channels_last) {
    return channels_last ? ConvLayout::nhwc : ConvLayout::nchw;
}

py::object conv2d(const py::array& x, const py::array& w, const std::optional<py::array>& bias,
                  py::array out, const ConvPair& stride, const ConvPair& padding,
                  const ConvPair& dilation, std::int64_t groups, bool relu,
                  const std::optional<std::string>& algo, bool channels_last) {
    const ConvAlgo forced = algo_of(algo);
    ConvAlgo path = ConvAlgo::automatic;
    on_float_type(w, "w", [&](auto zero) {
        using T = decltype(zero);
        const auto s = conv2d_shape("conv2d", shape4(x, "x"), shape4(w, "w"), stride, padding,
                                    dilation, groups);
        const T* xp = activation<T>(x, "x", channels_last);
        const T* wp = input<T>(w, "w");
        const T* bp = optional_input<T>(bias, "bias", s.k);
        T* yp = activation_out<T>(out, "out", {s.n, s.k, s.oh, s.ow}, channels_last);
        py::gil_scoped_release release;
        path = pyfast::conv2d_forward<T>(s, xp, wp, bp, yp, relu, forced,
                                         layout_of(channels_last));
    });
    return path_name(path);
}

py::tuple conv2d_backward(const py::array& gy, const std::optional<py::array>& x,
                          const py::array& w, std::optional<py::array> gx,
                          std::optional<py::array> gw, std::optional<py::array> gb,
                          const ConvPair& stride, const ConvPair& padding,
                          const ConvPair& dilation, std::int64_t groups,
                          const std::optional<std::string>& algo, bool channels_last) {
    const ConvAlgo forced = algo_of(algo);
    ConvBackwardPaths paths;
    on_float_type(w, "w", [&](auto zero) {
        using T = decltype(zero);
        const ConvShape4 gy_shape = shape4(gy, "gy"), w_shape = shape4(w, "w");
        PYFAST_CHECK(!gw || x, "conv2d_backward: the weight gradient gw needs x");
        std::optional<ConvShape4> in_shape;
        if (x || gx) in_shape = x ? shape4(*x, "x") : shape4(*gx, "gx");
        const auto s = conv2d_backward_shape(gy_shape, w_shape, in_shape, stride, padding,
                                             dilation, groups);
        const T* gyp = activation<T>(gy, "gy", channels_last);
        const T* wp = input<T>(w, "w");
        const T* xp = x ? activation<T>(*x, "x", channels_last) : nullptr;
        T* gxp = gx ? activation_out<T>(*gx, "gx", {s.n, s.c, s.h, s.w}, channels_last) : nullptr;
        T* gwp = gw ? output<T>(*gw, "gw", w_shape) : nullptr;
        T* gbp = optional_output<T>(gb, "gb", s.k);
        py::gil_scoped_release release;
        paths = pyfast::conv2d_backward<T>(s, gyp, xp, wp, gxp, gwp, gbp, forced,
                                           layout_of(channels_last));
    });
    return py::make_tuple(path_name(paths.input_grad), path_name(paths.weight_grad));
}

py::object conv_transpose2d(const py::array& x, const py::array& w,
                            const std::optional<py::array>& bias, py::array out,
                            const ConvPair& stride, const ConvPair& padding,
                            const ConvPair& dilation, std::int64_t groups,
                            const std::optional<std::string>& algo, bool channels_last) {
    const ConvAlgo forced = algo_of(algo);
    ConvAlgo path = ConvAlgo::automatic;
    on_float_type(w, "w", [&](auto zero) {
        using T = decltype(zero);
        const ConvShape4 out_shape = shape4(out, "out");
        const auto s = conv_transpose2d_shape(shape4(x, "x"), shape4(w, "w"), out_shape, stride,
                                              padding, dilation, groups);
        const T* xp = activation<T>(x, "x", channels_last);
        const T* wp = input<T>(w, "w");
        const T* bp = optional_input<T>(bias, "bias", s.c);
        T* op = activation_out<T>(out, "out", out_shape, channels_last);
        py::gil_scoped_release release;
        path = pyfast::conv_transpose2d<T>(s, xp, wp, bp, op, forced, layout_of(channels_last));
    });
    return path_name(path);
}

}  // namespace

void bind_conv(py::module_& m) {
    m.def("conv2d", &conv2d, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("out"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
          py::arg("relu"), py::kw_only(), py::arg("algo") = py::none(),
          py::arg("channels_last") = false,
          "out = relu?(conv2d(x, w) + bias). x (N, C, H, W), w (K, C/groups, kh, kw), bias (K,) "
          "or None, out (N, K, OH, OW); all C-contiguous, one dtype. stride, padding, dilation: "
          "(h, w) pairs. algo: 'direct', 'implicit_gemm', 'im2col' or None (planned). "
          "channels_last: x and out are NHWC memory (N, C, H, W)-shaped instead. Returns the "
          "path that ran.");
    m.def("conv2d_backward", &conv2d_backward, py::arg("gy"), py::arg("x"), py::arg("w"),
          py::arg("gx"), py::arg("gw"), py::arg("gb"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"), py::kw_only(), py::arg("algo") = py::none(),
          py::arg("channels_last") = false,
          "Overwrites the gradients gx (x's shape), gw (w's) and gb (K,) of conv2d given gy; "
          "each may be None, and x may be None when gw is. algo forces the path of both "
          "gradients; channels_last: gy, x and gx are NHWC. Returns (input-gradient path, "
          "weight-gradient path), None for one not computed.");
    m.def("conv_transpose2d", &conv_transpose2d, py::arg("x"), py::arg("w"), py::arg("bias"),
          py::arg("out"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
          py::arg("groups"), py::kw_only(), py::arg("algo") = py::none(),
          py::arg("channels_last") = false,
          "out = conv_transpose2d(x, w) + bias. x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw), "
          "out (N, Cout, OH, OW) whose extent carries output_padding. It runs the input "
          "gradient of a convolution; returns that path.");
}

}  // namespace pyfast::binding
