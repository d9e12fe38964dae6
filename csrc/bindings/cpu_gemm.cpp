// pyfast._C's gemm family: matmul, whose operands may have any strides (the packed GEMM
// reads them through row and column strides), so transposes and slices cost no copy.

#include "bindings/arrays.h"
#include "cpu/gemm.h"

namespace pyfast::binding {
namespace {

template <typename T>
MatRef<T> mat_ref(const py::array& x, const char* name) {
    check_ndim(x, 2, name, "2-D");
    const T* p = data_of<T>(x, name);
    return {p, x.strides(0) / static_cast<py::ssize_t>(sizeof(T)),
            x.strides(1) / static_cast<py::ssize_t>(sizeof(T))};
}

void matmul(const py::array& a, const py::array& b, py::array out,
            const std::optional<py::array>& bias, bool relu) {
    on_float_type(a, "a", [&](auto zero) {
        using T = decltype(zero);
        const auto ra = mat_ref<T>(a, "a"), rb = mat_ref<T>(b, "b");
        const py::ssize_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
        PYFAST_CHECK(b.shape(0) == k, "matmul: a is ", shape_str(a), " but b is ", shape_str(b),
                     " (inner dimensions differ)");
        T* c = output<T>(out, "out", {m, n});
        Epilogue<T> ep;
        ep.relu = relu;
        ep.bias = optional_input<T>(bias, "bias", n);
        py::gil_scoped_release release;
        pyfast::gemm<T>(m, n, k, ra, rb, c, n, ep);
    });
}

}  // namespace

void bind_gemm(py::module_& m) {
    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"),
          py::arg("relu"),
          "out = relu?(a @ b + bias). a (M, K) and b (K, N) with any strides; out (M, N) "
          "C-contiguous; bias (N,) or None.");
    m.def("gemm_blocking", [](const std::string& dtype) {
        PYFAST_CHECK(dtype == "float32" || dtype == "float64",
                     "gemm_blocking: dtype must be 'float32' or 'float64', got '", dtype, "'");
        const GemmBlocking b = dtype == "float32" ? gemm_blocking<float>() : gemm_blocking<double>();
        py::dict d;
        d["mr"] = b.mr, d["nr"] = b.nr, d["mc"] = b.mc, d["kc"] = b.kc, d["nc"] = b.nc;
        return d;
    }, py::arg("dtype") = "float32",
          "The GEMM's register tile (mr x nr) and cache blocks (mc, kc, nc) on the active code "
          "path, derived from the cache sizes at first use.");
    m.def("set_gemm_blocks", &set_gemm_blocks, py::arg("mc") = 0, py::arg("kc") = 0,
          py::arg("nc") = 0,
          "Force the GEMM cache blocks (benchmarks, tests); all 0 returns to the derived ones.");
}

}  // namespace pyfast::binding
