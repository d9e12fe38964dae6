// pyfast._cuda: the native CUDA backend's Python face. Arrays arrive as any object with
// __cuda_array_interface__ (CuPy's, Numba's, PyTorch's). Each binding reads that dict and
// checks everything it is given before anything is enqueued, so a direct call cannot crash
// the interpreter or fault the GPU; then it releases the GIL and enqueues the kernel on the
// caller's stream without synchronising.
//
// Compiled by the host compiler, not nvcc: it sees only the CUDA runtime API and the plain
// C++ launcher declarations. cudart is linked statically and initialises on first use, so
// the import costs nothing and works on a machine without a GPU or driver.

#include <pybind11/pybind11.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/checks.h"
#include "cuda/common.cuh"
#include "cuda/conv.h"
#include "cuda/gemm.h"

namespace py = pybind11;
using pyfast::fail;

namespace {

// ---- devices ----------------------------------------------------------------------------

int device_count() {
    int n = 0;
    cudaError_t err;
    {
        py::gil_scoped_release release;  // the first call loads and initialises the driver
        err = cudaGetDeviceCount(&n);
    }
    if (err != cudaSuccess) {
        cudaGetLastError();  // "no driver" / "no device" must not linger as a launch error
        return 0;
    }
    return n;
}

std::string version_string(int v) {
    return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

std::string device_status() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaSuccess && n > 0) return std::to_string(n) + (n == 1 ? " device" : " devices");
    cudaGetLastError();
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    const std::string why =
        err == cudaSuccess ? "no CUDA-capable device is detected" : cudaGetErrorString(err);
    return why + " (runtime " + version_string(runtime) + ", driver " +
           (driver ? version_string(driver) : std::string("not installed")) + ")";
}

void require_device(const char* what) {
    if (device_count() == 0)
        throw std::runtime_error(std::string(what) + ": no CUDA device (" + device_status() + ")");
}

py::dict device_info(int index) {
    const int n = device_count();
    if (index < 0 || index >= n)
        throw py::value_error("device_info: index " + std::to_string(index) + " is out of range (" +
                              device_status() + ")");
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

// ---- arrays -----------------------------------------------------------------------------

// What __cuda_array_interface__ says about one array. Strides are in bytes and always
// filled in (the interface's None means C-contiguous).
struct CudaArray {
    std::uintptr_t ptr = 0;
    bool readonly = false;
    std::string typestr;
    std::int64_t itemsize = 0;
    std::vector<std::int64_t> shape, strides;
    int ndim() const { return static_cast<int>(shape.size()); }
};

std::string tuple_str(const std::vector<std::int64_t>& v) {
    std::string s = "(";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + (v.size() == 1 ? ",)" : ")");
}

std::string dtype_name(const std::string& typestr) {
    if (typestr == "<f4") return "float32";
    if (typestr == "<f8") return "float64";
    return "typestr '" + typestr + "'";
}

std::vector<std::int64_t> int_tuple(const py::handle& seq) {
    if (!py::isinstance<py::tuple>(seq) && !py::isinstance<py::list>(seq))
        throw py::cast_error("expected a tuple of ints, got " +
                             std::string(py::str(py::type::handle_of(seq).attr("__name__"))));
    std::vector<std::int64_t> v;
    for (const py::handle item : py::reinterpret_borrow<py::sequence>(seq))
        v.push_back(item.cast<std::int64_t>());
    return v;
}

CudaArray parse_interface(const py::dict& cai, const std::string& name) {
    CudaArray x;
    x.shape = int_tuple(cai["shape"]);
    x.typestr = cai["typestr"].cast<std::string>();
    const py::tuple data = cai["data"].cast<py::tuple>();
    PYFAST_CHECK(data.size() == 2, name, ": __cuda_array_interface__['data'] must be (ptr, readonly)");
    x.ptr = data[0].cast<std::uintptr_t>();
    x.readonly = data[1].cast<bool>();
    if (cai.contains("mask") && !cai["mask"].is_none())
        fail(name, " has a mask; masked CUDA arrays are not supported");
    if (cai.contains("strides") && !cai["strides"].is_none()) x.strides = int_tuple(cai["strides"]);
    return x;
}

// Reads `obj`'s __cuda_array_interface__: float32 or float64 (TypeError otherwise), sizes >= 0,
// strides non-negative multiples of the item size (ValueError otherwise).
CudaArray cuda_array(const py::handle& obj, const char* name) {
    const py::object cai = py::getattr(obj, "__cuda_array_interface__", py::none());
    if (!py::isinstance<py::dict>(cai))
        throw py::type_error(std::string(name) +
                             " must be a CUDA array (an object with __cuda_array_interface__, "
                             "such as a cupy.ndarray), got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    CudaArray x;
    try {
        x = parse_interface(cai.cast<py::dict>(), name);
    } catch (const py::cast_error& e) {
        throw py::type_error(std::string(name) + ": malformed __cuda_array_interface__ (" + e.what() + ")");
    } catch (const py::error_already_set& e) {
        throw py::type_error(std::string(name) + ": malformed __cuda_array_interface__ (" + e.what() + ")");
    }
    if (x.typestr == "<f4" || x.typestr == "<f8")
        x.itemsize = x.typestr[2] - '0';
    else
        throw py::type_error(std::string(name) + " must be float32 or float64, got " +
                             dtype_name(x.typestr));
    for (const std::int64_t s : x.shape)
        PYFAST_CHECK(s >= 0, name, " has a negative size in its shape ", tuple_str(x.shape));
    if (x.strides.empty()) {  // C-contiguous
        x.strides.assign(x.shape.size(), x.itemsize);
        for (int i = x.ndim() - 2; i >= 0; --i) x.strides[i] = x.strides[i + 1] * x.shape[i + 1];
    }
    PYFAST_CHECK(x.strides.size() == x.shape.size(), name, " has strides ", tuple_str(x.strides),
                 " that do not match its shape ", tuple_str(x.shape));
    for (const std::int64_t s : x.strides)
        PYFAST_CHECK(s >= 0 && s % x.itemsize == 0, name, " has strides ", tuple_str(x.strides),
                     " (bytes); each must be a non-negative multiple of the item size ",
                     x.itemsize);
    PYFAST_CHECK(x.ptr % x.itemsize == 0, name, "'s data pointer is not aligned to its item size ",
                 x.itemsize);
    return x;
}

void check_same_dtype(const CudaArray& x, const char* name, const CudaArray& a) {
    if (x.typestr != a.typestr)
        throw py::type_error(std::string(name) + " is " + dtype_name(x.typestr) + " but a is " +
                             dtype_name(a.typestr) + "; pass all as float32 or all as float64");
}

// A 2-D operand as the kernel takes it: one unit stride, the other a leading dimension at
// least the contiguous length. A dimension of size 1 has no meaningful stride, so such an
// operand fits either layout; `prefer_col_major` picks the kernel's faster one.
template <typename T>
pyfast::cuda::DeviceMatrix<T> device_matrix(const CudaArray& x, const char* name,
                                            bool prefer_col_major) {
    const std::int64_t rows = x.shape[0], cols = x.shape[1];
    const std::int64_t s0 = x.strides[0] / x.itemsize, s1 = x.strides[1] / x.itemsize;
    const auto round4 = [](std::int64_t v) { return (v + 3) / 4 * 4; };
    const T* data = reinterpret_cast<const T*>(x.ptr);
    const bool row_major = (cols == 1 || s1 == 1) && (rows == 1 || s0 >= cols);
    const bool col_major = (rows == 1 || s0 == 1) && (cols == 1 || s1 >= rows);
    if (col_major && (prefer_col_major || !row_major))
        return {data, cols == 1 ? round4(rows) : s1, true};  // ld unused with one column
    if (row_major) return {data, rows == 1 ? round4(cols) : s0, false};
    fail(name, " must be row- or column-major with a leading dimension (one unit stride, the "
               "other at least the row or column length); got shape ",
         tuple_str(x.shape), " and strides ", tuple_str(x.strides), " (bytes)");
}

// Memory the kernel will touch must be on the device it runs on (the current one): a
// pointer into another GPU's memory or into pageable host memory would fault the device.
void check_accessible(const CudaArray& x, const char* name, int device) {
    cudaPointerAttributes attr;
    const cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(x.ptr));
    if (err != cudaSuccess) {
        cudaGetLastError();
        fail(name, ": cannot look up its memory: ", cudaGetErrorString(err));
    }
    if (attr.type == cudaMemoryTypeUnregistered)
        fail(name, " is not in memory the GPU can access (pageable host memory?)");
    if (attr.type == cudaMemoryTypeDevice && attr.device != device)
        fail(name, " is on CUDA device ", attr.device, " but the current device is ", device,
             "; run under `with cupy.cuda.Device(", attr.device, "):`");
}

// CuPy's Stream.ptr: 0 is the legacy default stream, 1 and 2 are cudaStreamLegacy and
// cudaStreamPerThread, anything else a cudaStream_t.
cudaStream_t stream_of(const py::handle& stream) {
    if (!PyIndex_Check(stream.ptr()) || py::isinstance<py::bool_>(stream))
        throw py::type_error("stream must be an int (a cudaStream_t as an integer), got " +
                             std::string(py::str(py::type::handle_of(stream).attr("__name__"))));
    const py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(stream.ptr()));
    if (!value) throw py::error_already_set();
    std::uintptr_t handle;
    try {
        handle = value.cast<std::uintptr_t>();
    } catch (const py::cast_error&) {
        fail("stream must be a non-negative int that fits in a pointer, got ",
             std::string(py::str(stream)));
    }
    return reinterpret_cast<cudaStream_t>(handle);
}

// ---- gemm -------------------------------------------------------------------------------

template <typename T>
void matmul_typed(const CudaArray& a, const CudaArray& b, const CudaArray& out,
                  const CudaArray* bias, bool relu, cudaStream_t stream) {
    const std::int64_t m = a.shape[0], k = a.shape[1], n = b.shape[1];
    // a prefers column-major and b row-major: memory along m / n gives plain vector stores
    // into shared memory (see csrc/cuda/gemm.cu).
    const auto da = device_matrix<T>(a, "a", true);
    const auto db = device_matrix<T>(b, "b", false);
    T* out_ptr = reinterpret_cast<T*>(out.ptr);
    const T* bias_ptr = bias ? reinterpret_cast<const T*>(bias->ptr) : nullptr;

    require_device("matmul");
    int device = 0;
    pyfast::cuda::check(cudaGetDevice(&device), "cudaGetDevice");
    check_accessible(a, "a", device);
    check_accessible(b, "b", device);
    check_accessible(out, "out", device);
    if (bias) check_accessible(*bias, "bias", device);

    py::gil_scoped_release release;
    pyfast::cuda::gemm<T>(m, n, k, da, db, out_ptr, bias_ptr, relu, stream);
}

void matmul(const py::object& a_obj, const py::object& b_obj, const py::object& out_obj,
            const py::object& bias_obj, bool relu, const py::object& stream_obj) {
    const CudaArray a = cuda_array(a_obj, "a");
    const CudaArray b = cuda_array(b_obj, "b");
    const CudaArray out = cuda_array(out_obj, "out");
    check_same_dtype(b, "b", a);
    check_same_dtype(out, "out", a);
    PYFAST_CHECK(a.ndim() == 2, "a must be 2-D, got shape ", tuple_str(a.shape));
    PYFAST_CHECK(b.ndim() == 2, "b must be 2-D, got shape ", tuple_str(b.shape));
    const std::int64_t m = a.shape[0], k = a.shape[1], n = b.shape[1];
    PYFAST_CHECK(b.shape[0] == k, "matmul: a is ", tuple_str(a.shape), " but b is ",
                 tuple_str(b.shape), " (inner dimensions differ)");
    PYFAST_CHECK(out.ndim() == 2 && out.shape[0] == m && out.shape[1] == n,
                 "out must have shape (", m, ", ", n, "), got ", tuple_str(out.shape));
    PYFAST_CHECK(!out.readonly, "out is read-only");
    PYFAST_CHECK((n == 1 || out.strides[1] == out.itemsize) &&
                     (m == 1 || out.strides[0] == n * out.itemsize),
                 "out must be C-contiguous, got strides ", tuple_str(out.strides), " (bytes)");
    PYFAST_CHECK(m >= 1 && n >= 1 && k >= 1, "matmul: the CUDA kernel needs M, N, K >= 1, got ",
                 m, ", ", n, ", ", k, " (pf.ops.matmul handles empty products)");
    CudaArray bias;
    const bool has_bias = !bias_obj.is_none();
    if (has_bias) {
        bias = cuda_array(bias_obj, "bias");
        check_same_dtype(bias, "bias", a);
        PYFAST_CHECK(bias.ndim() == 1 && bias.shape[0] == n, "bias must have shape (", n,
                     ",), got ", tuple_str(bias.shape));
        PYFAST_CHECK(n == 1 || bias.strides[0] == bias.itemsize, "bias must be contiguous");
    }
    const cudaStream_t stream = stream_of(stream_obj);
    if (a.itemsize == 4)
        matmul_typed<float>(a, b, out, has_bias ? &bias : nullptr, relu, stream);
    else
        matmul_typed<double>(a, b, out, has_bias ? &bias : nullptr, relu, stream);
}

// ---- conv -------------------------------------------------------------------------------

std::int64_t element_count(const CudaArray& x) {
    std::int64_t n = 1;
    for (const std::int64_t e : x.shape) n *= e;
    return n;
}

pyfast::ConvShape4 conv_shape4(const CudaArray& x, const char* name) {
    PYFAST_CHECK(x.ndim() == 4, name, " must be 4-D, got shape ", tuple_str(x.shape));
    return {x.shape[0], x.shape[1], x.shape[2], x.shape[3]};
}

pyfast::ConvPair conv_pair(const py::handle& v, const char* name) {
    std::vector<std::int64_t> e;
    try {
        e = int_tuple(v);
    } catch (const py::cast_error&) {
        throw py::type_error(std::string(name) + " must be a pair of ints");
    }
    if (e.size() != 2) throw py::type_error(std::string(name) + " must be a pair of ints");
    return {e[0], e[1]};
}

// A conv operand: a CUDA array of `like`'s dtype (when given), C-contiguous.
CudaArray conv_array(const py::handle& obj, const char* name, const CudaArray* like,
                     const char* like_name) {
    CudaArray x = cuda_array(obj, name);
    if (like && x.typestr != like->typestr)
        throw py::type_error(std::string(name) + " is " + dtype_name(x.typestr) + " but " +
                             like_name + " is " + dtype_name(like->typestr) +
                             "; pass all as float32 or all as float64");
    std::int64_t expected = x.itemsize;
    for (int i = x.ndim() - 1; i >= 0; --i) {
        PYFAST_CHECK(x.shape[i] <= 1 || x.strides[i] == expected, name,
                     " must be C-contiguous, got strides ", tuple_str(x.strides),
                     " (bytes) for shape ", tuple_str(x.shape));
        expected *= x.shape[i];
    }
    return x;
}

void check_conv_out(const CudaArray& x, const char* name, const pyfast::ConvShape4& shape) {
    PYFAST_CHECK(x.ndim() == 4 && x.shape[0] == shape[0] && x.shape[1] == shape[1] &&
                     x.shape[2] == shape[2] && x.shape[3] == shape[3],
                 name, " must have shape ", pyfast::conv_shape_str(shape), ", got ",
                 tuple_str(x.shape));
    PYFAST_CHECK(!x.readonly, name, " is read-only");
}

void check_conv_vector(const CudaArray& x, const char* name, std::int64_t n) {
    PYFAST_CHECK(x.ndim() == 1 && x.shape[0] == n, name, " must have shape (", n, ",), got ",
                 tuple_str(x.shape));
}

// The current device, after checking that every non-empty array lives where it can reach.
int conv_device(const char* what, std::initializer_list<std::pair<const CudaArray*, const char*>> arrays) {
    require_device(what);
    int device = 0;
    pyfast::cuda::check(cudaGetDevice(&device), "cudaGetDevice");
    for (const auto& [x, name] : arrays)
        if (x && element_count(*x) > 0) check_accessible(*x, name, device);
    return device;
}

template <typename T>
const T* ptr_or_null(const CudaArray* x) {
    return x ? reinterpret_cast<const T*>(x->ptr) : nullptr;
}

void conv2d_cuda(const py::object& x_obj, const py::object& w_obj, const py::object& bias_obj,
                 const py::object& out_obj, const py::object& stride, const py::object& padding,
                 const py::object& dilation, std::int64_t groups, bool relu,
                 const py::object& stream_obj) {
    const CudaArray w = conv_array(w_obj, "w", nullptr, nullptr);
    const CudaArray x = conv_array(x_obj, "x", &w, "w");
    const CudaArray out = conv_array(out_obj, "out", &w, "w");
    const auto s = pyfast::conv2d_shape("conv2d", conv_shape4(x, "x"), conv_shape4(w, "w"),
                                        conv_pair(stride, "stride"), conv_pair(padding, "padding"),
                                        conv_pair(dilation, "dilation"), groups);
    check_conv_out(out, "out", {s.n, s.k, s.oh, s.ow});
    CudaArray bias;
    const bool has_bias = !bias_obj.is_none();
    if (has_bias) {
        bias = conv_array(bias_obj, "bias", &w, "w");
        check_conv_vector(bias, "bias", s.k);
    }
    const cudaStream_t stream = stream_of(stream_obj);
    conv_device("conv2d", {{&x, "x"}, {&w, "w"}, {&out, "out"}, {has_bias ? &bias : nullptr, "bias"}});
    py::gil_scoped_release release;
    if (w.itemsize == 4)
        pyfast::cuda::conv2d_forward<float>(s, ptr_or_null<float>(&x), ptr_or_null<float>(&w),
                                            ptr_or_null<float>(has_bias ? &bias : nullptr),
                                            reinterpret_cast<float*>(out.ptr), relu, stream);
    else
        pyfast::cuda::conv2d_forward<double>(s, ptr_or_null<double>(&x), ptr_or_null<double>(&w),
                                             ptr_or_null<double>(has_bias ? &bias : nullptr),
                                             reinterpret_cast<double*>(out.ptr), relu, stream);
}

void conv2d_backward_cuda(const py::object& gy_obj, const py::object& x_obj,
                          const py::object& w_obj, const py::object& gx_obj,
                          const py::object& gw_obj, const py::object& gb_obj,
                          const py::object& stride, const py::object& padding,
                          const py::object& dilation, std::int64_t groups,
                          const py::object& stream_obj) {
    const CudaArray w = conv_array(w_obj, "w", nullptr, nullptr);
    const CudaArray gy = conv_array(gy_obj, "gy", &w, "w");
    const bool has_x = !x_obj.is_none(), has_gx = !gx_obj.is_none(), has_gw = !gw_obj.is_none(),
               has_gb = !gb_obj.is_none();
    CudaArray x, gx, gw, gb;
    if (has_x) x = conv_array(x_obj, "x", &w, "w");
    if (has_gx) gx = conv_array(gx_obj, "gx", &w, "w");
    if (has_gw) gw = conv_array(gw_obj, "gw", &w, "w");
    if (has_gb) gb = conv_array(gb_obj, "gb", &w, "w");
    PYFAST_CHECK(!has_gw || has_x, "conv2d_backward: the weight gradient gw needs x");
    const auto gy_shape = conv_shape4(gy, "gy"), w_shape = conv_shape4(w, "w");
    PYFAST_CHECK(gy_shape[1] == w_shape[0], "conv2d_backward: gy has shape ",
                 tuple_str(gy.shape), " but w has shape ", tuple_str(w.shape),
                 " (output channels differ)");
    pyfast::ConvShape s{};
    s.n = gy_shape[0], s.k = gy_shape[1], s.oh = gy_shape[2], s.ow = gy_shape[3];
    if (has_x || has_gx) {
        s = pyfast::conv2d_shape("conv2d_backward", has_x ? conv_shape4(x, "x") : conv_shape4(gx, "gx"),
                                 w_shape, conv_pair(stride, "stride"), conv_pair(padding, "padding"),
                                 conv_pair(dilation, "dilation"), groups);
        const pyfast::ConvShape4 want{s.n, s.k, s.oh, s.ow};
        PYFAST_CHECK(gy_shape == want, "gy must have shape ", pyfast::conv_shape_str(want),
                     ", got ", tuple_str(gy.shape));
    }
    if (has_gx) check_conv_out(gx, "gx", {s.n, s.c, s.h, s.w});
    if (has_gw) check_conv_out(gw, "gw", w_shape);
    if (has_gb) {
        check_conv_vector(gb, "gb", s.k);
        PYFAST_CHECK(!gb.readonly, "gb is read-only");
    }
    const cudaStream_t stream = stream_of(stream_obj);
    conv_device("conv2d_backward", {{&gy, "gy"}, {&w, "w"}, {has_x ? &x : nullptr, "x"},
                                    {has_gx ? &gx : nullptr, "gx"}, {has_gw ? &gw : nullptr, "gw"},
                                    {has_gb ? &gb : nullptr, "gb"}});
    py::gil_scoped_release release;
    auto run = [&](auto zero) {
        using T = decltype(zero);
        pyfast::cuda::conv2d_backward<T>(
            s, ptr_or_null<T>(&gy), ptr_or_null<T>(has_x ? &x : nullptr), ptr_or_null<T>(&w),
            has_gx ? reinterpret_cast<T*>(gx.ptr) : nullptr,
            has_gw ? reinterpret_cast<T*>(gw.ptr) : nullptr,
            has_gb ? reinterpret_cast<T*>(gb.ptr) : nullptr, stream);
    };
    if (w.itemsize == 4)
        run(float{});
    else
        run(double{});
}

void conv_transpose2d_cuda(const py::object& x_obj, const py::object& w_obj,
                           const py::object& bias_obj, const py::object& out_obj,
                           const py::object& stride, const py::object& padding,
                           const py::object& dilation, std::int64_t groups,
                           const py::object& stream_obj) {
    const CudaArray w = conv_array(w_obj, "w", nullptr, nullptr);
    const CudaArray x = conv_array(x_obj, "x", &w, "w");
    const CudaArray out = conv_array(out_obj, "out", &w, "w");
    const auto out_shape = conv_shape4(out, "out");
    const auto s = pyfast::conv_transpose2d_shape(
        conv_shape4(x, "x"), conv_shape4(w, "w"), out_shape, conv_pair(stride, "stride"),
        conv_pair(padding, "padding"), conv_pair(dilation, "dilation"), groups);
    check_conv_out(out, "out", out_shape);
    CudaArray bias;
    const bool has_bias = !bias_obj.is_none();
    if (has_bias) {
        bias = conv_array(bias_obj, "bias", &w, "w");
        check_conv_vector(bias, "bias", s.c);
    }
    const cudaStream_t stream = stream_of(stream_obj);
    conv_device("conv_transpose2d",
                {{&x, "x"}, {&w, "w"}, {&out, "out"}, {has_bias ? &bias : nullptr, "bias"}});
    py::gil_scoped_release release;
    if (w.itemsize == 4)
        pyfast::cuda::conv_transpose2d<float>(s, ptr_or_null<float>(&x), ptr_or_null<float>(&w),
                                              ptr_or_null<float>(has_bias ? &bias : nullptr),
                                              reinterpret_cast<float*>(out.ptr), stream);
    else
        pyfast::cuda::conv_transpose2d<double>(s, ptr_or_null<double>(&x), ptr_or_null<double>(&w),
                                               ptr_or_null<double>(has_bias ? &bias : nullptr),
                                               reinterpret_cast<double*>(out.ptr), stream);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "pyfast native CUDA kernels (static cudart; sm_80, sm_90 and PTX)";
    m.attr("FAMILIES") = py::make_tuple("gemm", "conv");

    m.def("device_count", &device_count,
          "Number of usable CUDA devices; 0 (never an error) without a driver or a device.");
    m.def("device_status", &device_status,
          "'N devices', or why there is none in CUDA's words.");
    m.def("device_info", &device_info, py::arg("index"),
          "Name, compute capability, SM count and memory of one device.");

    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"),
          py::arg("relu"), py::kw_only(), py::arg("stream"),
          "out = relu?(a @ b + bias), enqueued on `stream` (a cudaStream_t as int, 0 = legacy "
          "default) without synchronising. a (M, K) and b (K, N) row- or column-major with a "
          "leading dimension; out (M, N) C-contiguous; bias (N,) or None; all CUDA arrays of "
          "one dtype, float32 or float64, on the current device.");

    m.def("conv2d", &conv2d_cuda, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("out"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
          py::arg("relu"), py::kw_only(), py::arg("stream"),
          "out = relu?(conv2d(x, w) + bias), enqueued on `stream` without synchronising. x (N, "
          "C, H, W), w (K, C/groups, kh, kw), bias (K,) or None, out (N, K, OH, OW): C-contiguous "
          "CUDA arrays of one dtype on the current device; stride, padding, dilation (h, w).");
    m.def("conv2d_backward", &conv2d_backward_cuda, py::arg("gy"), py::arg("x"), py::arg("w"),
          py::arg("gx"), py::arg("gw"), py::arg("gb"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"), py::kw_only(), py::arg("stream"),
          "Overwrites conv2d's gradients gx, gw, gb (each may be None; x may be None when gw "
          "is) given gy, enqueued on `stream`.");
    m.def("conv_transpose2d", &conv_transpose2d_cuda, py::arg("x"), py::arg("w"),
          py::arg("bias"), py::arg("out"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"), py::kw_only(), py::arg("stream"),
          "out = conv_transpose2d(x, w) + bias, enqueued on `stream`. x (N, Cin, H, W), w (Cin, "
          "Cout/groups, kh, kw), out (N, Cout, OH, OW) whose extent carries output_padding.");
}
