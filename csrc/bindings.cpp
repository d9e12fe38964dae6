// pyfast._C: the native CPU backend's Python face. Each binding checks what it is given
// (so a direct call cannot crash the interpreter), releases the GIL and runs the kernel.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "common/checks.h"
#include "common/runtime.h"
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

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "pyfast native CPU kernels (C++17, OpenMP, run-time SIMD dispatch)";
    m.attr("FAMILIES") = py::make_tuple("gemm");

    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"),
          py::arg("relu"),
          "out = relu?(a @ b + bias). a (M, K) and b (K, N) with any strides; out (M, N) "
          "C-contiguous; bias (N,) or None.");

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
