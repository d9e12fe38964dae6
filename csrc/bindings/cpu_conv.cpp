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

py::object conv2d(const py::array& x, const py::array& w, const std::optional<py::array>& bias,
                  py::array out, const ConvPair& stride, const ConvPair& padding,
                  const ConvPair& dilation, std::int64_t groups, bool relu,
                  const std::optional<std::string>& algo) {
    const ConvAlgo forced = algo_of(algo);
    ConvAlgo path = ConvAlgo::automatic;
    on_float_type(w, "w", [&](auto zero) {
        using T = decltype(zero);
        const auto s = conv2d_shape("conv2d", shape4(x, "x"), shape4(w, "w"), stride, padding,
                                    dilation, groups);
        const T* xp = input<T>(x, "x");
        const T* wp = input<T>(w, "w");
        const T* bp = optional_input<T>(bias, "bias", s.k);
        T* yp = output<T>(out, "out", {s.n, s.k, s.oh, s.ow});
        py::gil_scoped_release release;
        path = pyfast::conv2d_forward<T>(s, xp, wp, bp, yp, relu, forced);
    });
    return path_name(path);
}

py::tuple conv2d_backward(const py::array& gy, const std::optional<py::array>& x,
                          const py::array& w, std::optional<py::array> gx,
                          std::optional<py::array> gw, std::optional<py::array> gb,
                          const ConvPair& stride, const ConvPair& padding,
                          const ConvPair& dilation, std::int64_t groups,
                          const std::optional<std::string>& algo) {
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
        const T* gyp = input<T>(gy, "gy");
        const T* wp = input<T>(w, "w");
        const T* xp = x ? input<T>(*x, "x") : nullptr;
        T* gxp = gx ? output<T>(*gx, "gx", {s.n, s.c, s.h, s.w}) : nullptr;
        T* gwp = gw ? output<T>(*gw, "gw", w_shape) : nullptr;
        T* gbp = optional_output<T>(gb, "gb", s.k);
        py::gil_scoped_release release;
        paths = pyfast::conv2d_backward<T>(s, gyp, xp, wp, gxp, gwp, gbp, forced);
    });
    return py::make_tuple(path_name(paths.input_grad), path_name(paths.weight_grad));
}

py::object conv_transpose2d(const py::array& x, const py::array& w,
                            const std::optional<py::array>& bias, py::array out,
                            const ConvPair& stride, const ConvPair& padding,
                            const ConvPair& dilation, std::int64_t groups,
                            const std::optional<std::string>& algo) {
    const ConvAlgo forced = algo_of(algo);
    ConvAlgo path = ConvAlgo::automatic;
    on_float_type(w, "w", [&](auto zero) {
        using T = decltype(zero);
        const ConvShape4 out_shape = shape4(out, "out");
        const auto s = conv_transpose2d_shape(shape4(x, "x"), shape4(w, "w"), out_shape, stride,
                                              padding, dilation, groups);
        const T* xp = input<T>(x, "x");
        const T* wp = input<T>(w, "w");
        const T* bp = optional_input<T>(bias, "bias", s.c);
        T* op = output<T>(out, "out");
        py::gil_scoped_release release;
        path = pyfast::conv_transpose2d<T>(s, xp, wp, bp, op, forced);
    });
    return path_name(path);
}

}  // namespace

void bind_conv(py::module_& m) {
    m.def("conv2d", &conv2d, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("out"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
          py::arg("relu"), py::kw_only(), py::arg("algo") = py::none(),
          "out = relu?(conv2d(x, w) + bias). x (N, C, H, W), w (K, C/groups, kh, kw), bias (K,) "
          "or None, out (N, K, OH, OW); all C-contiguous, one dtype. stride, padding, dilation: "
          "(h, w) pairs. algo: 'direct', 'implicit_gemm', 'im2col' or None (planned). Returns "
          "the path that ran.");
    m.def("conv2d_backward", &conv2d_backward, py::arg("gy"), py::arg("x"), py::arg("w"),
          py::arg("gx"), py::arg("gw"), py::arg("gb"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"), py::kw_only(), py::arg("algo") = py::none(),
          "Overwrites the gradients gx (x's shape), gw (w's) and gb (K,) of conv2d given gy; "
          "each may be None, and x may be None when gw is. algo forces the path of both "
          "gradients. Returns (input-gradient path, weight-gradient path), None for one not "
          "computed.");
    m.def("conv_transpose2d", &conv_transpose2d, py::arg("x"), py::arg("w"), py::arg("bias"),
          py::arg("out"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
          py::arg("groups"), py::kw_only(), py::arg("algo") = py::none(),
          "out = conv_transpose2d(x, w) + bias. x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw), "
          "out (N, Cout, OH, OW) whose extent carries output_padding. It runs the input "
          "gradient of a convolution; returns that path.");
}

}  // namespace pyfast::binding
