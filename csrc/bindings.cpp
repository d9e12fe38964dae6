// pyfast._C: the native CPU backend's Python face. Each binding checks what it is given
// (so a direct call cannot crash the interpreter), releases the GIL and runs the kernel.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <type_traits>

#include "common/checks.h"
#include "common/runtime.h"
#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/optim.h"
#include "cpu/softmax_xent.h"
#include "cpu/peak.h"
#include "cpu/elementwise.h"
#include "cpu/norm.h"
#include "cpu/pool.h"
#include "cpu/resample.h"

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


// ---- companion families (elementwise, norm, pool, resample) -------------------------------
// Arrays arrive from pf.ops already validated and C-contiguous; these checks repeat what
// memory safety needs (dtypes, shapes, contiguity, index ranges) for direct calls.

template <typename T>
const T* in_data(const py::array& x, const char* name) {
    const T* p = data_of<T>(x, name);
    PYFAST_CHECK(x.flags() & py::array::c_style, name, " must be C-contiguous");
    return p;
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

template <typename T>
const T* optional_in(const std::optional<py::array>& x, const char* name, py::ssize_t size) {
    if (!x) return nullptr;
    PYFAST_CHECK(x->ndim() == 1 && x->shape(0) == size, name, " must have shape (", size,
                 ",), got ", shape_of(*x));
    return in_data<T>(*x, name);
}

template <typename T>
T* optional_out(const std::optional<py::array>& x, const char* name, py::ssize_t size) {
    if (!x) return nullptr;
    PYFAST_CHECK(x->ndim() == 1 && x->shape(0) == size, name, " must have shape (", size,
                 ",), got ", shape_of(*x));
    py::array a = *x;
    return out_data<T>(a, name);
}

void check_same_shape(const py::array& a, const char* an, const py::array& b, const char* bn) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
    PYFAST_CHECK(same, an, " must have the shape of ", bn, " ", shape_of(b), ", got ", shape_of(a));
}

void check_ndim(const py::array& x, py::ssize_t ndim, const char* name, const char* layout) {
    PYFAST_CHECK(x.ndim() == ndim, name, " must be ", layout, ", got shape ", shape_of(x));
}

template <class F>
void with_float(const py::array& x, const char* name, F&& f) {
    if (x.dtype().is(py::dtype::of<float>())) return f(float{});
    if (x.dtype().is(py::dtype::of<double>())) return f(double{});
    throw py::type_error(std::string(name) + " must be float32 or float64, got " +
                         std::string(py::str(x.dtype())));
}

// y = kernel(x) elementwise
template <class Kernel>
void unary_op(const py::array& x, py::array& out, Kernel kernel) {
    with_float(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* px = in_data<T>(x, "x");
        check_same_shape(out, "out", x, "x");
        T* po = out_data<T>(out, "out");
        const std::int64_t n = x.size();
        py::gil_scoped_release release;
        kernel(px, po, n);
    });
}

// out = kernel(a, b) elementwise
template <class Kernel>
void binary_op(const py::array& a, const char* an, const py::array& b, const char* bn,
               py::array& out, Kernel kernel) {
    with_float(a, an, [&](auto tag) {
        using T = decltype(tag);
        const T* pa = in_data<T>(a, an);
        const T* pb = in_data<T>(b, bn);
        check_same_shape(b, bn, a, an);
        check_same_shape(out, "out", a, an);
        T* po = out_data<T>(out, "out");
        const std::int64_t n = a.size();
        py::gil_scoped_release release;
        kernel(pa, pb, po, n);
    });
}

void bind_elementwise(py::module_& m) {
    m.def("relu", [](const py::array& x, py::array out) {
        unary_op(x, out, [](auto x, auto y, std::int64_t n) { pyfast::relu(x, y, n); });
    }, py::arg("x"), py::arg("out"));
    m.def("relu_backward", [](const py::array& gy, const py::array& y, py::array out) {
        binary_op(gy, "gy", y, "y", out, [](auto g, auto y, auto o, std::int64_t n) {
            pyfast::relu_backward(g, y, o, n);
        });
    }, py::arg("gy"), py::arg("y"), py::arg("out"));
    m.def("leaky_relu", [](const py::array& x, py::array out, double slope) {
        unary_op(x, out, [slope](auto x, auto y, std::int64_t n) {
            using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
            pyfast::leaky_relu(x, y, n, static_cast<T>(slope));
        });
    }, py::arg("x"), py::arg("out"), py::arg("negative_slope"));
    m.def("leaky_relu_backward", [](const py::array& gy, const py::array& x, py::array out,
                                    double slope) {
        binary_op(gy, "gy", x, "x", out, [slope](auto g, auto x, auto o, std::int64_t n) {
            using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
            pyfast::leaky_relu_backward(g, x, o, n, static_cast<T>(slope));
        });
    }, py::arg("gy"), py::arg("x"), py::arg("out"), py::arg("negative_slope"));
    m.def("sigmoid", [](const py::array& x, py::array out) {
        unary_op(x, out, [](auto x, auto y, std::int64_t n) { pyfast::sigmoid(x, y, n); });
    }, py::arg("x"), py::arg("out"));
    m.def("sigmoid_backward", [](const py::array& gy, const py::array& y, py::array out) {
        binary_op(gy, "gy", y, "y", out, [](auto g, auto y, auto o, std::int64_t n) {
            pyfast::sigmoid_backward(g, y, o, n);
        });
    }, py::arg("gy"), py::arg("y"), py::arg("out"));
    m.def("tanh", [](const py::array& x, py::array out) {
        unary_op(x, out, [](auto x, auto y, std::int64_t n) { pyfast::tanh_fwd(x, y, n); });
    }, py::arg("x"), py::arg("out"));
    m.def("tanh_backward", [](const py::array& gy, const py::array& y, py::array out) {
        binary_op(gy, "gy", y, "y", out, [](auto g, auto y, auto o, std::int64_t n) {
            pyfast::tanh_backward(g, y, o, n);
        });
    }, py::arg("gy"), py::arg("y"), py::arg("out"));
    m.def("dropout", [](const py::array& x, py::array out, std::uint64_t seed,
                        std::uint32_t threshold, double scale) {
        PYFAST_CHECK(threshold <= (1u << 24), "threshold must be in [0, 2**24], got ", threshold);
        unary_op(x, out, [=](auto x, auto y, std::int64_t n) {
            using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
            pyfast::dropout(x, y, n, seed, threshold, static_cast<T>(scale));
        });
    }, py::arg("x"), py::arg("out"), py::arg("seed"), py::arg("threshold"), py::arg("scale"),
       "y = x * keep * scale; keep = top 24 bits of splitmix64(seed + (i+1) * golden) "
       ">= threshold");
    m.def("add", [](const py::array& a, const py::array& b, py::array out) {
        binary_op(a, "a", b, "b", out, [](auto a, auto b, auto o, std::int64_t n) {
            pyfast::add(a, b, o, n);
        });
    }, py::arg("a"), py::arg("b"), py::arg("out"));
}

void batch_norm(const py::array& x, const std::optional<py::array>& weight,
                const std::optional<py::array>& bias, const std::optional<py::array>& running_mean,
                const std::optional<py::array>& running_var, py::array y, py::array mean,
                py::array invstd, bool training, double momentum, double eps) {
    check_ndim(x, 3, "x", "(N, C, S)");
    check_same_shape(y, "y", x, "x");
    PYFAST_CHECK(std::isfinite(momentum) && momentum >= 0 && std::isfinite(eps) && eps >= 0,
                 "momentum and eps must be finite and >= 0, got ", momentum, " and ", eps);
    const py::ssize_t n = x.shape(0), c = x.shape(1), s = x.shape(2);
    PYFAST_CHECK(!training || n * s > 1, "Expected more than 1 value per channel when training, "
                 "got input size ", shape_of(x));
    PYFAST_CHECK(training || (running_mean && running_var),
                 "eval mode needs running_mean and running_var");
    with_float(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* px = in_data<T>(x, "x");
        T* py_ = out_data<T>(y, "y");
        const T* w = optional_in<T>(weight, "weight", c);
        const T* b = optional_in<T>(bias, "bias", c);
        T* rm = optional_out<T>(running_mean, "running_mean", c);
        T* rv = optional_out<T>(running_var, "running_var", c);
        T* pm = optional_out<T>(mean, "mean", c);
        T* pi = optional_out<T>(invstd, "invstd", c);
        py::gil_scoped_release release;
        pyfast::batch_norm_forward<T>(px, py_, n, c, s, w, b, rm, rv, pm, pi, training, momentum,
                                      eps);
    });
}

void batch_norm_backward(const py::array& gy, const py::array& x,
                         const std::optional<py::array>& weight, const py::array& mean,
                         const py::array& invstd, const std::optional<py::array>& gx,
                         const std::optional<py::array>& gweight,
                         const std::optional<py::array>& gbias, bool training) {
    check_ndim(x, 3, "x", "(N, C, S)");
    check_same_shape(gy, "gy", x, "x");
    const py::ssize_t n = x.shape(0), c = x.shape(1), s = x.shape(2);
    with_float(x, "x", [&](auto tag) {
        using T = decltype(tag);
        const T* pg = in_data<T>(gy, "gy");
        const T* px = in_data<T>(x, "x");
        const T* w = optional_in<T>(weight, "weight", c);
        const T* pm = optional_in<T>(std::optional<py::array>(mean), "mean", c);
        const T* pi = optional_in<T>(std::optional<py::array>(invstd), "invstd", c);
        T* pgx = nullptr;
        if (gx) {
            check_same_shape(*gx, "gx", x, "x");
            py::array a = *gx;
            pgx = out_data<T>(a, "gx");
        }
        T* pgw = optional_out<T>(gweight, "gweight", c);
        T* pgb = optional_out<T>(gbias, "gbias", c);
        py::gil_scoped_release release;
        pyfast::batch_norm_backward<T>(pg, px, n, c, s, w, pm, pi, pgx, pgw, pgb, training);
    });
}

// (N, C, H, W) input and (N, C, OH, OW) output of one pooling/resampling call
std::array<py::ssize_t, 5> planes_of(const py::array& in, const char* in_name,
                                     const py::array& out, const char* out_name) {
    check_ndim(in, 4, in_name, "(N, C, H, W)");
    check_ndim(out, 4, out_name, "(N, C, H, W)");
    PYFAST_CHECK(in.shape(0) == out.shape(0) && in.shape(1) == out.shape(1), out_name,
                 " must have the N and C of ", in_name, " ", shape_of(in), ", got ", shape_of(out));
    return {in.shape(0) * in.shape(1), in.shape(2), in.shape(3), out.shape(2), out.shape(3)};
}

pyfast::PoolGeometry pool_geometry(const std::array<py::ssize_t, 5>& p, std::int64_t kh,
                                   std::int64_t kw, std::int64_t sh, std::int64_t sw,
                                   std::int64_t ph, std::int64_t pw, std::int64_t dh,
                                   std::int64_t dw) {
    PYFAST_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1 && ph >= 0 &&
                 pw >= 0, "kernel size, stride and dilation must be >= 1 and padding >= 0");
    return {p[0], p[1], p[2], p[3], p[4], kh, kw, sh, sw, ph, pw, dh, dw};
}

const std::int64_t* index_data(const py::array& a, const char* name) {
    PYFAST_CHECK(a.dtype().is(py::dtype::of<std::int64_t>()), name, " must be int64, got ",
                 std::string(py::str(a.dtype())));
    PYFAST_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous");
    return static_cast<const std::int64_t*>(a.data());
}

void bind_pool(py::module_& m) {
    m.def("max_pool2d", [](const py::array& x, py::array y, py::array indices, std::int64_t kh,
                           std::int64_t kw, std::int64_t sh, std::int64_t sw, std::int64_t ph,
                           std::int64_t pw, std::int64_t dh, std::int64_t dw) {
        const auto g = pool_geometry(planes_of(x, "x", y, "y"), kh, kw, sh, sw, ph, pw, dh, dw);
        check_same_shape(indices, "indices", y, "y");
        PYFAST_CHECK(indices.writeable(), "indices is read-only");
        auto* idx = const_cast<std::int64_t*>(index_data(indices, "indices"));
        with_float(x, "x", [&](auto tag) {
            using T = decltype(tag);
            const T* px = in_data<T>(x, "x");
            T* py_ = out_data<T>(y, "y");
            py::gil_scoped_release release;
            pyfast::max_pool2d<T>(px, py_, idx, g);
        });
    }, py::arg("x"), py::arg("y"), py::arg("indices"), py::arg("kh"), py::arg("kw"),
       py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw"));
    m.def("max_pool2d_backward", [](const py::array& gy, const py::array& indices, py::array gx) {
        const auto g = pool_geometry(planes_of(gx, "gx", gy, "gy"), 1, 1, 1, 1, 0, 0, 1, 1);
        check_same_shape(indices, "indices", gy, "gy");
        const std::int64_t* idx = index_data(indices, "indices");
        std::int64_t bad = 0;
        with_float(gy, "gy", [&](auto tag) {
            using T = decltype(tag);
            const T* pg = in_data<T>(gy, "gy");
            T* pgx = out_data<T>(gx, "gx");
            py::gil_scoped_release release;
            bad = pyfast::max_pool2d_backward<T>(pg, idx, pgx, g);
        });
        PYFAST_CHECK(bad == 0, bad, " indices lie outside [0, ", g.h * g.w, ") (positions in a ",
                     g.h, "x", g.w, " plane); their gradients were dropped");
    }, py::arg("gy"), py::arg("indices"), py::arg("gx"));
    m.def("avg_pool2d", [](const py::array& x, py::array y, std::int64_t kh, std::int64_t kw,
                           std::int64_t sh, std::int64_t sw, std::int64_t ph, std::int64_t pw,
                           bool count_include_pad, std::int64_t divisor) {
        const auto g = pool_geometry(planes_of(x, "x", y, "y"), kh, kw, sh, sw, ph, pw, 1, 1);
        with_float(x, "x", [&](auto tag) {
            using T = decltype(tag);
            const T* px = in_data<T>(x, "x");
            T* py_ = out_data<T>(y, "y");
            py::gil_scoped_release release;
            pyfast::avg_pool2d<T>(px, py_, g, count_include_pad, divisor);
        });
    }, py::arg("x"), py::arg("y"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"),
       py::arg("ph"), py::arg("pw"), py::arg("count_include_pad"), py::arg("divisor"));
    m.def("avg_pool2d_backward", [](const py::array& gy, py::array gx, std::int64_t kh,
                                    std::int64_t kw, std::int64_t sh, std::int64_t sw,
                                    std::int64_t ph, std::int64_t pw, bool count_include_pad,
                                    std::int64_t divisor) {
        const auto g = pool_geometry(planes_of(gx, "gx", gy, "gy"), kh, kw, sh, sw, ph, pw, 1, 1);
        with_float(gy, "gy", [&](auto tag) {
            using T = decltype(tag);
            const T* pg = in_data<T>(gy, "gy");
            T* pgx = out_data<T>(gx, "gx");
            py::gil_scoped_release release;
            pyfast::avg_pool2d_backward<T>(pg, pgx, g, count_include_pad, divisor);
        });
    }, py::arg("gy"), py::arg("gx"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"),
       py::arg("ph"), py::arg("pw"), py::arg("count_include_pad"), py::arg("divisor"));
    m.def("adaptive_avg_pool2d", [](const py::array& x, py::array y) {
        const auto g = pool_geometry(planes_of(x, "x", y, "y"), 1, 1, 1, 1, 0, 0, 1, 1);
        PYFAST_CHECK(g.h >= 1 && g.w >= 1 && g.oh >= 1 && g.ow >= 1,
                     "adaptive_avg_pool2d needs non-empty planes, got x ", shape_of(x), " and y ",
                     shape_of(y));
        with_float(x, "x", [&](auto tag) {
            using T = decltype(tag);
            const T* px = in_data<T>(x, "x");
            T* py_ = out_data<T>(y, "y");
            py::gil_scoped_release release;
            pyfast::adaptive_avg_pool2d<T>(px, py_, g);
        });
    }, py::arg("x"), py::arg("y"));
    m.def("adaptive_avg_pool2d_backward", [](const py::array& gy, py::array gx) {
        const auto g = pool_geometry(planes_of(gx, "gx", gy, "gy"), 1, 1, 1, 1, 0, 0, 1, 1);
        PYFAST_CHECK(g.h >= 1 && g.w >= 1 && g.oh >= 1 && g.ow >= 1,
                     "adaptive_avg_pool2d_backward needs non-empty planes, got gy ", shape_of(gy),
                     " and gx ", shape_of(gx));
        with_float(gy, "gy", [&](auto tag) {
            using T = decltype(tag);
            const T* pg = in_data<T>(gy, "gy");
            T* pgx = out_data<T>(gx, "gx");
            py::gil_scoped_release release;
            pyfast::adaptive_avg_pool2d_backward<T>(pg, pgx, g);
        });
    }, py::arg("gy"), py::arg("gx"));
}

// A table of `size` source indices, each in [0, limit).
const std::int64_t* index_table(const py::array& t, const char* name, py::ssize_t size,
                                py::ssize_t limit) {
    PYFAST_CHECK(t.ndim() == 1 && t.shape(0) == size, name, " must have shape (", size, ",), got ",
                 shape_of(t));
    const std::int64_t* p = index_data(t, name);
    for (py::ssize_t i = 0; i < size; ++i)
        PYFAST_CHECK(p[i] >= 0 && p[i] < limit, name, "[", i, "] = ", p[i], " is outside [0, ",
                     limit, ")");
    return p;
}

template <typename T>
const T* weight_table(const py::array& t, const char* name, py::ssize_t size) {
    PYFAST_CHECK(t.ndim() == 1 && t.shape(0) == size, name, " must have shape (", size, ",), got ",
                 shape_of(t));
    return in_data<T>(t, name);
}

void bind_resample(py::module_& m) {
    // forward: (x, y) = (input, output); backward: (gy, gx) = (output grad, input grad)
    m.def("upsample_nearest2d", [](const py::array& x, py::array y, const py::array& src_h,
                                   const py::array& src_w) {
        const auto p = planes_of(x, "x", y, "y");
        const pyfast::ResampleGeometry g{p[0], p[1], p[2], p[3], p[4]};
        const auto* th = index_table(src_h, "src_h", g.oh, g.h);
        const auto* tw = index_table(src_w, "src_w", g.ow, g.w);
        with_float(x, "x", [&](auto tag) {
            using T = decltype(tag);
            const T* px = in_data<T>(x, "x");
            T* py_ = out_data<T>(y, "y");
            py::gil_scoped_release release;
            pyfast::upsample_nearest2d<T>(px, py_, th, tw, g);
        });
    }, py::arg("x"), py::arg("y"), py::arg("src_h"), py::arg("src_w"));
    m.def("upsample_nearest2d_backward", [](const py::array& gy, py::array gx,
                                            const py::array& src_h, const py::array& src_w) {
        const auto p = planes_of(gx, "gx", gy, "gy");
        const pyfast::ResampleGeometry g{p[0], p[1], p[2], p[3], p[4]};
        const auto* th = index_table(src_h, "src_h", g.oh, g.h);
        const auto* tw = index_table(src_w, "src_w", g.ow, g.w);
        with_float(gy, "gy", [&](auto tag) {
            using T = decltype(tag);
            const T* pg = in_data<T>(gy, "gy");
            T* pgx = out_data<T>(gx, "gx");
            py::gil_scoped_release release;
            pyfast::upsample_nearest2d_backward<T>(pg, pgx, th, tw, g);
        });
    }, py::arg("gy"), py::arg("gx"), py::arg("src_h"), py::arg("src_w"));
    auto bilinear = [](bool backward, const py::array& in, py::array out, const py::array& h0,
                       const py::array& h1, const py::array& lh0, const py::array& lh1,
                       const py::array& w0, const py::array& w1, const py::array& lw0,
                       const py::array& lw1) {
        const char* in_name = backward ? "gy" : "x";
        const char* out_name = backward ? "gx" : "y";
        const auto p = backward ? planes_of(out, out_name, in, in_name)
                                : planes_of(in, in_name, out, out_name);
        const pyfast::ResampleGeometry g{p[0], p[1], p[2], p[3], p[4]};
        const pyfast::BilinearTables t{index_table(h0, "h0", g.oh, g.h),
                                       index_table(h1, "h1", g.oh, g.h),
                                       index_table(w0, "w0", g.ow, g.w),
                                       index_table(w1, "w1", g.ow, g.w)};
        with_float(in, in_name, [&](auto tag) {
            using T = decltype(tag);
            const T* pin = in_data<T>(in, in_name);
            T* pout = out_data<T>(out, out_name);
            const T* a = weight_table<T>(lh0, "lh0", g.oh);
            const T* b = weight_table<T>(lh1, "lh1", g.oh);
            const T* c = weight_table<T>(lw0, "lw0", g.ow);
            const T* d = weight_table<T>(lw1, "lw1", g.ow);
            py::gil_scoped_release release;
            if (backward)
                pyfast::upsample_bilinear2d_backward<T>(pin, pout, t, a, b, c, d, g);
            else
                pyfast::upsample_bilinear2d<T>(pin, pout, t, a, b, c, d, g);
        });
    };
    m.def("upsample_bilinear2d", [bilinear](const py::array& x, py::array y, const py::array& h0,
                                            const py::array& h1, const py::array& lh0,
                                            const py::array& lh1, const py::array& w0,
                                            const py::array& w1, const py::array& lw0,
                                            const py::array& lw1) {
        bilinear(false, x, y, h0, h1, lh0, lh1, w0, w1, lw0, lw1);
    }, py::arg("x"), py::arg("y"), py::arg("h0"), py::arg("h1"), py::arg("lh0"), py::arg("lh1"),
       py::arg("w0"), py::arg("w1"), py::arg("lw0"), py::arg("lw1"));
    m.def("upsample_bilinear2d_backward", [bilinear](const py::array& gy, py::array gx,
                                                     const py::array& h0, const py::array& h1,
                                                     const py::array& lh0, const py::array& lh1,
                                                     const py::array& w0, const py::array& w1,
                                                     const py::array& lw0, const py::array& lw1) {
        bilinear(true, gy, gx, h0, h1, lh0, lh1, w0, w1, lw0, lw1);
    }, py::arg("gy"), py::arg("gx"), py::arg("h0"), py::arg("h1"), py::arg("lh0"), py::arg("lh1"),
       py::arg("w0"), py::arg("w1"), py::arg("lw0"), py::arg("lw1"));
}

// ---- softmax_xent -----------------------------------------------------------------------

std::string shape_str(const std::vector<py::ssize_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

// x's data as T after checking dtype, shape and C-contiguity.
template <typename T>
const T* c_array(const py::array& x, const char* name, const std::vector<py::ssize_t>& shape) {
    const T* p = data_of<T>(x, name);
    bool same = x.ndim() == static_cast<py::ssize_t>(shape.size());
    for (py::ssize_t i = 0; same && i < x.ndim(); ++i) same = x.shape(i) == shape[i];
    PYFAST_CHECK(same, name, " must have shape ", shape_str(shape), ", got ", shape_of(x));
    PYFAST_CHECK(x.flags() & py::array::c_style, name, " must be C-contiguous");
    return p;
}

template <typename T>
T* c_array_out(py::array& x, const char* name, const std::vector<py::ssize_t>& shape) {
    c_array<T>(x, name, shape);
    PYFAST_CHECK(x.writeable(), name, " is read-only");
    return static_cast<T*>(x.mutable_data());
}

std::string dtype_str(const py::array& x) { return std::string(py::str(x.dtype())); }

// Calls f(T{}) with T the float type of x: TypeError for anything but float32/float64.
template <class F>
decltype(auto) on_float_type(const py::array& x, const char* name, F&& f) {
    if (x.dtype().is(py::dtype::of<float>())) return f(float{});
    if (x.dtype().is(py::dtype::of<double>())) return f(double{});
    throw py::type_error(std::string(name) + " must be float32 or float64, got " + dtype_str(x));
}

void check_finite(double v, const char* name) {
    PYFAST_CHECK(std::isfinite(v), name, " must be finite, got ", v);
}

void softmax(const py::array& x, py::array out, bool log) {
    PYFAST_CHECK(x.ndim() == 3, "x must be 3-D (A, C, B), softmax over axis 1; got shape ",
                 shape_of(x));
    const std::vector<py::ssize_t> shape{x.shape(0), x.shape(1), x.shape(2)};
    on_float_type(x, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = c_array<T>(x, "x", shape);
        T* po = c_array_out<T>(out, "out", shape);
        py::gil_scoped_release release;
        pyfast::softmax<T>(px, po, shape[0], shape[1], shape[2], log);
    });
}

void softmax_xent(const py::array& logits, const py::array& labels,
                  const std::optional<py::array>& weight, std::int64_t ignore_index,
                  double smoothing, double grad_scale, py::array dlogits, py::array losses) {
    PYFAST_CHECK(logits.ndim() == 3, "logits must be 3-D (N, C, S), got shape ", shape_of(logits));
    const py::ssize_t n = logits.shape(0), c = logits.shape(1), s = logits.shape(2);
    PYFAST_CHECK(c >= 1 && c <= INT32_MAX, "logits must have 1 to 2^31 - 1 classes (axis 1), "
                 "got shape ", shape_of(logits));
    PYFAST_CHECK(std::isfinite(smoothing) && smoothing >= 0 && smoothing <= 1,
                 "smoothing must be in [0, 1], got ", smoothing);
    check_finite(grad_scale, "grad_scale");
    const auto* py_labels = c_array<std::int64_t>(labels, "labels", {n, s});
    on_float_type(logits, "logits", [&](auto zero) {
        using T = decltype(zero);
        pyfast::XentArgs<T> a;
        a.logits = c_array<T>(logits, "logits", {n, c, s});
        a.weight = weight ? c_array<T>(*weight, "weight", {c}) : nullptr;
        a.dlogits = c_array_out<T>(dlogits, "dlogits", {n, c, s});
        a.losses = c_array_out<T>(losses, "losses", {n, s});
        a.labels = py_labels;
        a.ignore_index = ignore_index;
        a.smoothing = smoothing;
        a.grad_scale = grad_scale;
        a.n = n;
        a.c = c;
        a.s = s;
        py::gil_scoped_release release;
        // The labels index the logits: every one is checked before anything is read or written.
        const std::int64_t bad = pyfast::first_bad_label(py_labels, n * s, c, ignore_index);
        if (bad >= 0)
            fail("labels must be in [0, ", c, ") or ignore_index=", ignore_index, "; labels[",
                 bad / s, ", ", bad % s, "] is ", py_labels[bad]);
        pyfast::softmax_xent<T>(a);
    });
}

// An operand that element i of a flat (m) array reads at [i % period]: flat, C-contiguous,
// its size dividing m.
template <typename T>
const T* periodic(const std::optional<py::array>& x, const char* name, py::ssize_t m,
                  std::int64_t* period) {
    *period = 0;
    if (!x) return nullptr;
    PYFAST_CHECK(x->ndim() == 1 && x->shape(0) >= 1 && m % x->shape(0) == 0, name,
                 " must be 1-D with a size that divides ", m, ", got shape ", shape_of(*x));
    *period = x->shape(0);
    return c_array<T>(*x, name, {x->shape(0)});
}

py::object bce_with_logits(const py::array& x, const py::array& y,
                           const std::optional<py::array>& weight,
                           const std::optional<py::array>& pos_weight, double grad_scale,
                           py::array grad, std::optional<py::array> losses) {
    PYFAST_CHECK(x.ndim() == 1, "x must be 1-D, got shape ", shape_of(x));
    check_finite(grad_scale, "grad_scale");
    const py::ssize_t m = x.shape(0);
    return on_float_type(x, "x", [&](auto zero) -> py::object {
        using T = decltype(zero);
        pyfast::BceArgs<T> a;
        a.x = c_array<T>(x, "x", {m});
        a.y = c_array<T>(y, "y", {m});
        a.weight = periodic<T>(weight, "weight", m, &a.weight_period);
        a.pos_weight = periodic<T>(pos_weight, "pos_weight", m, &a.pos_weight_period);
        a.grad = c_array_out<T>(grad, "grad", {m});
        a.losses = losses ? c_array_out<T>(*losses, "losses", {m}) : nullptr;
        a.grad_scale = grad_scale;
        a.m = m;
        double total;
        {
            py::gil_scoped_release release;
            total = pyfast::bce_with_logits<T>(a);
        }
        return losses ? py::object(py::none()) : py::object(py::float_(total));
    });
}

py::object mse(const py::array& x, const py::array& y, double grad_scale, py::array grad,
               std::optional<py::array> losses) {
    PYFAST_CHECK(x.ndim() == 1, "x must be 1-D, got shape ", shape_of(x));
    check_finite(grad_scale, "grad_scale");
    const py::ssize_t m = x.shape(0);
    return on_float_type(x, "x", [&](auto zero) -> py::object {
        using T = decltype(zero);
        const T* px = c_array<T>(x, "x", {m});
        const T* py_ = c_array<T>(y, "y", {m});
        T* pg = c_array_out<T>(grad, "grad", {m});
        T* pl = losses ? c_array_out<T>(*losses, "losses", {m}) : nullptr;
        double total;
        {
            py::gil_scoped_release release;
            total = pyfast::mse<T>(px, py_, grad_scale, pg, pl, m);
        }
        return losses ? py::object(py::none()) : py::object(py::float_(total));
    });
}

// ---- optim ------------------------------------------------------------------------------

// A list argument of the optimizer kernels: numpy arrays, one per parameter tensor.
std::vector<py::array> array_list(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
        throw py::type_error(std::string(name) + " must be a list of numpy arrays, got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    std::vector<py::array> out;
    for (const py::handle item : py::reinterpret_borrow<py::sequence>(obj)) {
        if (!py::isinstance<py::array>(item))
            throw py::type_error(std::string(name) + "[" + std::to_string(out.size()) +
                                 "] must be a numpy array, got " +
                                 std::string(py::str(py::type::handle_of(item).attr("__name__"))));
        out.push_back(py::reinterpret_borrow<py::array>(item));
    }
    return out;
}

std::vector<py::ssize_t> shape_vec(const py::array& x) {
    return std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim());
}

// The checked tensors of one optimizer call: params, grads and up to three state lists, all
// of one float dtype, C-contiguous, each entry shaped like its parameter; params and states
// writable. Nothing is touched until every check has passed.
struct OptimLists {
    std::vector<py::array> params, grads;
    std::vector<py::array> states[3];
    bool has_state[3] = {false, false, false};

    OptimLists(const py::handle& params_obj, const py::handle& grads_obj) {
        params = array_list(params_obj, "params");
        grads = array_list(grads_obj, "grads");
        PYFAST_CHECK(!params.empty(), "params is an empty list");
        PYFAST_CHECK(grads.size() == params.size(), "grads has ", grads.size(),
                     " arrays but params has ", params.size());
    }

    void add_state(int slot, const py::handle& obj, const char* name, bool required,
                   const char* why) {
        if (obj.is_none()) {
            PYFAST_CHECK(!required, name, " is required ", why);
            return;
        }
        states[slot] = array_list(obj, name);
        PYFAST_CHECK(states[slot].size() == params.size(), name, " has ", states[slot].size(),
                     " arrays but params has ", params.size());
        has_state[slot] = true;
    }

    template <typename T>
    std::vector<pyfast::OptimTensor<T>> tensors(const char* const names[3]) {
        std::vector<pyfast::OptimTensor<T>> out;
        for (size_t i = 0; i < params.size(); ++i) {
            const std::string idx = "[" + std::to_string(i) + "]";
            const auto shape = shape_vec(params[i]);
            pyfast::OptimTensor<T> t{};
            t.param = c_array_out<T>(params[i], ("params" + idx).c_str(), shape);
            t.grad = c_array<T>(grads[i], ("grads" + idx).c_str(), shape);
            for (int j = 0; j < 3; ++j)
                t.state[j] = has_state[j]
                                 ? c_array_out<T>(states[j][i], (names[j] + idx).c_str(), shape)
                                 : nullptr;
            t.size = params[i].size();
            out.push_back(t);
        }
        return out;
    }

    template <class F>
    void run(const char* const names[3], F&& f) {
        on_float_type(params[0], "params[0]", [&](auto zero) {
            using T = decltype(zero);
            auto list = tensors<T>(names);
            py::gil_scoped_release release;
            f(list);
        });
    }
};

void check_hyper(double v, const char* name, double low, double high, bool high_open = false) {
    PYFAST_CHECK(std::isfinite(v) && v >= low && (high_open ? v < high : v <= high), name,
                 " must be a finite number in [", low, ", ", high, high_open ? ")" : "]",
                 ", got ", v);
}

constexpr double kInf = HUGE_VAL;

void sgd_step(const py::object& params, const py::object& grads, const py::object& bufs,
              double lr, double momentum, double dampening, bool nesterov, double weight_decay,
              bool first) {
    check_hyper(lr, "lr", 0, kInf);
    check_hyper(momentum, "momentum", 0, kInf);
    check_hyper(dampening, "dampening", 0, kInf);
    check_hyper(weight_decay, "weight_decay", 0, kInf);
    PYFAST_CHECK(!nesterov || (momentum > 0 && dampening == 0),
                 "nesterov needs momentum > 0 and dampening == 0");
    OptimLists lists(params, grads);
    lists.add_state(0, bufs, "momentum_bufs", momentum != 0, "with momentum > 0");
    if (momentum == 0) lists.has_state[0] = false;  // not read: no momentum
    const pyfast::SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, first};
    static const char* const names[3] = {"momentum_bufs", "", ""};
    lists.run(names, [&](const auto& list) { pyfast::sgd_step(list, h); });
}

void rmsprop_step(const py::object& params, const py::object& grads,
                  const py::object& square_avgs, const py::object& bufs,
                  const py::object& grad_avgs, double lr, double alpha, double eps,
                  double weight_decay, double momentum, bool centered) {
    check_hyper(lr, "lr", 0, kInf);
    check_hyper(alpha, "alpha", 0, 1);
    check_hyper(eps, "eps", 0, kInf);
    check_hyper(weight_decay, "weight_decay", 0, kInf);
    check_hyper(momentum, "momentum", 0, kInf);
    OptimLists lists(params, grads);
    lists.add_state(0, square_avgs, "square_avgs", true, "");
    lists.add_state(1, bufs, "momentum_bufs", momentum > 0, "with momentum > 0");
    lists.add_state(2, grad_avgs, "grad_avgs", centered, "with centered=True");
    if (momentum == 0) lists.has_state[1] = false;
    if (!centered) lists.has_state[2] = false;
    const pyfast::RmspropHyper h{lr, alpha, eps, weight_decay, momentum, centered};
    static const char* const names[3] = {"square_avgs", "momentum_bufs", "grad_avgs"};
    lists.run(names, [&](const auto& list) { pyfast::rmsprop_step(list, h); });
}

void adam_step(const py::object& params, const py::object& grads, const py::object& exp_avgs,
               const py::object& exp_avg_sqs, const py::object& max_exp_avg_sqs,
               std::int64_t step, double lr, double beta1, double beta2, double eps,
               double weight_decay, bool decoupled, bool amsgrad) {
    PYFAST_CHECK(step >= 1, "step must be >= 1 (steps count from 1), got ", step);
    check_hyper(lr, "lr", 0, kInf);
    check_hyper(beta1, "beta1", 0, 1, true);
    check_hyper(beta2, "beta2", 0, 1, true);
    check_hyper(eps, "eps", 0, kInf);
    check_hyper(weight_decay, "weight_decay", 0, kInf);
    OptimLists lists(params, grads);
    lists.add_state(0, exp_avgs, "exp_avgs", true, "");
    lists.add_state(1, exp_avg_sqs, "exp_avg_sqs", true, "");
    lists.add_state(2, max_exp_avg_sqs, "max_exp_avg_sqs", amsgrad, "with amsgrad=True");
    if (!amsgrad) lists.has_state[2] = false;
    const pyfast::AdamHyper h{lr, beta1, beta2, eps, weight_decay, step, decoupled, amsgrad};
    static const char* const names[3] = {"exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"};
    lists.run(names, [&](const auto& list) { pyfast::adam_step(list, h); });
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
    m.attr("FAMILIES") = py::make_tuple("gemm", "conv", "softmax_xent", "optim");

    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"),
          py::arg("relu"),
          "out = relu?(a @ b + bias). a (M, K) and b (K, N) with any strides; out (M, N) "
          "C-contiguous; bias (N,) or None.");

    m.def("softmax", &softmax, py::arg("x"), py::arg("out"), py::arg("log"),
          "out = softmax (log=True: log-softmax) of x over axis 1; x and out (A, C, B) "
          "C-contiguous, one float dtype.");
    m.def("softmax_xent", &softmax_xent, py::arg("logits"), py::arg("labels"), py::arg("weight"),
          py::arg("ignore_index"), py::arg("smoothing"), py::arg("grad_scale"),
          py::arg("dlogits"), py::arg("losses"),
          "Per-position softmax cross-entropy losses (N, S) and grad_scale * their gradient "
          "(N, C, S) in one pass. labels (N, S) int64 in [0, C) or ignore_index (checked); "
          "weight (C,) or None; dlogits may be logits itself.");
    m.def("bce_with_logits", &bce_with_logits, py::arg("x"), py::arg("y"), py::arg("weight"),
          py::arg("pos_weight"), py::arg("grad_scale"), py::arg("grad"), py::arg("losses"),
          "Binary cross-entropy with logits over flat (M,) arrays and grad_scale * its gradient; "
          "weight and pos_weight (P,) with P dividing M (element i takes [i % P]) or None. "
          "Returns the loss sum when losses is None.");
    m.def("mse", &mse, py::arg("x"), py::arg("y"), py::arg("grad_scale"), py::arg("grad"),
          py::arg("losses"),
          "(x - y)^2 over flat (M,) arrays and grad_scale * its gradient; returns the loss sum "
          "when losses is None.");
    m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grads"), py::arg("momentum_bufs"),
          py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
          py::arg("weight_decay"), py::arg("first"),
          "torch.optim.SGD's step in place over lists of arrays (one parallel region); first: "
          "step 1, the momentum buffers take the gradients.");
    m.def("rmsprop_step", &rmsprop_step, py::arg("params"), py::arg("grads"),
          py::arg("square_avgs"), py::arg("momentum_bufs"), py::arg("grad_avgs"), py::arg("lr"),
          py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
          py::arg("centered"), "torch.optim.RMSprop's step in place over lists of arrays.");
    m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("step"), py::arg("lr"),
          py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("decoupled"), py::arg("amsgrad"),
          "torch.optim.Adam's (decoupled: AdamW's) step in place over lists of arrays.");
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

    // companion families
    m.attr("FAMILIES") = m.attr("FAMILIES").attr("__add__")(
        py::make_tuple("norm", "pool", "resample", "elementwise"));
    bind_elementwise(m);
    m.def("batch_norm", &batch_norm, py::arg("x"), py::arg("weight"), py::arg("bias"),
          py::arg("running_mean"), py::arg("running_var"), py::arg("y"), py::arg("mean"),
          py::arg("invstd"), py::arg("training"), py::arg("momentum"), py::arg("eps"),
          "Batch norm of x (N, C, S) into y; mean/invstd (C,) receive the statistics used.");
    m.def("batch_norm_backward", &batch_norm_backward, py::arg("gy"), py::arg("x"),
          py::arg("weight"), py::arg("mean"), py::arg("invstd"), py::arg("gx"),
          py::arg("gweight"), py::arg("gbias"), py::arg("training"));
    bind_pool(m);
    bind_resample(m);
}
