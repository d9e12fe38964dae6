// Packed GEMM for the CPU: C = act(A @ B + bias) (or C += A @ B), float32 and float64.
// Other kernel families (convolution) call it directly on their own buffers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyfast {

// A micro-kernel's register tile for one (type, ISA), as a tag type of constants: MR rows by
// NV vectors of `lanes` elements, NR = NV * lanes columns. The register file fixes it; GEMM's
// micro-kernel and each convolution kernel with its own (conv/direct.cpp, direct_wgrad.cpp,
// implicit_gemm.cpp) pick theirs.
template <typename T, int VecBytes, int MR_, int NV_>
struct TileCfg {
    using type = T;
    static constexpr int lanes = VecBytes / static_cast<int>(sizeof(T));
    static constexpr int vec_bytes = VecBytes;
    static constexpr int MR = MR_, NV = NV_, NR = NV_ * lanes;
};

// A strided read-only matrix: element (i, j) is at p[i * rs + j * cs] (strides in elements,
// any sign), so transposes and slices need no copy: the packing routines absorb them.
template <typename T>
struct MatRef {
    const T* p;
    std::ptrdiff_t rs, cs;
    T at(std::int64_t i, std::int64_t j) const { return p[i * rs + j * cs]; }
};

// What happens to each element of the product before it lands in C.
template <typename T>
struct Epilogue {
    bool accumulate = false;    // C += A @ B instead of C = A @ B
    const T* bias = nullptr;    // added after the product (and after accumulation)
    bool bias_per_row = false;  // bias has M entries (one per row) instead of N (per column)
    bool relu = false;          // max(., 0) last
};

// C (m x n, row stride ldc, unit column stride) from A (m x k) and B (k x n). Runs on
// num_threads() threads with the active ISA. m, n, k >= 0.
template <typename T>
void gemm(std::int64_t m, std::int64_t n, std::int64_t k, MatRef<T> a, MatRef<T> b, T* c,
          std::ptrdiff_t ldc, const Epilogue<T>& ep);

// The register tile (MR x NR) and cache blocks (MC, KC, NC) gemm<T> uses on the active ISA:
// MC/KC/NC come from the data cache sizes at first use (see gemm.cpp).
struct GemmBlocking {
    int mr, nr;
    std::int64_t mc, kc, nc;
};
template <typename T>
GemmBlocking gemm_blocking();

// Force MC, KC, NC (rounded and clamped per configuration) for every later gemm call, or go
// back to the derived blocks with all three 0: for benchmarks comparing blockings in one
// process, and tests. Throws invalid_argument on a mix of zero and non-zero or negatives.
void set_gemm_blocks(std::int64_t mc, std::int64_t kc, std::int64_t nc);

}  // namespace pyfast
