// Shared by every CUDA kernel family and by the bindings: CUDA errors become C++ exceptions
// (pybind11 turns std::runtime_error into RuntimeError) carrying CUDA's own words, scratch
// from the stream-ordered allocator, and a few device helpers for 16-byte vector memory
// access. What the CPU backend shares too lives in csrc/common/ (docs/architecture.md rule 15).
//
// The host part is plain C++ over cuda_runtime_api.h, so the bindings (csrc/bindings/cuda_*,
// compiled by g++) include this file too; the device part is only seen by nvcc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace pyfast::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err) + " (" +
                             cudaGetErrorName(err) + ")");
}

// `what` names the operation, so the Python traceback says which call failed.
inline void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw_cuda_error(err, what);
}

// Call right after every <<<...>>> launch. A bad configuration is reported here at once; a
// fault inside the kernel surfaces later as a sticky error at the next synchronising call.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

inline bool is_aligned(const void* p, std::size_t bytes) {
    return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

// `count` elements of device scratch from the stream-ordered allocator, freed on the stream
// when it goes out of scope: after the work enqueued before that, and on every path out,
// exceptions included. `what` names it in the error when the allocation fails.
template <typename T>
class StreamScratch {
   public:
    StreamScratch(std::int64_t count, cudaStream_t stream, const char* what) : stream_(stream) {
        check(cudaMallocAsync(reinterpret_cast<void**>(&ptr_), sizeof(T) * count, stream), what);
    }
    ~StreamScratch() { cudaFreeAsync(ptr_, stream_); }
    StreamScratch(const StreamScratch&) = delete;
    StreamScratch& operator=(const StreamScratch&) = delete;
    T* get() const { return ptr_; }

   private:
    cudaStream_t stream_;
    T* ptr_ = nullptr;
};

#ifdef __CUDACC__

// Four consecutive elements through 16-byte accesses: one float4 or two double2. `p` must be
// 16-byte aligned. Read-only global data goes through the non-coherent (texture) path.
__device__ __forceinline__ void load4_global(const float* p, float* r) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(p));
    r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
}
__device__ __forceinline__ void load4_global(const double* p, double* r) {
    const double2 v0 = __ldg(reinterpret_cast<const double2*>(p));
    const double2 v1 = __ldg(reinterpret_cast<const double2*>(p) + 1);
    r[0] = v0.x, r[1] = v0.y, r[2] = v1.x, r[3] = v1.y;
}

// Same for shared (or writable global) memory, where __ldg does not apply.
__device__ __forceinline__ void load4(const float* p, float* r) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
}
__device__ __forceinline__ void load4(const double* p, double* r) {
    const double2 v0 = reinterpret_cast<const double2*>(p)[0];
    const double2 v1 = reinterpret_cast<const double2*>(p)[1];
    r[0] = v0.x, r[1] = v0.y, r[2] = v1.x, r[3] = v1.y;
}

__device__ __forceinline__ void store4(float* p, const float* v) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store4(double* p, const double* v) {
    reinterpret_cast<double2*>(p)[0] = make_double2(v[0], v[1]);
    reinterpret_cast<double2*>(p)[1] = make_double2(v[2], v[3]);
}

#endif  // __CUDACC__

}  // namespace pyfast::cuda
