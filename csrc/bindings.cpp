// pyfast._C: the native CPU backend's Python face. Each kernel family binds its functions in
// csrc/bindings/cpu_<family>.cpp, on the argument checks of csrc/bindings/arrays.h: every
// binding checks what it is given (so a direct call cannot crash the interpreter), releases
// the GIL and runs the kernel. This file holds the module and its process-wide settings.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/common.h"
#include "common/runtime.h"
#include "cpu/peak.h"

namespace py = pybind11;

namespace {

void bind_runtime(py::module_& m) {
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
    m.def("cpu_caches", [] {
        const pyfast::CpuCaches& c = pyfast::cpu_caches();
        py::dict d;
        d["l1d"] = c.l1d, d["l2"] = c.l2, d["l3"] = c.l3, d["l3_sharing"] = c.l3_sharing;
        d["source"] = std::string(c.source);
        return d;
    }, "The data caches one core sees (bytes), as the kernels' blocking reads them.");
    m.def("cpu_identity", [] {
        const pyfast::CpuIdentity& id = pyfast::cpu_identity();
        py::dict d, flags;
        d["vendor"] = id.vendor, d["brand"] = id.brand;
        d["family"] = id.family, d["model"] = id.model, d["stepping"] = id.stepping;
        for (const auto& [name, on] : id.flags) flags[py::str(name)] = on;
        d["flags"] = flags;
        return d;
    }, "cpuid's vendor, brand string, display family/model/stepping and the ISA extensions "
       "pyfast's code paths use (each true only with OS support).");

    m.def("fma_peak_gflops", &pyfast::fma_peak_gflops, py::arg("threads"),
          py::call_guard<py::gil_scoped_release>(),
          "Measured float32 FMA peak (GFLOP/s) of the active ISA on `threads` threads.");
    m.def("copy_bandwidth_gbs", &pyfast::copy_bandwidth_gbs, py::arg("threads"), py::arg("nbytes"),
          py::call_guard<py::gil_scoped_release>(),
          "Measured copy bandwidth (GB/s, read + write) of an nbytes buffer on `threads` threads.");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "pyfast native CPU kernels (C++17, OpenMP, run-time SIMD dispatch)";
    using namespace pyfast::binding;
    bind_families(m, {{"gemm", bind_gemm}, {"conv", bind_conv},
                      {"softmax_xent", bind_softmax_xent}, {"optim", bind_optim},
                      {"norm", bind_norm}, {"pool", bind_pool}, {"resample", bind_resample},
                      {"elementwise", bind_elementwise},
                      {"linear_xent", bind_linear_xent}});
    bind_runtime(m);
}
