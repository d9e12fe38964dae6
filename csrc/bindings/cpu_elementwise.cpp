// pyfast._C's elementwise family: activations and their gradients, dropout and add, over
// arrays of any shape taken flat (every operand C-contiguous and of one shape).

#include "bindings/arrays.h"
#include "cpu/elementwise.h"

namespace pyfast::binding {
namespace {

// out = kernel(x) elementwise
template <class Kernel>
void unary_op(const py::array& x, py::array& out, Kernel kernel) {
    check_same_shape(out, "out", x, "x");
    on_in_out(x, "x", out, "out", [&](auto px, auto po) {
        py::gil_scoped_release release;
        kernel(px, po, static_cast<std::int64_t>(x.size()));
    });
}

// out = kernel(a, b) elementwise
template <class Kernel>
void binary_op(const py::array& a, const char* an, const py::array& b, const char* bn,
               py::array& out, Kernel kernel) {
    check_same_shape(b, bn, a, an);
    check_same_shape(out, "out", a, an);
    on_float_type(a, an, [&](auto zero) {
        using T = decltype(zero);
        const T* pa = input<T>(a, an);
        const T* pb = input<T>(b, bn);
        T* po = output<T>(out, "out");
        py::gil_scoped_release release;
        kernel(pa, pb, po, static_cast<std::int64_t>(a.size()));
    });
}

// Binds name(x, out): out = kernel(x, out, n).
template <class Kernel>
void def_activation(py::module_& m, const char* name, Kernel kernel) {
    m.def(name, [kernel](const py::array& x, py::array out) { unary_op(x, out, kernel); },
          py::arg("x"), py::arg("out"));
}

// Binds name(gy, saved, out): out = kernel(gy, saved, out, n), the gradient of an activation
// from what its forward pass kept (its output y, or its input x).
template <class Kernel>
void def_activation_backward(py::module_& m, const char* name, const char* saved,
                             Kernel kernel) {
    m.def(name, [kernel, saved](const py::array& gy, const py::array& s, py::array out) {
        binary_op(gy, "gy", s, saved, out, kernel);
    }, py::arg("gy"), py::arg(saved), py::arg("out"));
}

}  // namespace

void bind_elementwise(py::module_& m) {
    def_activation(m, "relu", [](auto x, auto y, auto n) { pyfast::relu(x, y, n); });
    def_activation_backward(m, "relu_backward", "y", [](auto gy, auto y, auto gx, auto n) {
        pyfast::relu_backward(gy, y, gx, n);
    });
    def_activation(m, "sigmoid", [](auto x, auto y, auto n) { pyfast::sigmoid(x, y, n); });
    def_activation_backward(m, "sigmoid_backward", "y", [](auto gy, auto y, auto gx, auto n) {
        pyfast::sigmoid_backward(gy, y, gx, n);
    });
    def_activation(m, "tanh", [](auto x, auto y, auto n) { pyfast::tanh_fwd(x, y, n); });
    def_activation_backward(m, "tanh_backward", "y", [](auto gy, auto y, auto gx, auto n) {
        pyfast::tanh_backward(gy, y, gx, n);
    });
    m.def("leaky_relu", [](const py::array& x, py::array out, double slope) {
        unary_op(x, out, [slope](auto px, auto py_, auto n) {
            pyfast::leaky_relu(px, py_, n, static_cast<elem_t<decltype(py_)>>(slope));
        });
    }, py::arg("x"), py::arg("out"), py::arg("negative_slope"));
    m.def("leaky_relu_backward", [](const py::array& gy, const py::array& x, py::array out,
                                    double slope) {
        binary_op(gy, "gy", x, "x", out, [slope](auto pgy, auto px, auto pgx, auto n) {
            pyfast::leaky_relu_backward(pgy, px, pgx, n, static_cast<elem_t<decltype(pgx)>>(slope));
        });
    }, py::arg("gy"), py::arg("x"), py::arg("out"), py::arg("negative_slope"));
    m.def("dropout", [](const py::array& x, py::array out, std::uint64_t seed,
                        std::uint32_t threshold, double scale) {
        PYFAST_CHECK(threshold <= (1u << 24), "threshold must be in [0, 2**24], got ", threshold);
        unary_op(x, out, [=](auto px, auto py_, auto n) {
            pyfast::dropout(px, py_, n, seed, threshold, static_cast<elem_t<decltype(py_)>>(scale));
        });
    }, py::arg("x"), py::arg("out"), py::arg("seed"), py::arg("threshold"), py::arg("scale"),
       "y = x * keep * scale; keep = top 24 bits of splitmix64(seed + (i+1) * golden) "
       ">= threshold");
    m.def("add", [](const py::array& a, const py::array& b, py::array out) {
        binary_op(a, "a", b, "b", out, [](auto pa, auto pb, auto py_, auto n) {
            pyfast::add(pa, pb, py_, n);
        });
    }, py::arg("a"), py::arg("b"), py::arg("out"));
}

}  // namespace pyfast::binding
