// GEMM on the GPU: out = relu?(a @ b + bias), float32 and float64. Host-side declaration,
// plain C++ so the bindings (compiled by g++) can call it; the kernels live in gemm.cu.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pyfast::cuda {

// A read-only matrix in device memory with one unit stride, as BLAS takes it: element (i, j)
// is at data[i * ld + j] (row-major) or data[i + j * ld] (column-major).
template <typename T>
struct DeviceMatrix {
    const T* data;
    std::int64_t ld;
    bool col_major;
};

// out (m x n, C-contiguous) = relu?(a @ b + bias) for a (m x k), b (k x n) and bias (n
// values, or nullptr). 1 <= m, n, k < 2^31 - 256; every pointer aligned to sizeof(T).
// Enqueued on `stream`, not synchronised. Throws std::runtime_error on a CUDA error.
template <typename T>
void gemm(std::int64_t m, std::int64_t n, std::int64_t k, DeviceMatrix<T> a,
          DeviceMatrix<T> b, T* out, const T* bias, bool relu, cudaStream_t stream);

extern template void gemm<float>(std::int64_t, std::int64_t, std::int64_t,
                                 DeviceMatrix<float>, DeviceMatrix<float>, float*,
                                 const float*, bool, cudaStream_t);
extern template void gemm<double>(std::int64_t, std::int64_t, std::int64_t,
                                  DeviceMatrix<double>, DeviceMatrix<double>, double*,
                                  const double*, bool, cudaStream_t);

}  // namespace pyfast::cuda
