// Argument plumbing of pyfast._C's bindings: numpy arrays in, typed pointers out. Every
// check runs before a kernel touches memory, so a direct call with bad arguments raises
// (ValueError naming the argument and the shapes; TypeError for a dtype no kernel takes)
// instead of crashing the interpreter. An input is of the call's dtype and C-contiguous; an
// output is that and writeable too.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // std::optional<py::array> arguments

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings/common.h"

namespace pyfast::binding {

inline std::vector<py::ssize_t> shape_of(const py::array& x) {
    return {x.shape(), x.shape() + x.ndim()};
}

inline std::string shape_str(const py::array& x) { return shape_str(shape_of(x)); }

inline std::string dtype_str(const py::array& x) { return std::string(py::str(x.dtype())); }

// Calls f(T{}) with T the float type of x: TypeError for anything but float32/float64. The
// other arrays of the call must then be T too (input and output check that).
template <class F>
decltype(auto) on_float_type(const py::array& x, const char* name, F&& f) {
    if (x.dtype().is(py::dtype::of<float>())) return f(float{});
    if (x.dtype().is(py::dtype::of<double>())) return f(double{});
    throw py::type_error(std::string(name) + " must be float32 or float64, got " + dtype_str(x));
}

// ---- shapes --------------------------------------------------------------------------------

// layout: what the dimensions are, e.g. "2-D" or "(N, C, H, W)".
inline void check_ndim(const py::array& x, py::ssize_t ndim, const char* name,
                       const char* layout) {
    PYFAST_CHECK(x.ndim() == ndim, name, " must be ", layout, ", got shape ", shape_str(x));
}

// shape: a braced list ({m, n}, nothing allocated on the fast path) or a vector.
template <class Shape = std::initializer_list<py::ssize_t>>
void check_shape(const py::array& x, const char* name, const Shape& shape) {
    bool same = x.ndim() == static_cast<py::ssize_t>(shape.size());
    for (py::ssize_t i = 0; same && i < x.ndim(); ++i) same = x.shape(i) == shape.begin()[i];
    PYFAST_CHECK(same, name, " must have shape ", shape_str(shape), ", got ", shape_str(x));
}

inline void check_same_shape(const py::array& a, const char* an, const py::array& b,
                             const char* bn) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
    PYFAST_CHECK(same, an, " must have the shape of ", bn, " ", shape_str(b), ", got ",
                 shape_str(a));
}

// ---- data ----------------------------------------------------------------------------------

// x's data as T: its dtype is T exactly and its strides are whole elements (any layout).
template <typename T>
const T* data_of(const py::array& x, const char* name) {
    PYFAST_CHECK(x.dtype().is(py::dtype::of<T>()), name, " must have dtype ",
                 std::string(py::str(py::dtype::of<T>())), ", got ", dtype_str(x));
    for (py::ssize_t i = 0; i < x.ndim(); ++i)
        PYFAST_CHECK(x.strides(i) % static_cast<py::ssize_t>(sizeof(T)) == 0, name,
                     " has strides that are not a multiple of its item size");
    return static_cast<const T*>(x.data());
}

template <typename T>
const T* input(const py::array& x, const char* name) {
    const T* p = data_of<T>(x, name);
    PYFAST_CHECK(x.flags() & py::array::c_style, name, " must be C-contiguous");
    return p;
}

template <typename T, class Shape = std::initializer_list<py::ssize_t>>
const T* input(const py::array& x, const char* name, const Shape& shape) {
    check_shape(x, name, shape);
    return input<T>(x, name);
}

template <typename T>
T* output(py::array& x, const char* name) {
    data_of<T>(x, name);
    PYFAST_CHECK(x.writeable(), name, " is read-only");
    PYFAST_CHECK(x.flags() & py::array::c_style, name, " must be C-contiguous");
    return static_cast<T*>(x.mutable_data());
}

template <typename T, class Shape = std::initializer_list<py::ssize_t>>
T* output(py::array& x, const char* name, const Shape& shape) {
    check_shape(x, name, shape);
    return output<T>(x, name);
}

// An optional (size,) vector: nullptr when None.
template <typename T>
const T* optional_input(const std::optional<py::array>& x, const char* name, py::ssize_t size) {
    return x ? input<T>(*x, name, {size}) : nullptr;
}

template <typename T>
T* optional_output(const std::optional<py::array>& x, const char* name, py::ssize_t size) {
    if (!x) return nullptr;
    py::array a = *x;  // a handle to the same array, for mutable_data()
    return output<T>(a, name, {size});
}

// The shape of most calls: one float input and one output of its dtype. Calls f(in, out)
// with their typed data; f runs any further checks, then releases the GIL for the kernel.
template <class F>
decltype(auto) on_in_out(const py::array& in, const char* in_name, py::array& out,
                         const char* out_name, F&& f) {
    return on_float_type(in, in_name, [&](auto zero) {
        using T = decltype(zero);
        const T* pin = input<T>(in, in_name);
        T* pout = output<T>(out, out_name);
        return f(pin, pout);
    });
}

// The element type behind a typed pointer from input/output (inside f of on_in_out).
template <typename P>
using elem_t = std::remove_const_t<std::remove_pointer_t<P>>;

// ---- pooling and resampling ----------------------------------------------------------------

// The arrays of a pooling or resampling call (referenced, not copied), named as Python names
// them: forward x (N, C, H, W) -> y (N, C, OH, OW), backward gy (y's shape) -> gx (x's). The
// two share N and C.
struct PlaneCall {
    bool backward;
    const py::array& in;
    py::array& out;
    const char* in_name;
    const char* out_name;
    std::array<py::ssize_t, 5> planes;  // {N * C, H, W, OH, OW}

    PlaneCall(bool backward_, const py::array& in_, py::array& out_)
        : backward(backward_), in(in_), out(out_), in_name(backward ? "gy" : "x"),
          out_name(backward ? "gx" : "y") {
        const py::array& xs = backward ? out : in;  // x, or gx of its shape
        const py::array& ys = backward ? in : out;  // y, or gy of its shape
        const char* xs_name = backward ? out_name : in_name;
        const char* ys_name = backward ? in_name : out_name;
        check_ndim(xs, 4, xs_name, "(N, C, H, W)");
        check_ndim(ys, 4, ys_name, "(N, C, H, W)");
        PYFAST_CHECK(xs.shape(0) == ys.shape(0) && xs.shape(1) == ys.shape(1), ys_name,
                     " must have the N and C of ", xs_name, " ", shape_str(xs), ", got ",
                     shape_str(ys));
        planes = {xs.shape(0) * xs.shape(1), xs.shape(2), xs.shape(3), ys.shape(2), ys.shape(3)};
    }

    // forward_kernel(in, out), or backward_kernel(in, out) for a backward call: typed by in's
    // float type (out's must match) and run without the GIL.
    template <class Forward, class Backward>
    void run(Forward&& forward_kernel, Backward&& backward_kernel) {
        on_in_out(in, in_name, out, out_name, [&](auto pin, auto pout) {
            py::gil_scoped_release release;
            if (backward)
                backward_kernel(pin, pout);
            else
                forward_kernel(pin, pout);
        });
    }
};

}  // namespace pyfast::binding
