// Argument plumbing of pyfast._cuda's bindings. Arrays arrive as any object with
// __cuda_array_interface__ (CuPy's, Numba's, PyTorch's); CudaArray is what that dict says.
// Every check runs before anything is enqueued, so a direct call with bad arguments raises
// instead of crashing the interpreter or faulting the GPU: dtype (TypeError), shape, layout
// and writeability (ValueError), and the device that holds the memory (device_for).
//
// Compiled by the host compiler, not nvcc: only the CUDA runtime API is seen here.
#pragma once

#include <pybind11/pybind11.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "cuda/common.cuh"

namespace pyfast::binding {

// ---- devices -------------------------------------------------------------------------------

// 0 (never an error) without a driver or a device.
inline int device_count() {
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

inline std::string cuda_version_str(int v) {
    return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// "N devices", or why there is none in CUDA's words.
inline std::string device_status() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaSuccess && n > 0) return std::to_string(n) + (n == 1 ? " device" : " devices");
    cudaGetLastError();
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    const std::string why =
        err == cudaSuccess ? "no CUDA-capable device is detected" : cudaGetErrorString(err);
    return why + " (runtime " + cuda_version_str(runtime) + ", driver " +
           (driver ? cuda_version_str(driver) : std::string("not installed")) + ")";
}

// ---- arrays --------------------------------------------------------------------------------

// What __cuda_array_interface__ says about one array. Strides are in bytes and always
// filled in (the interface's None means C-contiguous).
struct CudaArray {
    std::uintptr_t ptr = 0;
    bool readonly = false;
    std::string typestr;
    std::int64_t itemsize = 0;
    std::vector<std::int64_t> shape, strides;

    int ndim() const { return static_cast<int>(shape.size()); }
    std::int64_t size() const {
        std::int64_t n = 1;
        for (const std::int64_t e : shape) n *= e;
        return n;
    }
    template <typename T>
    T* data() const {
        return reinterpret_cast<T*>(ptr);
    }
};

inline std::string shape_str(const CudaArray& x) { return shape_str(x.shape); }

// An optional array's data: nullptr for None.
template <typename T>
T* data_or_null(const std::optional<CudaArray>& x) {
    return x ? x->data<T>() : nullptr;
}

inline std::string dtype_name(const std::string& typestr) {
    if (typestr == "<f4") return "float32";
    if (typestr == "<f8") return "float64";
    if (typestr == "<i8") return "int64";
    return "typestr '" + typestr + "'";
}

inline std::vector<std::int64_t> int_tuple(const py::handle& seq) {
    if (!py::isinstance<py::tuple>(seq) && !py::isinstance<py::list>(seq))
        throw py::cast_error("expected a tuple of ints, got " + type_name(seq));
    std::vector<std::int64_t> v;
    for (const py::handle item : py::reinterpret_borrow<py::sequence>(seq))
        v.push_back(item.cast<std::int64_t>());
    return v;
}

// Reads obj's __cuda_array_interface__ for one of the typestrs `accepted` (TypeError
// otherwise, naming `wanted`): sizes >= 0, strides non-negative multiples of the item size,
// the pointer aligned to it (ValueError otherwise).
inline CudaArray read_cuda_array(const py::handle& obj, const char* name,
                                 std::initializer_list<const char*> accepted, const char* wanted) {
    const py::object cai = py::getattr(obj, "__cuda_array_interface__", py::none());
    if (!py::isinstance<py::dict>(cai))
        throw py::type_error(std::string(name) +
                             " must be a CUDA array (an object with __cuda_array_interface__, "
                             "such as a cupy.ndarray), got " + type_name(obj));
    CudaArray x;
    try {
        const py::dict d = cai.cast<py::dict>();
        x.shape = int_tuple(d["shape"]);
        x.typestr = d["typestr"].cast<std::string>();
        const py::tuple data = d["data"].cast<py::tuple>();
        PYFAST_CHECK(data.size() == 2, name,
                     ": __cuda_array_interface__['data'] must be (ptr, readonly)");
        x.ptr = data[0].cast<std::uintptr_t>();
        x.readonly = data[1].cast<bool>();
        if (d.contains("mask") && !d["mask"].is_none())
            fail(name, " has a mask; masked CUDA arrays are not supported");
        if (d.contains("strides") && !d["strides"].is_none()) x.strides = int_tuple(d["strides"]);
    } catch (const py::cast_error& e) {
        throw py::type_error(std::string(name) + ": malformed __cuda_array_interface__ (" +
                             e.what() + ")");
    } catch (const py::error_already_set& e) {
        throw py::type_error(std::string(name) + ": malformed __cuda_array_interface__ (" +
                             e.what() + ")");
    }
    bool ok = false;
    for (const char* t : accepted) ok = ok || x.typestr == t;
    if (!ok)
        throw py::type_error(std::string(name) + " must be " + wanted + ", got " +
                             dtype_name(x.typestr));
    x.itemsize = x.typestr[2] - '0';
    for (const std::int64_t s : x.shape)
        PYFAST_CHECK(s >= 0, name, " has a negative size in its shape ", shape_str(x));
    if (x.strides.empty()) {  // C-contiguous
        x.strides.assign(x.shape.size(), x.itemsize);
        for (int i = x.ndim() - 2; i >= 0; --i) x.strides[i] = x.strides[i + 1] * x.shape[i + 1];
    }
    PYFAST_CHECK(x.strides.size() == x.shape.size(), name, " has strides ", shape_str(x.strides),
                 " that do not match its shape ", shape_str(x));
    for (const std::int64_t s : x.strides)
        PYFAST_CHECK(s >= 0 && s % x.itemsize == 0, name, " has strides ", shape_str(x.strides),
                     " (bytes); each must be a non-negative multiple of the item size ",
                     x.itemsize);
    PYFAST_CHECK(x.ptr % x.itemsize == 0, name, "'s data pointer is not aligned to its item size ",
                 x.itemsize);
    return x;
}

// A float32 or float64 CUDA array, the dtypes the kernels compute in.
inline CudaArray cuda_array(const py::handle& obj, const char* name) {
    return read_cuda_array(obj, name, {"<f4", "<f8"}, "float32 or float64");
}

// An int64 CUDA array (labels).
inline CudaArray cuda_int64_array(const py::handle& obj, const char* name) {
    return read_cuda_array(obj, name, {"<i8"}, "int64");
}

inline std::optional<CudaArray> optional_cuda_array(const py::handle& obj, const char* name) {
    if (obj.is_none()) return std::nullopt;
    return cuda_array(obj, name);
}

// Calls f(T{}) with T x's float type (read_cuda_array let nothing else through).
template <class F>
decltype(auto) on_float_type(const CudaArray& x, F&& f) {
    if (x.itemsize == 4) return f(float{});
    return f(double{});
}

// ---- checks --------------------------------------------------------------------------------

// All arrays of a call share one dtype, that of the one it is compared with.
inline void check_dtype_like(const CudaArray& x, const char* name, const CudaArray& ref,
                             const char* ref_name) {
    if (x.typestr != ref.typestr)
        throw py::type_error(std::string(name) + " is " + dtype_name(x.typestr) + " but " +
                             ref_name + " is " + dtype_name(ref.typestr) +
                             "; pass all as float32 or all as float64");
}

inline void check_shape(const CudaArray& x, const char* name,
                        const std::vector<std::int64_t>& shape) {
    PYFAST_CHECK(x.shape == shape, name, " must have shape ", shape_str(shape), ", got ",
                 shape_str(x));
}

// The strides of extent-1 axes do not matter.
inline void check_c_contiguous(const CudaArray& x, const char* name) {
    std::int64_t expected = x.itemsize;
    for (int i = x.ndim() - 1; i >= 0; --i) {
        PYFAST_CHECK(x.shape[i] <= 1 || x.strides[i] == expected, name,
                     " must be C-contiguous, got strides ", shape_str(x.strides),
                     " (bytes) for shape ", shape_str(x));
        expected *= x.shape[i];
    }
}

inline void check_writable(const CudaArray& x, const char* name) {
    PYFAST_CHECK(!x.readonly, name, " is read-only");
}

// x has exactly `shape` and is C-contiguous.
inline void check_c_shape(const CudaArray& x, const char* name,
                          const std::vector<std::int64_t>& shape) {
    check_shape(x, name, shape);
    check_c_contiguous(x, name);
}

// ---- where the kernels run -----------------------------------------------------------------

// CuPy's Stream.ptr: 0 is the legacy default stream, 1 and 2 are cudaStreamLegacy and
// cudaStreamPerThread, anything else a cudaStream_t.
inline cudaStream_t stream_of(const py::handle& stream) {
    if (!PyIndex_Check(stream.ptr()) || py::isinstance<py::bool_>(stream))
        throw py::type_error("stream must be an int (a cudaStream_t as an integer), got " +
                             type_name(stream));
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

// Memory the kernel will touch must be on the device it runs on (the current one): a
// pointer into another GPU's memory or into pageable host memory would fault the device.
inline void check_accessible(const CudaArray& x, const char* name, int device) {
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

// One argument of device_for: an array (or an absent optional one) and its name.
struct NamedArray {
    const CudaArray* array;
    const char* name;
    NamedArray(const CudaArray& x, const char* n) : array(&x), name(n) {}
    NamedArray(const std::optional<CudaArray>& x, const char* n)
        : array(x ? &*x : nullptr), name(n) {}
};

// The device the kernels of `what` run on (the current one), after checking that there is
// one and that every non-empty array lives where it can reach (an empty array may have no
// memory at all).
inline int device_for(const char* what, std::initializer_list<NamedArray> arrays) {
    if (device_count() == 0)
        throw std::runtime_error(std::string(what) + ": no CUDA device (" + device_status() + ")");
    int device = 0;
    pyfast::cuda::check(cudaGetDevice(&device), "cudaGetDevice");
    for (const NamedArray& a : arrays)
        if (a.array && a.array->size() > 0) check_accessible(*a.array, a.name, device);
    return device;
}

}  // namespace pyfast::binding
