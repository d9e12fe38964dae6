// pyfast._cuda's gemm family: matmul. a and b may be row- or column-major (transposes cost
// no copy); out is C-contiguous.

#include "bindings/cuda_arrays.h"
#include "cuda/gemm.h"

namespace pyfast::binding {
namespace {

// A 2-D operand as the kernel takes it: one unit stride, the other a leading dimension at
// least the contiguous length. A dimension of size 1 has no meaningful stride, so such an
// operand fits either layout; `prefer_col_major` picks the kernel's faster one.
template <typename T>
cuda::DeviceMatrix<T> device_matrix(const CudaArray& x, const char* name, bool prefer_col_major) {
    const std::int64_t rows = x.shape[0], cols = x.shape[1];
    const std::int64_t s0 = x.strides[0] / x.itemsize, s1 = x.strides[1] / x.itemsize;
    const auto round4 = [](std::int64_t v) { return (v + 3) / 4 * 4; };
    const T* data = x.data<const T>();
    const bool row_major = (cols == 1 || s1 == 1) && (rows == 1 || s0 >= cols);
    const bool col_major = (rows == 1 || s0 == 1) && (cols == 1 || s1 >= rows);
    if (col_major && (prefer_col_major || !row_major))
        return {data, cols == 1 ? round4(rows) : s1, true};  // ld unused with one column
    if (row_major) return {data, rows == 1 ? round4(cols) : s0, false};
    fail(name, " must be row- or column-major with a leading dimension (one unit stride, the "
               "other at least the row or column length); got shape ",
         shape_str(x), " and strides ", shape_str(x.strides), " (bytes)");
}

void matmul(const py::object& a_obj, const py::object& b_obj, const py::object& out_obj,
            const py::object& bias_obj, bool relu, const py::object& stream_obj) {
    const CudaArray a = cuda_array(a_obj, "a");
    const CudaArray b = cuda_array(b_obj, "b");
    const CudaArray out = cuda_array(out_obj, "out");
    check_dtype_like(b, "b", a, "a");
    check_dtype_like(out, "out", a, "a");
    PYFAST_CHECK(a.ndim() == 2, "a must be 2-D, got shape ", shape_str(a));
    PYFAST_CHECK(b.ndim() == 2, "b must be 2-D, got shape ", shape_str(b));
    const std::int64_t m = a.shape[0], k = a.shape[1], n = b.shape[1];
    PYFAST_CHECK(b.shape[0] == k, "matmul: a is ", shape_str(a), " but b is ", shape_str(b),
                 " (inner dimensions differ)");
    check_shape(out, "out", {m, n});
    check_writable(out, "out");
    check_c_contiguous(out, "out");
    PYFAST_CHECK(m >= 1 && n >= 1 && k >= 1, "matmul: the CUDA kernel needs M, N, K >= 1, got ",
                 m, ", ", n, ", ", k, " (pf.ops.matmul handles empty products)");
    const std::optional<CudaArray> bias = optional_cuda_array(bias_obj, "bias");
    if (bias) {
        check_dtype_like(*bias, "bias", a, "a");
        check_c_shape(*bias, "bias", {n});
    }
    const cudaStream_t stream = stream_of(stream_obj);
    on_float_type(a, [&](auto zero) {
        using T = decltype(zero);
        // a prefers column-major and b row-major: memory along m / n gives plain vector
        // stores into shared memory (see csrc/cuda/gemm.cu).
        const auto da = device_matrix<T>(a, "a", true);
        const auto db = device_matrix<T>(b, "b", false);
        device_for("matmul", {{a, "a"}, {b, "b"}, {out, "out"}, {bias, "bias"}});
        py::gil_scoped_release release;
        cuda::gemm<T>(m, n, k, da, db, out.data<T>(), data_or_null<const T>(bias), relu, stream);
    });
}

}  // namespace

void bind_gemm(py::module_& m) {
    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"),
          py::arg("relu"), py::kw_only(), py::arg("stream"),
          "out = relu?(a @ b + bias), enqueued on `stream` (a cudaStream_t as int, 0 = legacy "
          "default) without synchronising. a (M, K) and b (K, N) row- or column-major with a "
          "leading dimension; out (M, N) C-contiguous; bias (N,) or None; all CUDA arrays of "
          "one dtype, float32 or float64, on the current device.");
}

}  // namespace pyfast::binding
