// pyfast._C's conv family: conv2d (forward, with bias and ReLU fused), its backward pass and
// conv_transpose2d. The shape rules are cpu/conv.h's, which the CUDA bindings share; the
// dtype of w decides and every other array must match it.

#include "bindings/arrays.h"
#include "cpu/conv.h"

namespace pyfast::binding {
namespace {

ConvShape4 shape4(const py::array& x, const char* name) {
    check_ndim(x, 4, name, "4-D");
    return {x.shape(0), x.shape(1), x.shape(2), x.shape(3)};
}

void conv2d(const py::array& x, const py::array& w, const std::optional<py::array>& bias,
            py::array out, const ConvPair& stride, const ConvPair& padding,
            const ConvPair& dilation, std::int64_t groups, bool relu) {
    on_float_type(w, "w", [&](auto zero) {
        using T = decltype(zero);
        const auto s = conv2d_shape("conv2d", shape4(x, "x"), shape4(w, "w"), stride, padding,
                                    dilation, groups);
        const T* xp = input<T>(x, "x");
        const T* wp = input<T>(w, "w");
        const T* bp = optional_input<T>(bias, "bias", s.k);
        T* yp = output<T>(out, "out", {s.n, s.k, s.oh, s.ow});
        py::gil_scoped_release release;
        pyfast::conv2d_forward<T>(s, xp, wp, bp, yp, relu);
    });
}

void conv2d_backward(const py::array& gy, const std::optional<py::array>& x, const py::array& w,
                     std::optional<py::array> gx, std::optional<py::array> gw,
                     std::optional<py::array> gb, const ConvPair& stride,
                     const ConvPair& padding, const ConvPair& dilation, std::int64_t groups) {
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
        pyfast::conv2d_backward<T>(s, gyp, xp, wp, gxp, gwp, gbp);
    });
}

void conv_transpose2d(const py::array& x, const py::array& w,
                      const std::optional<py::array>& bias, py::array out,
                      const ConvPair& stride, const ConvPair& padding,
                      const ConvPair& dilation, std::int64_t groups) {
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
        pyfast::conv_transpose2d<T>(s, xp, wp, bp, op);
    });
}

}  // namespace

void bind_conv(py::module_& m) {
    m.def("conv2d", &conv2d, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("out"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
          py::arg("relu"),
          "out = relu?(conv2d(x, w) + bias). x (N, C, H, W), w (K, C/groups, kh, kw), bias (K,) "
          "or None, out (N, K, OH, OW); all C-contiguous, one dtype. stride, padding, dilation: "
          "(h, w) pairs.");
    m.def("conv2d_backward", &conv2d_backward, py::arg("gy"), py::arg("x"), py::arg("w"),
          py::arg("gx"), py::arg("gw"), py::arg("gb"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"),
          "Overwrites the gradients gx (x's shape), gw (w's) and gb (K,) of conv2d given gy; "
          "each may be None, and x may be None when gw is.");
    m.def("conv_transpose2d", &conv_transpose2d, py::arg("x"), py::arg("w"), py::arg("bias"),
          py::arg("out"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
          py::arg("groups"),
          "out = conv_transpose2d(x, w) + bias. x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw), "
          "out (N, Cout, OH, OW) whose extent carries output_padding.");
}

}  // namespace pyfast::binding
