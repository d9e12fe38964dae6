// pyfast._cuda: the native CUDA backend's Python face. Each kernel family binds its functions
// in csrc/bindings/cuda_<family>.cpp, on the argument checks of csrc/bindings/cuda_arrays.h:
// every binding reads the __cuda_array_interface__ of what it is given and checks everything
// before anything is enqueued, so a direct call cannot crash the interpreter or fault the
// GPU; then it releases the GIL and enqueues the kernel on the caller's stream without
// synchronising. This file holds the module and what it says about the devices.
//
// Compiled by the host compiler, not nvcc, like the family files: they see only the CUDA
// runtime API and the plain C++ launcher declarations. cudart is linked statically and
// initialises on first use, so the import costs nothing and works on a machine without a GPU
// or driver.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bindings/cuda_arrays.h"

namespace py = pybind11;

namespace {

py::dict device_info(int index) {
    const int n = pyfast::binding::device_count();
    if (index < 0 || index >= n)
        throw py::value_error("device_info: index " + std::to_string(index) + " is out of range (" +
                              pyfast::binding::device_status() + ")");
    cudaDeviceProp p;
    pyfast::cuda::check(cudaGetDeviceProperties(&p, index), "cudaGetDeviceProperties");
    py::dict d;
    d["index"] = index;
    d["name"] = std::string(p.name);
    d["compute_capability"] = py::make_tuple(p.major, p.minor);
    d["multiprocessor_count"] = p.multiProcessorCount;
    d["total_memory"] = static_cast<std::uint64_t>(p.totalGlobalMem);
    d["l2_cache_size"] = p.l2CacheSize;
    d["shared_memory_per_block_optin"] = static_cast<std::uint64_t>(p.sharedMemPerBlockOptin);
    d["warp_size"] = p.warpSize;
    return d;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "pyfast native CUDA kernels (static cudart; sm_80, sm_90 and PTX)";
    using namespace pyfast::binding;
    bind_families(m, {{"gemm", bind_gemm}, {"conv", bind_conv},
                      {"softmax_xent", bind_softmax_xent}, {"optim", bind_optim},
                      {"linear_xent", bind_linear_xent}});

    m.def("device_count", &device_count,
          "Number of usable CUDA devices; 0 (never an error) without a driver or a device.");
    m.def("device_status", &device_status,
          "'N devices', or why there is none in CUDA's words.");
    m.def("device_info", &device_info, py::arg("index"),
          "Name, compute capability, SM count and memory of one device.");
}
