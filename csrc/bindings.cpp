// pyfast._C: the native CPU backend's Python face. Each binding checks what it is given
// (so a direct call cannot crash the interpreter), releases the GIL and runs the kernel.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
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

using Pair = std::array<std::int64_t, 2>;

// Stride, padding and dilation beyond this cannot describe a real array and could overflow
// the index arithmetic.
constexpr std::int64_t kMaxConvParam = std::int64_t(1) << 30;

void check_pair(const Pair& v, const char* name, std::int64_t minimum) {
    for (const std::int64_t e : v)
        PYFAST_CHECK(e >= minimum && e <= kMaxConvParam, name, " must be in ", minimum, "..",
                     kMaxConvParam, ", got (", v[0], ", ", v[1], ")");
}

void check_4d(const py::array& x, const char* name) {
    PYFAST_CHECK(x.ndim() == 4, name, " must be 4-D, got shape ", shape_of(x));
}

template <typename T>
const T* conv_in(const py::array& x, const char* name) {
    const T* p = data_of<T>(x, name);
    PYFAST_CHECK(x.flags() & py::array::c_style, name, " must be C-contiguous");
    return p;
}

// The convolution of input shape (n, c, h, w) by w (k, c/groups, kh, kw) with the output
// extent given (oh, ow); checks the parameters and that w and groups fit the channels.
pyfast::ConvShape conv_shape(const char* what, std::int64_t n, std::int64_t c, std::int64_t h,
                             std::int64_t wd, const py::array& w, std::int64_t oh,
                             std::int64_t ow, const Pair& stride, const Pair& padding,
                             const Pair& dilation, std::int64_t groups) {
    check_pair(stride, "stride", 1);
    check_pair(padding, "padding", 0);
    check_pair(dilation, "dilation", 1);
    check_4d(w, "w");
    PYFAST_CHECK(groups >= 1, "groups must be >= 1, got ", groups);
    const std::int64_t k = w.shape(0), kh = w.shape(2), kw = w.shape(3);
    PYFAST_CHECK(c % groups == 0 && k % groups == 0 && w.shape(1) * groups == c, what,
                 ": w has shape ", shape_of(w), ", which does not fit ", c,
                 " input channels with groups=", groups);
    PYFAST_CHECK(kh >= 1 && kw >= 1, what, ": w has an empty kernel, shape ", shape_of(w));
    return {n, c, h, wd, k, kh, kw, oh, ow, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1], groups};
}

// Output extent of a convolution along one axis; the kernel must fit the padded input.
std::int64_t conv_extent(const char* what, std::int64_t size, std::int64_t k, std::int64_t s,
                         std::int64_t p, std::int64_t d, const char* axis) {
    const std::int64_t span = d * (k - 1) + 1;
    PYFAST_CHECK(span <= size + 2 * p, what, ": the kernel spans ", span, " ", axis,
                 " but the padded input has only ", size + 2 * p);
    return (size + 2 * p - span) / s + 1;
}

template <typename T>
void conv2d_typed(const py::array& x, const py::array& w, const std::optional<py::array>& bias,
                  py::array& out, const Pair& stride, const Pair& padding, const Pair& dilation,
                  std::int64_t groups, bool relu) {
    check_4d(x, "x");
    const auto s = conv_shape("conv2d", x.shape(0), x.shape(1), x.shape(2), x.shape(3), w, 0, 0,
                              stride, padding, dilation, groups);
    const std::int64_t oh = conv_extent("conv2d", s.h, s.kh, s.sh, s.ph, s.dh, "rows");
    const std::int64_t ow = conv_extent("conv2d", s.w, s.kw, s.sw, s.pw, s.dw, "columns");
    PYFAST_CHECK(out.ndim() == 4 && out.shape(0) == s.n && out.shape(1) == s.k &&
                     out.shape(2) == oh && out.shape(3) == ow,
                 "out must have shape (", s.n, ", ", s.k, ", ", oh, ", ", ow, "), got ",
                 shape_of(out));
    const T* xp = conv_in<T>(x, "x");
    const T* wp = conv_in<T>(w, "w");
    const T* bp = nullptr;
    if (bias) {
        PYFAST_CHECK(bias->ndim() == 1 && bias->shape(0) == s.k, "bias must have shape (", s.k,
                     ",), got ", shape_of(*bias));
        bp = conv_in<T>(*bias, "bias");
    }
    T* yp = out_data<T>(out, "out");
    auto shape = s;
    shape.oh = oh, shape.ow = ow;
    py::gil_scoped_release release;
    pyfast::conv2d_forward<T>(shape, xp, wp, bp, yp, relu);
}

template <typename T>
void conv2d_backward_typed(const py::array& gy, const std::optional<py::array>& x,
                           const py::array& w, std::optional<py::array>& gx,
                           std::optional<py::array>& gw, std::optional<py::array>& gb,
                           const Pair& stride, const Pair& padding, const Pair& dilation,
                           std::int64_t groups) {
    check_4d(gy, "gy");
    check_4d(w, "w");
    PYFAST_CHECK(!gw || x, "conv2d_backward: the weight gradient gw needs x");
    const T* gyp = conv_in<T>(gy, "gy");
    const T* wp = conv_in<T>(w, "w");
    PYFAST_CHECK(gy.shape(1) == w.shape(0), "conv2d_backward: gy has shape ", shape_of(gy),
                 " but w has shape ", shape_of(w), " (output channels differ)");
    // The input's shape comes from x, or from gx when x is not needed.
    const py::array* input = x ? &*x : gx ? &*gx : nullptr;
    pyfast::ConvShape s{};
    if (input) {
        const char* name = x ? "x" : "gx";
        PYFAST_CHECK(input->ndim() == 4, name, " must be 4-D, got shape ", shape_of(*input));
        s = conv_shape("conv2d_backward", input->shape(0), input->shape(1), input->shape(2),
                       input->shape(3), w, 0, 0, stride, padding, dilation, groups);
        s.oh = conv_extent("conv2d_backward", s.h, s.kh, s.sh, s.ph, s.dh, "rows");
        s.ow = conv_extent("conv2d_backward", s.w, s.kw, s.sw, s.pw, s.dw, "columns");
        PYFAST_CHECK(gy.shape(0) == s.n && gy.shape(2) == s.oh && gy.shape(3) == s.ow,
                     "gy must have shape (", s.n, ", ", s.k, ", ", s.oh, ", ", s.ow, "), got ",
                     shape_of(gy));
    } else {  // only the bias gradient: gy alone decides
        s.n = gy.shape(0), s.k = gy.shape(1), s.oh = gy.shape(2), s.ow = gy.shape(3);
    }
    const T* xp = x ? conv_in<T>(*x, "x") : nullptr;
    auto output = [&](std::optional<py::array>& a, const char* name,
                      std::initializer_list<std::int64_t> shape) -> T* {
        if (!a) return nullptr;
        bool ok = a->ndim() == static_cast<py::ssize_t>(shape.size());
        std::string want = "(";
        py::ssize_t i = 0;
        for (const std::int64_t e : shape) {
            want += (i ? ", " : "") + std::to_string(e);
            ok = ok && a->shape(i++) == e;
        }
        want += shape.size() == 1 ? ",)" : ")";
        PYFAST_CHECK(ok, name, " must have shape ", want, ", got ", shape_of(*a));
        return out_data<T>(*a, name);
    };
    T* gxp = output(gx, "gx", {s.n, s.c, s.h, s.w});
    T* gwp = output(gw, "gw", {w.shape(0), w.shape(1), w.shape(2), w.shape(3)});
    T* gbp = output(gb, "gb", {s.k});
    py::gil_scoped_release release;
    pyfast::conv2d_backward<T>(s, gyp, xp, wp, gxp, gwp, gbp);
}

template <typename T>
void conv_transpose2d_typed(const py::array& x, const py::array& w,
                            const std::optional<py::array>& bias, py::array& out,
                            const Pair& stride, const Pair& padding, const Pair& dilation,
                            std::int64_t groups) {
    check_4d(x, "x");
    check_4d(w, "w");
    check_4d(out, "out");
    // The convolution this is the input gradient of: input out, output x, weight w.
    PYFAST_CHECK(w.shape(0) == x.shape(1), "conv_transpose2d: w has shape ", shape_of(w),
                 " but x has shape ", shape_of(x), " (input channels differ)");
    PYFAST_CHECK(out.shape(0) == x.shape(0) && out.shape(1) == w.shape(1) * groups,
                 "out has shape ", shape_of(out), " but x ", shape_of(x), " and w ", shape_of(w),
                 " with groups=", groups, " give ", x.shape(0), " images of ",
                 w.shape(1) * groups, " channels");
    const auto s = conv_shape("conv_transpose2d", out.shape(0), out.shape(1), out.shape(2),
                              out.shape(3), w, x.shape(2), x.shape(3), stride, padding,
                              dilation, groups);
    const std::int64_t extent[2] = {s.h, s.w}, in[2] = {s.oh, s.ow}, kernel[2] = {s.kh, s.kw};
    for (int a = 0; a < 2; ++a) {
        const std::int64_t op = extent[a] - ((in[a] - 1) * stride[a] - 2 * padding[a] +
                                             dilation[a] * (kernel[a] - 1) + 1);
        PYFAST_CHECK(op >= 0 && op < std::max(stride[a], dilation[a]), "conv_transpose2d: out has shape ",
                     shape_of(out), ", which no output_padding gives for x of shape ",
                     shape_of(x), " and w of shape ", shape_of(w));
    }
    const T* xp = conv_in<T>(x, "x");
    const T* wp = conv_in<T>(w, "w");
    const T* bp = nullptr;
    if (bias) {
        PYFAST_CHECK(bias->ndim() == 1 && bias->shape(0) == s.c, "bias must have shape (", s.c,
                     ",), got ", shape_of(*bias));
        bp = conv_in<T>(*bias, "bias");
    }
    T* op = out_data<T>(out, "out");
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
            py::array out, const Pair& stride, const Pair& padding, const Pair& dilation,
            std::int64_t groups, bool relu) {
    by_dtype(w, [&](auto t) {
        conv2d_typed<decltype(t)>(x, w, bias, out, stride, padding, dilation, groups, relu);
    });
}

void conv2d_backward(const py::array& gy, const std::optional<py::array>& x, const py::array& w,
                     std::optional<py::array> gx, std::optional<py::array> gw,
                     std::optional<py::array> gb, const Pair& stride, const Pair& padding,
                     const Pair& dilation, std::int64_t groups) {
    by_dtype(w, [&](auto t) {
        conv2d_backward_typed<decltype(t)>(gy, x, w, gx, gw, gb, stride, padding, dilation,
                                           groups);
    });
}

void conv_transpose2d(const py::array& x, const py::array& w,
                      const std::optional<py::array>& bias, py::array out, const Pair& stride,
                      const Pair& padding, const Pair& dilation, std::int64_t groups) {
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
