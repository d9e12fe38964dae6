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

#include <climits>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/checks.h"
#include "cuda/common.cuh"
#include "cuda/conv.h"
#include "cuda/gemm.h"
#include "cuda/optim.h"
#include "cuda/softmax_xent.h"

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

std::int64_t element_count(const CudaArray& x) {
    std::int64_t n = 1;
    for (const std::int64_t e : x.shape) n *= e;
    return n;
}


// ---- softmax_xent -----------------------------------------------------------------------

void check_dtype_like(const CudaArray& x, const char* name, const CudaArray& ref,
                      const char* ref_name) {
    if (x.typestr != ref.typestr)
        throw py::type_error(std::string(name) + " is " + dtype_name(x.typestr) + " but " +
                             ref_name + " is " + dtype_name(ref.typestr) +
                             "; pass all as float32 or all as float64");
}

// x has exactly `shape` and is C-contiguous (strides of extent-1 axes do not matter).
void check_c_shape(const CudaArray& x, const char* name, const std::vector<std::int64_t>& shape) {
    PYFAST_CHECK(x.shape == shape, name, " must have shape ", tuple_str(shape), ", got ",
                 tuple_str(x.shape));
    std::int64_t expect = x.itemsize;
    for (int i = x.ndim() - 1; i >= 0; --i) {
        PYFAST_CHECK(shape[i] <= 1 || x.strides[i] == expect, name,
                     " must be C-contiguous, got strides ", tuple_str(x.strides), " (bytes)");
        expect *= shape[i];
    }
}

void check_writable(const CudaArray& x, const char* name) {
    PYFAST_CHECK(!x.readonly, name, " is read-only");
}

// An int64 CUDA array (labels): as cuda_array, for the one integer type the kernels take.
CudaArray cuda_int64_array(const py::handle& obj, const char* name) {
    const py::object cai = py::getattr(obj, "__cuda_array_interface__", py::none());
    if (!py::isinstance<py::dict>(cai))
        throw py::type_error(std::string(name) + " must be a CUDA array (an object with "
                             "__cuda_array_interface__, such as a cupy.ndarray), got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    CudaArray x;
    try {
        x = parse_interface(cai.cast<py::dict>(), name);
    } catch (const py::cast_error& e) {
        throw py::type_error(std::string(name) + ": malformed __cuda_array_interface__ (" + e.what() + ")");
    } catch (const py::error_already_set& e) {
        throw py::type_error(std::string(name) + ": malformed __cuda_array_interface__ (" + e.what() + ")");
    }
    if (x.typestr != "<i8")
        throw py::type_error(std::string(name) + " must be int64, got typestr '" + x.typestr + "'");
    x.itemsize = 8;
    for (const std::int64_t v : x.shape)
        PYFAST_CHECK(v >= 0, name, " has a negative size in its shape ", tuple_str(x.shape));
    if (x.strides.empty()) {
        x.strides.assign(x.shape.size(), x.itemsize);
        for (int i = x.ndim() - 2; i >= 0; --i) x.strides[i] = x.strides[i + 1] * x.shape[i + 1];
    }
    PYFAST_CHECK(x.strides.size() == x.shape.size(), name, " has strides ", tuple_str(x.strides),
                 " that do not match its shape ", tuple_str(x.shape));
    return x;
}

// The device the kernels run on, after checking that every non-empty array lives where it
// can reach (an empty array may have no memory at all).
int device_for(const char* what, std::initializer_list<std::pair<const CudaArray*, const char*>> arrays) {
    require_device(what);
    int device = 0;
    pyfast::cuda::check(cudaGetDevice(&device), "cudaGetDevice");
    for (const auto& [x, name] : arrays)
        if (x && element_count(*x) > 0) check_accessible(*x, name, device);
    return device;
}

void check_finite_arg(double v, const char* name) {
    PYFAST_CHECK(std::isfinite(v), name, " must be finite, got ", v);
}

void softmax_cuda(const py::object& x_obj, const py::object& out_obj, bool log,
                  const py::object& stream_obj) {
    const CudaArray x = cuda_array(x_obj, "x"), out = cuda_array(out_obj, "out");
    check_dtype_like(out, "out", x, "x");
    PYFAST_CHECK(x.ndim() == 3, "x must be 3-D (A, C, B), softmax over axis 1; got shape ",
                 tuple_str(x.shape));
    check_c_shape(x, "x", x.shape);
    check_c_shape(out, "out", x.shape);
    check_writable(out, "out");
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("softmax", {{&x, "x"}, {&out, "out"}});
    const std::int64_t a = x.shape[0], c = x.shape[1], b = x.shape[2];
    py::gil_scoped_release release;
    if (x.itemsize == 4)
        pyfast::cuda::softmax<float>(reinterpret_cast<const float*>(x.ptr),
                                     reinterpret_cast<float*>(out.ptr), a, c, b, log, stream);
    else
        pyfast::cuda::softmax<double>(reinterpret_cast<const double*>(x.ptr),
                                      reinterpret_cast<double*>(out.ptr), a, c, b, log, stream);
}

template <typename T>
pyfast::cuda::XentArgs<T> xent_args(const CudaArray& logits, const CudaArray& labels,
                                    const CudaArray* weight, std::int64_t ignore_index,
                                    double smoothing, double grad_scale, const CudaArray& dlogits,
                                    const CudaArray& losses) {
    pyfast::cuda::XentArgs<T> a;
    a.logits = reinterpret_cast<const T*>(logits.ptr);
    a.labels = reinterpret_cast<const std::int64_t*>(labels.ptr);
    a.weight = weight ? reinterpret_cast<const T*>(weight->ptr) : nullptr;
    a.ignore_index = ignore_index;
    a.smoothing = smoothing;
    a.grad_scale = grad_scale;
    a.dlogits = reinterpret_cast<T*>(dlogits.ptr);
    a.losses = reinterpret_cast<T*>(losses.ptr);
    a.n = logits.shape[0];
    a.c = logits.shape[1];
    a.s = logits.shape[2];
    return a;
}

void softmax_xent_cuda(const py::object& logits_obj, const py::object& labels_obj,
                       const py::object& weight_obj, std::int64_t ignore_index, double smoothing,
                       double grad_scale, const py::object& dlogits_obj,
                       const py::object& losses_obj, const py::object& stream_obj) {
    const CudaArray logits = cuda_array(logits_obj, "logits");
    PYFAST_CHECK(logits.ndim() == 3, "logits must be 3-D (N, C, S), got shape ",
                 tuple_str(logits.shape));
    const std::int64_t n = logits.shape[0], c = logits.shape[1], s = logits.shape[2];
    PYFAST_CHECK(c >= 1 && c <= INT_MAX, "logits must have 1 to 2^31 - 1 classes (axis 1), "
                 "got shape ", tuple_str(logits.shape));
    PYFAST_CHECK(std::isfinite(smoothing) && smoothing >= 0 && smoothing <= 1,
                 "smoothing must be in [0, 1], got ", smoothing);
    check_finite_arg(grad_scale, "grad_scale");
    check_c_shape(logits, "logits", {n, c, s});
    const CudaArray labels = cuda_int64_array(labels_obj, "labels");
    check_c_shape(labels, "labels", {n, s});
    const CudaArray dlogits = cuda_array(dlogits_obj, "dlogits");
    check_dtype_like(dlogits, "dlogits", logits, "logits");
    check_c_shape(dlogits, "dlogits", {n, c, s});
    check_writable(dlogits, "dlogits");
    const CudaArray losses = cuda_array(losses_obj, "losses");
    check_dtype_like(losses, "losses", logits, "logits");
    check_c_shape(losses, "losses", {n, s});
    check_writable(losses, "losses");
    std::optional<CudaArray> weight;
    if (!weight_obj.is_none()) {
        weight = cuda_array(weight_obj, "weight");
        check_dtype_like(*weight, "weight", logits, "logits");
        check_c_shape(*weight, "weight", {c});
    }
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("softmax_xent", {{&logits, "logits"}, {&labels, "labels"}, {&dlogits, "dlogits"},
                                {&losses, "losses"}, {weight ? &*weight : nullptr, "weight"}});
    const CudaArray* w = weight ? &*weight : nullptr;
    py::gil_scoped_release release;
    // Labels live on the device: the kernel never indexes with one out of range (that
    // position's loss and gradient become NaN); pf.ops checks them before calling.
    if (logits.itemsize == 4)
        pyfast::cuda::softmax_xent(xent_args<float>(logits, labels, w, ignore_index, smoothing,
                                                    grad_scale, dlogits, losses), stream);
    else
        pyfast::cuda::softmax_xent(xent_args<double>(logits, labels, w, ignore_index, smoothing,
                                                     grad_scale, dlogits, losses), stream);
}

// A flat operand element i reads at [i % period]: 1-D, its size dividing m.
std::optional<CudaArray> periodic_operand(const py::object& obj, const char* name,
                                          const CudaArray& x, std::int64_t m) {
    if (obj.is_none()) return std::nullopt;
    CudaArray a = cuda_array(obj, name);
    check_dtype_like(a, name, x, "x");
    PYFAST_CHECK(a.ndim() == 1 && a.shape[0] >= 1 && m % a.shape[0] == 0, name,
                 " must be 1-D with a size that divides ", m, ", got shape ", tuple_str(a.shape));
    check_c_shape(a, name, a.shape);
    return a;
}

// x, y, grad (m,) and losses (m,) or None, checked; returns the losses array if given.
std::optional<CudaArray> pointwise_operands(const CudaArray& x, const CudaArray& y,
                                            const CudaArray& grad, const py::object& losses_obj) {
    PYFAST_CHECK(x.ndim() == 1, "x must be 1-D, got shape ", tuple_str(x.shape));
    check_c_shape(x, "x", x.shape);
    check_dtype_like(y, "y", x, "x");
    check_c_shape(y, "y", x.shape);
    check_dtype_like(grad, "grad", x, "x");
    check_c_shape(grad, "grad", x.shape);
    check_writable(grad, "grad");
    if (losses_obj.is_none()) return std::nullopt;
    CudaArray losses = cuda_array(losses_obj, "losses");
    check_dtype_like(losses, "losses", x, "x");
    check_c_shape(losses, "losses", x.shape);
    check_writable(losses, "losses");
    return losses;
}

template <typename T>
const T* typed(const std::optional<CudaArray>& a) {
    return a ? reinterpret_cast<const T*>(a->ptr) : nullptr;
}

py::object bce_with_logits_cuda(const py::object& x_obj, const py::object& y_obj,
                                const py::object& weight_obj, const py::object& pos_weight_obj,
                                double grad_scale, const py::object& grad_obj,
                                const py::object& losses_obj, const py::object& stream_obj) {
    const CudaArray x = cuda_array(x_obj, "x"), y = cuda_array(y_obj, "y");
    const CudaArray grad = cuda_array(grad_obj, "grad");
    check_finite_arg(grad_scale, "grad_scale");
    const std::optional<CudaArray> losses = pointwise_operands(x, y, grad, losses_obj);
    const std::int64_t m = x.shape[0];
    const std::optional<CudaArray> w = periodic_operand(weight_obj, "weight", x, m);
    const std::optional<CudaArray> pw = periodic_operand(pos_weight_obj, "pos_weight", x, m);
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("bce_with_logits", {{&x, "x"}, {&y, "y"}, {&grad, "grad"},
                                   {losses ? &*losses : nullptr, "losses"},
                                   {w ? &*w : nullptr, "weight"}, {pw ? &*pw : nullptr, "pos_weight"}});
    double total;
    {
        py::gil_scoped_release release;
        const auto run = [&](auto zero) {
            using T = decltype(zero);
            pyfast::cuda::BceArgs<T> a;
            a.x = reinterpret_cast<const T*>(x.ptr);
            a.y = reinterpret_cast<const T*>(y.ptr);
            a.weight = typed<T>(w);
            a.weight_period = w ? w->shape[0] : 1;
            a.pos_weight = typed<T>(pw);
            a.pos_weight_period = pw ? pw->shape[0] : 1;
            a.grad_scale = grad_scale;
            a.grad = reinterpret_cast<T*>(grad.ptr);
            a.losses = losses ? reinterpret_cast<T*>(losses->ptr) : nullptr;
            a.m = m;
            return pyfast::cuda::bce_with_logits(a, stream);
        };
        total = x.itemsize == 4 ? run(float{}) : run(double{});
    }
    return losses ? py::object(py::none()) : py::object(py::float_(total));
}

py::object mse_cuda(const py::object& x_obj, const py::object& y_obj, double grad_scale,
                    const py::object& grad_obj, const py::object& losses_obj,
                    const py::object& stream_obj) {
    const CudaArray x = cuda_array(x_obj, "x"), y = cuda_array(y_obj, "y");
    const CudaArray grad = cuda_array(grad_obj, "grad");
    check_finite_arg(grad_scale, "grad_scale");
    const std::optional<CudaArray> losses = pointwise_operands(x, y, grad, losses_obj);
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("mse", {{&x, "x"}, {&y, "y"}, {&grad, "grad"},
                       {losses ? &*losses : nullptr, "losses"}});
    double total;
    {
        py::gil_scoped_release release;
        const auto run = [&](auto zero) {
            using T = decltype(zero);
            return pyfast::cuda::mse<T>(reinterpret_cast<const T*>(x.ptr),
                                        reinterpret_cast<const T*>(y.ptr), grad_scale,
                                        reinterpret_cast<T*>(grad.ptr),
                                        losses ? reinterpret_cast<T*>(losses->ptr) : nullptr,
                                        x.shape[0], stream);
        };
        total = x.itemsize == 4 ? run(float{}) : run(double{});
    }
    return losses ? py::object(py::none()) : py::object(py::float_(total));
}

// ---- optim ------------------------------------------------------------------------------

std::vector<CudaArray> cuda_array_list(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
        throw py::type_error(std::string(name) + " must be a list of CUDA arrays, got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    std::vector<CudaArray> out;
    for (const py::handle item : py::reinterpret_borrow<py::sequence>(obj)) {
        const std::string label = std::string(name) + "[" + std::to_string(out.size()) + "]";
        out.push_back(cuda_array(item, label.c_str()));
    }
    return out;
}

// The checked lists of one optimizer call, as the kernels take them: params, grads and up to
// three state lists, one float dtype, C-contiguous, each entry shaped like its parameter,
// params and states writable and on the current device.
struct CudaOptimLists {
    std::vector<CudaArray> params, grads, states[3];
    bool has_state[3] = {false, false, false};

    CudaOptimLists(const py::handle& params_obj, const py::handle& grads_obj) {
        params = cuda_array_list(params_obj, "params");
        grads = cuda_array_list(grads_obj, "grads");
        PYFAST_CHECK(!params.empty(), "params is an empty list");
        PYFAST_CHECK(grads.size() == params.size(), "grads has ", grads.size(),
                     " arrays but params has ", params.size());
    }

    void add_state(int slot, const py::handle& obj, const char* name, bool needed) {
        if (!needed) return;
        PYFAST_CHECK(!obj.is_none(), name, " is required with these options");
        states[slot] = cuda_array_list(obj, name);
        PYFAST_CHECK(states[slot].size() == params.size(), name, " has ", states[slot].size(),
                     " arrays but params has ", params.size());
        has_state[slot] = true;
    }

    template <typename T>
    std::vector<pyfast::cuda::DeviceTensor<T>> tensors(const char* const names[3], int device) {
        std::vector<pyfast::cuda::DeviceTensor<T>> out;
        for (size_t i = 0; i < params.size(); ++i) {
            const std::string idx = "[" + std::to_string(i) + "]";
            const CudaArray& p = params[i];
            const std::string pname = "params" + idx;
            check_dtype_like(p, pname.c_str(), params[0], "params[0]");
            check_c_shape(p, pname.c_str(), p.shape);
            check_writable(p, pname.c_str());
            check_accessible(p, pname.c_str(), device);
            const std::string gname = "grads" + idx;
            check_dtype_like(grads[i], gname.c_str(), p, pname.c_str());
            check_c_shape(grads[i], gname.c_str(), p.shape);
            check_accessible(grads[i], gname.c_str(), device);
            pyfast::cuda::DeviceTensor<T> t{reinterpret_cast<T*>(p.ptr),
                                            reinterpret_cast<const T*>(grads[i].ptr),
                                            {nullptr, nullptr, nullptr}, 1};
            t.size = 1;
            for (const std::int64_t d : p.shape) t.size *= d;
            for (int j = 0; j < 3; ++j) {
                if (!has_state[j]) continue;
                const std::string sname = names[j] + idx;
                const CudaArray& st = states[j][i];
                check_dtype_like(st, sname.c_str(), p, pname.c_str());
                check_c_shape(st, sname.c_str(), p.shape);
                check_writable(st, sname.c_str());
                check_accessible(st, sname.c_str(), device);
                t.state[j] = reinterpret_cast<T*>(st.ptr);
            }
            out.push_back(t);
        }
        return out;
    }

    template <class F>
    void run(const char* what, const char* const names[3], const py::object& stream_obj, F&& f) {
        const cudaStream_t stream = stream_of(stream_obj);
        const int device = device_for(what, {});
        if (params[0].itemsize == 4) {
            auto list = tensors<float>(names, device);
            py::gil_scoped_release release;
            f(list, stream);
        } else {
            auto list = tensors<double>(names, device);
            py::gil_scoped_release release;
            f(list, stream);
        }
    }
};

void check_hyper_arg(double v, const char* name, double low, double high, bool high_open = false) {
    PYFAST_CHECK(std::isfinite(v) && v >= low && (high_open ? v < high : v <= high), name,
                 " must be a finite number in [", low, ", ", high, high_open ? ")" : "]",
                 ", got ", v);
}

void sgd_step_cuda(const py::object& params, const py::object& grads, const py::object& bufs,
                   double lr, double momentum, double dampening, bool nesterov,
                   double weight_decay, bool first, const py::object& stream) {
    check_hyper_arg(lr, "lr", 0, HUGE_VAL);
    check_hyper_arg(momentum, "momentum", 0, HUGE_VAL);
    check_hyper_arg(dampening, "dampening", 0, HUGE_VAL);
    check_hyper_arg(weight_decay, "weight_decay", 0, HUGE_VAL);
    PYFAST_CHECK(!nesterov || (momentum > 0 && dampening == 0),
                 "nesterov needs momentum > 0 and dampening == 0");
    CudaOptimLists lists(params, grads);
    lists.add_state(0, bufs, "momentum_bufs", momentum != 0);
    const pyfast::cuda::SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, first};
    static const char* const names[3] = {"momentum_bufs", "", ""};
    lists.run("sgd_step", names, stream,
              [&](const auto& list, cudaStream_t s) { pyfast::cuda::sgd_step(list, h, s); });
}

void rmsprop_step_cuda(const py::object& params, const py::object& grads,
                       const py::object& square_avgs, const py::object& bufs,
                       const py::object& grad_avgs, double lr, double alpha, double eps,
                       double weight_decay, double momentum, bool centered,
                       const py::object& stream) {
    check_hyper_arg(lr, "lr", 0, HUGE_VAL);
    check_hyper_arg(alpha, "alpha", 0, 1);
    check_hyper_arg(eps, "eps", 0, HUGE_VAL);
    check_hyper_arg(weight_decay, "weight_decay", 0, HUGE_VAL);
    check_hyper_arg(momentum, "momentum", 0, HUGE_VAL);
    CudaOptimLists lists(params, grads);
    lists.add_state(0, square_avgs, "square_avgs", true);
    lists.add_state(1, bufs, "momentum_bufs", momentum > 0);
    lists.add_state(2, grad_avgs, "grad_avgs", centered);
    const pyfast::cuda::RmspropHyper h{lr, alpha, eps, weight_decay, momentum, centered};
    static const char* const names[3] = {"square_avgs", "momentum_bufs", "grad_avgs"};
    lists.run("rmsprop_step", names, stream,
              [&](const auto& list, cudaStream_t s) { pyfast::cuda::rmsprop_step(list, h, s); });
}

void adam_step_cuda(const py::object& params, const py::object& grads, const py::object& exp_avgs,
                    const py::object& exp_avg_sqs, const py::object& max_exp_avg_sqs,
                    std::int64_t step, double lr, double beta1, double beta2, double eps,
                    double weight_decay, bool decoupled, bool amsgrad, const py::object& stream) {
    PYFAST_CHECK(step >= 1, "step must be >= 1 (steps count from 1), got ", step);
    check_hyper_arg(lr, "lr", 0, HUGE_VAL);
    check_hyper_arg(beta1, "beta1", 0, 1, true);
    check_hyper_arg(beta2, "beta2", 0, 1, true);
    check_hyper_arg(eps, "eps", 0, HUGE_VAL);
    check_hyper_arg(weight_decay, "weight_decay", 0, HUGE_VAL);
    CudaOptimLists lists(params, grads);
    lists.add_state(0, exp_avgs, "exp_avgs", true);
    lists.add_state(1, exp_avg_sqs, "exp_avg_sqs", true);
    lists.add_state(2, max_exp_avg_sqs, "max_exp_avg_sqs", amsgrad);
    const pyfast::cuda::AdamHyper h{lr, beta1, beta2, eps, weight_decay, step, decoupled, amsgrad};
    static const char* const names[3] = {"exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"};
    lists.run("adam_step", names, stream,
              [&](const auto& list, cudaStream_t s) { pyfast::cuda::adam_step(list, h, s); });
}

// ---- conv -------------------------------------------------------------------------------

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
    device_for("conv2d", {{&x, "x"}, {&w, "w"}, {&out, "out"}, {has_bias ? &bias : nullptr, "bias"}});
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
    device_for("conv2d_backward", {{&gy, "gy"}, {&w, "w"}, {has_x ? &x : nullptr, "x"},
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
    device_for("conv_transpose2d",
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
    m.attr("FAMILIES") = py::make_tuple("gemm", "conv", "softmax_xent", "optim");

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

    m.def("softmax", &softmax_cuda, py::arg("x"), py::arg("out"), py::arg("log"), py::kw_only(),
          py::arg("stream"),
          "out = softmax (log=True: log-softmax) of x over axis 1; x and out (A, C, B) "
          "C-contiguous CUDA arrays of one float dtype; enqueued on `stream`.");
    m.def("softmax_xent", &softmax_xent_cuda, py::arg("logits"), py::arg("labels"),
          py::arg("weight"), py::arg("ignore_index"), py::arg("smoothing"), py::arg("grad_scale"),
          py::arg("dlogits"), py::arg("losses"), py::kw_only(), py::arg("stream"),
          "Per-position softmax cross-entropy losses (N, S) and grad_scale * their gradient "
          "(N, C, S) in one pass; labels (N, S) int64 (one out of range makes that position "
          "NaN, never an out-of-bounds read); weight (C,) or None; dlogits may be logits.");
    m.def("bce_with_logits", &bce_with_logits_cuda, py::arg("x"), py::arg("y"), py::arg("weight"),
          py::arg("pos_weight"), py::arg("grad_scale"), py::arg("grad"), py::arg("losses"),
          py::kw_only(), py::arg("stream"),
          "Binary cross-entropy with logits over flat (M,) CUDA arrays and grad_scale * its "
          "gradient; returns the loss sum (waiting for it) when losses is None.");
    m.def("mse", &mse_cuda, py::arg("x"), py::arg("y"), py::arg("grad_scale"), py::arg("grad"),
          py::arg("losses"), py::kw_only(), py::arg("stream"),
          "(x - y)^2 over flat (M,) CUDA arrays and grad_scale * its gradient; returns the loss "
          "sum (waiting for it) when losses is None.");
    m.def("sgd_step", &sgd_step_cuda, py::arg("params"), py::arg("grads"),
          py::arg("momentum_bufs"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
          py::arg("nesterov"), py::arg("weight_decay"), py::arg("first"), py::kw_only(),
          py::arg("stream"), "torch.optim.SGD's step over lists of CUDA arrays, one launch.");
    m.def("rmsprop_step", &rmsprop_step_cuda, py::arg("params"), py::arg("grads"),
          py::arg("square_avgs"), py::arg("momentum_bufs"), py::arg("grad_avgs"), py::arg("lr"),
          py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
          py::arg("centered"), py::kw_only(), py::arg("stream"),
          "torch.optim.RMSprop's step over lists of CUDA arrays, one launch.");
    m.def("adam_step", &adam_step_cuda, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("step"), py::arg("lr"),
          py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("decoupled"), py::arg("amsgrad"), py::kw_only(), py::arg("stream"),
          "torch.optim.Adam's (decoupled: AdamW's) step over lists of CUDA arrays, one launch.");
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
