// pyfast._cuda's linear_xent family: the fused classifier matmul + softmax cross-entropy.
// The labels stay on the device: the kernel never indexes with one out of range (that row
// becomes NaN), and pf.ops checks them before calling.

#include <cmath>

#include "bindings/cuda_arrays.h"
#include "cuda/linear_xent.h"

namespace pyfast::binding {
namespace {

// An array of ref's dtype, exactly `shape` and C-contiguous; writable when `out`.
CudaArray typed(const py::handle& obj, const char* name, const CudaArray& ref,
                const std::vector<std::int64_t>& shape, bool out) {
    const CudaArray x = cuda_array(obj, name);
    check_dtype_like(x, name, ref, "h");
    check_c_shape(x, name, shape);
    if (out) check_writable(x, name);
    return x;
}

void linear_xent(const py::object& h_obj, const py::object& w_obj, const py::object& bias_obj,
                 const py::object& labels_obj, std::int64_t ignore_index, double smoothing,
                 double grad_scale, const py::object& losses_obj, const py::object& dh_obj,
                 const py::object& dw_obj, const py::object& db_obj,
                 const py::object& workspace_obj, const py::object& stream_obj) {
    const CudaArray h = cuda_array(h_obj, "h");
    PYFAST_CHECK(h.ndim() == 2 && h.shape[1] >= 1, "h must be 2-D (N, D) with D >= 1, got shape ",
                 shape_str(h));
    const std::int64_t n = h.shape[0], d = h.shape[1];
    check_c_shape(h, "h", {n, d});
    const CudaArray w = cuda_array(w_obj, "w");
    PYFAST_CHECK(w.ndim() == 2 && w.shape[1] == d && w.shape[0] >= 1 && w.shape[0] <= INT32_MAX,
                 "w must be (V, ", d, ") with 1 <= V < 2^31 for h of shape ", shape_str(h),
                 ", got shape ", shape_str(w));
    const std::int64_t v = w.shape[0];
    check_dtype_like(w, "w", h, "h");
    check_c_shape(w, "w", {v, d});
    PYFAST_CHECK(std::isfinite(smoothing) && smoothing >= 0 && smoothing <= 1,
                 "smoothing must be in [0, 1], got ", smoothing);
    check_finite(grad_scale, "grad_scale");
    PYFAST_CHECK(bias_obj.is_none() == db_obj.is_none(),
                 "bias and db must both be given or both None");
    std::optional<CudaArray> bias, db;
    if (!bias_obj.is_none()) {
        bias = typed(bias_obj, "bias", h, {v}, false);
        db = typed(db_obj, "db", h, {v}, true);
    }
    const CudaArray labels = cuda_int64_array(labels_obj, "labels");
    check_c_shape(labels, "labels", {n});
    const CudaArray losses = typed(losses_obj, "losses", h, {n}, true);
    const CudaArray dh = typed(dh_obj, "dh", h, {n, d}, true);
    const CudaArray dw = typed(dw_obj, "dw", h, {v, d}, true);
    const CudaArray ws = cuda_array(workspace_obj, "workspace");
    PYFAST_CHECK(ws.ndim() == 2 && ws.shape[0] >= 1 && ws.shape[1] == v,
                 "workspace must be (R, ", v, ") with R >= 1, got shape ", shape_str(ws));
    const CudaArray workspace = typed(workspace_obj, "workspace", h, ws.shape, true);
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("linear_xent", {{h, "h"}, {w, "w"}, {bias, "bias"}, {labels, "labels"},
                               {losses, "losses"}, {dh, "dh"}, {dw, "dw"}, {db, "db"},
                               {workspace, "workspace"}});
    py::gil_scoped_release release;
    on_float_type(h, [&](auto zero) {
        using T = decltype(zero);
        cuda::LinearXentArgs<T> a;
        a.h = h.data<const T>();
        a.w = w.data<const T>();
        a.bias = data_or_null<const T>(bias);
        a.labels = labels.data<const std::int64_t>();
        a.ignore_index = ignore_index;
        a.smoothing = smoothing;
        a.grad_scale = grad_scale;
        a.losses = losses.data<T>();
        a.dh = dh.data<T>();
        a.dw = dw.data<T>();
        a.db = data_or_null<T>(db);
        a.workspace = workspace.data<T>();
        a.n = n;
        a.d = d;
        a.v = v;
        a.block_rows = workspace.shape[0];
        cuda::linear_xent(a, stream);
    });
}

}  // namespace

void bind_linear_xent(py::module_& m) {
    m.def("linear_xent", &linear_xent, py::arg("h"), py::arg("w"), py::arg("bias"),
          py::arg("labels"), py::arg("ignore_index"), py::arg("smoothing"), py::arg("grad_scale"),
          py::arg("losses"), py::arg("dh"), py::arg("dw"), py::arg("db"), py::arg("workspace"),
          py::kw_only(), py::arg("stream"),
          "Per-row cross-entropy losses (N,) of h @ w.T + bias and grad_scale * the gradients "
          "dh, dw, db of their sum, the logits workspace.shape[0] rows at a time into "
          "workspace (R, V); CUDA arrays of one float dtype, labels int64; enqueued on `stream`.");
}

}  // namespace pyfast::binding
