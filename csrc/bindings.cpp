// pyfast._C: the native CPU backend's Python face. Each binding checks what it is given
// (so a direct call cannot crash the interpreter), releases the GIL and runs the kernel.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "common/checks.h"
#include "common/runtime.h"
#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/peak.h"

namespace py = pybind11;
using pyfast::fail;

namespace {

std::string shape_of(const py::array& x) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < x.ndim(); ++i) s += (i ? ", " : "") + std::to_string(x.shape(i));
    return s + (x.ndim() == 1 ? ",)" : ")");
}

template <typename T>
const T* data_of(const py::array& x, const char* name) {
    PYFAST_CHECK(py::isinstance<py::array_t<T>>(x) && x.dtype().is(py::dtype::of<T>()), name,
                 " must have dtype ", std::string(py::str(py::dtype::of<T>())), ", got ",
                 std::string(py::str(x.dtype())));
    for (py::ssize_t i = 0; i < x.ndim(); ++i)
        PYFAST_CHECK(x.strides(i) % static_cast<py::ssize_t>(sizeof(T)) == 0, name,
                     " has strides that are not a multiple of its item size");
    return static_cast<const T*>(x.data());
}

template <typename T>
pyfast::MatRef<T> mat_ref(const py::array& x, const char* name) {
    PYFAST_CHECK(x.ndim() == 2, name, " must be 2-D, got shape ", shape_of(x));
    const T* p = data_of<T>(x, name);
    return {p, x.strides(0) / static_cast<py::ssize_t>(sizeof(T)),
            x.strides(1) / static_cast<py::ssize_t>(sizeof(T))};
}

template <typename T>
T* out_data(py::array& out, const char* name) {
    data_of<T>(out, name);
    PYFAST_CHECK(out.writeable(), name, " is read-only");
    PYFAST_CHECK(out.flags() & py::array::c_style, name, " must be C-contiguous");
    return static_cast<T*>(out.mutable_data());
}

template <typename T>
void matmul_typed(const py::array& a, const py::array& b, py::array& out,
                  const std::optional<py::array>& bias, bool relu) {
    auto ra = mat_ref<T>(a, "a"), rb = mat_ref<T>(b, "b");
    const py::ssize_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
    PYFAST_CHECK(b.shape(0) == k, "matmul: a is ", shape_of(a), " but b is ", shape_of(b),
                 " (inner dimensions differ)");
    PYFAST_CHECK(out.ndim() == 2 && out.shape(0) == m && out.shape(1) == n, "out must have shape (",
                 m, ", ", n, "), got ", shape_of(out));
    T* c = out_data<T>(out, "out");
    pyfast::Epilogue<T> ep;
    ep.relu = relu;
    if (bias) {
        PYFAST_CHECK(bias->ndim() == 1 && bias->shape(0) == n, "bias must have shape (", n,
                     ",), got ", shape_of(*bias));
        PYFAST_CHECK(bias->flags() & py::array::c_style, "bias must be contiguous");
        ep.bias = data_of<T>(*bias, "bias");
    }
    py::gil_scoped_release release;
    pyfast::gemm<T>(m, n, k, ra, rb, c, n, ep);
}

void matmul(const py::array& a, const py::array& b, py::array out,
            const std::optional<py::array>& bias, bool relu) {
    if (a.dtype().is(py::dtype::of<float>())) return matmul_typed<float>(a, b, out, bias, relu);
    if (a.dtype().is(py::dtype::of<double>())) return matmul_typed<double>(a, b, out, bias, relu);
    throw py::type_error("a must be float32 or float64, got " + std::string(py::str(a.dtype())));
}

// ---- conv ---------------------------------------------------------------------------------

using pyfast::ConvPair;
using pyfast::ConvShape4;

ConvShape4 shape4(const py::array& x, const char* name) {
    PYFAST_CHECK(x.ndim() == 4, name, " must be 4-D, got shape ", shape_of(x));
    return {x.shape(0), x.shape(1), x.shape(2), x.shape(3)};
}

// The data of an input: dtype T (else ValueError), C-contiguous.
template <typename T>
const T* conv_in(const py::array& x, const char* name) {
    const T* p = data_of<T>(x, name);
    PYFAST_CHECK(x.flags() & py::array::c_style, name, " must be C-contiguous");
    return p;
}

// An output: exactly `shape`, dtype T, C-contiguous and writeable.
template <typename T>
T* conv_out(py::array& x, const char* name, const ConvShape4& shape) {
    const bool fits = x.ndim() == 4 && x.shape(0) == shape[0] && x.shape(1) == shape[1] &&
                      x.shape(2) == shape[2] && x.shape(3) == shape[3];
    PYFAST_CHECK(fits, name, " must have shape ", pyfast::conv_shape_str(shape), ", got ",
                 shape_of(x));
    return out_data<T>(x, name);
}

template <typename T>
const T* conv_bias(const std::optional<py::array>& bias, std::int64_t channels) {
    if (!bias) return nullptr;
    PYFAST_CHECK(bias->ndim() == 1 && bias->shape(0) == channels, "bias must have shape (",
                 channels, ",), got ", shape_of(*bias));
    return conv_in<T>(*bias, "bias");
}

template <typename T>
void conv2d_typed(const py::array& x, const py::array& w, const std::optional<py::array>& bias,
                  py::array& out, const ConvPair& stride, const ConvPair& padding,
                  const ConvPair& dilation, std::int64_t groups, bool relu) {
    const auto s = pyfast::conv2d_shape("conv2d", shape4(x, "x"), shape4(w, "w"), stride, padding,
                                        dilation, groups);
    const T* xp = conv_in<T>(x, "x");
    const T* wp = conv_in<T>(w, "w");
    const T* bp = conv_bias<T>(bias, s.k);
    T* yp = conv_out<T>(out, "out", {s.n, s.k, s.oh, s.ow});
    py::gil_scoped_release release;
    pyfast::conv2d_forward<T>(s, xp, wp, bp, yp, relu);
}

template <typename T>
void conv2d_backward_typed(const py::array& gy, const std::optional<py::array>& x,
                           const py::array& w, std::optional<py::array>& gx,
                           std::optional<py::array>& gw, std::optional<py::array>& gb,
                           const ConvPair& stride, const ConvPair& padding,
                           const ConvPair& dilation, std::int64_t groups) {
    const ConvShape4 gy_shape = shape4(gy, "gy"), w_shape = shape4(w, "w");
    PYFAST_CHECK(!gw || x, "conv2d_backward: the weight gradient gw needs x");
    PYFAST_CHECK(gy_shape[1] == w_shape[0], "conv2d_backward: gy has shape ", shape_of(gy),
                 " but w has shape ", shape_of(w), " (output channels differ)");
    const T* gyp = conv_in<T>(gy, "gy");
    const T* wp = conv_in<T>(w, "w");
    // The input's shape is x's, or gx's when x is not needed; with neither, only gb is
    // asked for and gy alone decides.
    pyfast::ConvShape s{};
    s.n = gy_shape[0], s.k = gy_shape[1], s.oh = gy_shape[2], s.ow = gy_shape[3];
    if (x || gx) {
        s = pyfast::conv2d_shape("conv2d_backward", x ? shape4(*x, "x") : shape4(*gx, "gx"),
                                 w_shape, stride, padding, dilation, groups);
        const ConvShape4 want{s.n, s.k, s.oh, s.ow};
        PYFAST_CHECK(gy_shape == want, "gy must have shape ", pyfast::conv_shape_str(want),
                     ", got ", shape_of(gy));
    }
    const T* xp = x ? conv_in<T>(*x, "x") : nullptr;
    T* gxp = gx ? conv_out<T>(*gx, "gx", {s.n, s.c, s.h, s.w}) : nullptr;
    T* gwp = gw ? conv_out<T>(*gw, "gw", w_shape) : nullptr;
    T* gbp = nullptr;
    if (gb) {
        PYFAST_CHECK(gb->ndim() == 1 && gb->shape(0) == s.k, "gb must have shape (", s.k,
                     ",), got ", shape_of(*gb));
        gbp = out_data<T>(*gb, "gb");
    }
    py::gil_scoped_release release;
    pyfast::conv2d_backward<T>(s, gyp, xp, wp, gxp, gwp, gbp);
}

template <typename T>
void conv_transpose2d_typed(const py::array& x, const py::array& w,
                            const std::optional<py::array>& bias, py::array& out,
                            const ConvPair& stride, const ConvPair& padding,
                            const ConvPair& dilation, std::int64_t groups) {
    const ConvShape4 out_shape = shape4(out, "out");
    const auto s = pyfast::conv_transpose2d_shape(shape4(x, "x"), shape4(w, "w"), out_shape,
                                                  stride, padding, dilation, groups);
    const T* xp = conv_in<T>(x, "x");
    const T* wp = conv_in<T>(w, "w");
    const T* bp = conv_bias<T>(bias, s.c);
    T* op = conv_out<T>(out, "out", out_shape);
    py::gil_scoped_release release;
    pyfast::conv_transpose2d<T>(s, xp, wp, bp, op);
}

// The dtype of `w` decides; every other array must match it (data_of checks).
template <typename F>
void by_dtype(const py::array& w, F&& f) {
    if (w.dtype().is(py::dtype::of<float>())) return f(float{});
    if (w.dtype().is(py::dtype::of<double>())) return f(double{});
    throw py::type_error("w must be float32 or float64, got " + std::string(py::str(w.dtype())));
}

void conv2d(const py::array& x, const py::array& w, const std::optional<py::array>& bias,
            py::array out, const ConvPair& stride, const ConvPair& padding,
            const ConvPair& dilation, std::int64_t groups, bool relu) {
    by_dtype(w, [&](auto t) {
        conv2d_typed<decltype(t)>(x, w, bias, out, stride, padding, dilation, groups, relu);
    });
}

void conv2d_backward(const py::array& gy, const std::optional<py::array>& x, const py::array& w,
                     std::optional<py::array> gx, std::optional<py::array> gw,
                     std::optional<py::array> gb, const ConvPair& stride,
                     const ConvPair& padding, const ConvPair& dilation, std::int64_t groups) {
    by_dtype(w, [&](auto t) {
        conv2d_backward_typed<decltype(t)>(gy, x, w, gx, gw, gb, stride, padding, dilation,
                                           groups);
    });
}

void conv_transpose2d(const py::array& x, const py::array& w,
                      const std::optional<py::array>& bias, py::array out,
                      const ConvPair& stride, const ConvPair& padding,
                      const ConvPair& dilation, std::int64_t groups) {
    by_dtype(w, [&](auto t) {
        conv_transpose2d_typed<decltype(t)>(x, w, bias, out, stride, padding, dilation, groups);
    });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "pyfast native CPU kernels (C++17, OpenMP, run-time SIMD dispatch)";
    m.attr("FAMILIES") = py::make_tuple("gemm", "conv");

    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"),
          py::arg("relu"),
          "out = relu?(a @ b + bias). a (M, K) and b (K, N) with any strides; out (M, N) "
          "C-contiguous; bias (N,) or None.");

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

    m.def("set_num_threads", &pyfast::set_num_threads, py::arg("n"));
    m.def("get_num_threads", &pyfast::num_threads);
    m.def("isa", [] { return std::string(pyfast::isa_name(pyfast::active_isa())); },
          "The SIMD code path the kernels take now.");
    m.def("best_isa", [] { return std::string(pyfast::isa_name(pyfast::best_isa())); },
          "The best SIMD code path this CPU supports.");
    m.def("supported_isas", &pyfast::supported_isas);
    m.def("set_isa", &pyfast::set_isa, py::arg("name"),
          "Choose a code path (generic, avx2, avx512) no better than best_isa().");
    m.def("cpu_features", [] {
        __builtin_cpu_init();
        py::dict d;
        d["sse2"] = bool(__builtin_cpu_supports("sse2"));
        d["avx"] = bool(__builtin_cpu_supports("avx"));
        d["avx2"] = bool(__builtin_cpu_supports("avx2"));
        d["fma"] = bool(__builtin_cpu_supports("fma"));
        d["avx512f"] = bool(__builtin_cpu_supports("avx512f"));
        return d;
    });

    m.def("fma_peak_gflops", &pyfast::fma_peak_gflops, py::arg("threads"),
          py::call_guard<py::gil_scoped_release>(),
          "Measured float32 FMA peak (GFLOP/s) of the active ISA on `threads` threads.");
    m.def("copy_bandwidth_gbs", &pyfast::copy_bandwidth_gbs, py::arg("threads"), py::arg("nbytes"),
          py::call_guard<py::gil_scoped_release>(),
          "Measured copy bandwidth (GB/s, read + write) of an nbytes buffer on `threads` threads.");
}
