// pyfast._cuda's softmax_xent family: softmax, the fused softmax cross-entropy, binary
// cross-entropy with logits and mean squared error. The labels stay on the device: the
// kernel never indexes with one out of range (that position's loss and gradient become
// NaN), and pf.ops checks them before calling.

#include "bindings/cuda_arrays.h"
#include "common/softmax_xent_args.h"
#include "cuda/softmax_xent.h"

namespace pyfast::binding {
namespace {

// An operand of ref's dtype, exactly `shape` and C-contiguous.
CudaArray operand(const py::handle& obj, const char* name, const CudaArray& ref,
                  const char* ref_name, const std::vector<std::int64_t>& shape) {
    const CudaArray x = cuda_array(obj, name);
    check_dtype_like(x, name, ref, ref_name);
    check_c_shape(x, name, shape);
    return x;
}

// The same, written by the kernel.
CudaArray result(const py::handle& obj, const char* name, const CudaArray& ref,
                 const char* ref_name, const std::vector<std::int64_t>& shape) {
    const CudaArray x = operand(obj, name, ref, ref_name, shape);
    check_writable(x, name);
    return x;
}

void softmax(const py::object& x_obj, const py::object& out_obj, bool log,
             const py::object& stream_obj) {
    const CudaArray x = cuda_array(x_obj, "x"), out = cuda_array(out_obj, "out");
    check_dtype_like(out, "out", x, "x");
    PYFAST_CHECK(x.ndim() == 3, "x must be 3-D (A, C, B), softmax over axis 1; got shape ",
                 shape_str(x));
    check_c_shape(x, "x", x.shape);
    check_c_shape(out, "out", x.shape);
    check_writable(out, "out");
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("softmax", {{x, "x"}, {out, "out"}});
    const std::int64_t a = x.shape[0], c = x.shape[1], b = x.shape[2];
    py::gil_scoped_release release;
    on_float_type(x, [&](auto zero) {
        using T = decltype(zero);
        cuda::softmax<T>(x.data<const T>(), out.data<T>(), a, c, b, log, stream);
    });
}

void softmax_xent(const py::object& logits_obj, const py::object& labels_obj,
                  const py::object& weight_obj, std::int64_t ignore_index, double smoothing,
                  double grad_scale, const py::object& dlogits_obj, const py::object& losses_obj,
                  const py::object& stream_obj) {
    const CudaArray logits = cuda_array(logits_obj, "logits");
    check_xent_args(logits.shape, smoothing, grad_scale);
    const std::int64_t n = logits.shape[0], c = logits.shape[1], s = logits.shape[2];
    check_c_shape(logits, "logits", {n, c, s});
    const CudaArray labels = cuda_int64_array(labels_obj, "labels");
    check_c_shape(labels, "labels", {n, s});
    const CudaArray dlogits = result(dlogits_obj, "dlogits", logits, "logits", {n, c, s});
    const CudaArray losses = result(losses_obj, "losses", logits, "logits", {n, s});
    std::optional<CudaArray> weight;
    if (!weight_obj.is_none()) weight = operand(weight_obj, "weight", logits, "logits", {c});
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("softmax_xent", {{logits, "logits"}, {labels, "labels"}, {dlogits, "dlogits"},
                                {losses, "losses"}, {weight, "weight"}});
    py::gil_scoped_release release;
    on_float_type(logits, [&](auto zero) {
        using T = decltype(zero);
        cuda::XentArgs<T> a;
        a.logits = logits.data<const T>();
        a.labels = labels.data<const std::int64_t>();
        a.weight = data_or_null<const T>(weight);
        a.ignore_index = ignore_index;
        a.smoothing = smoothing;
        a.grad_scale = grad_scale;
        a.dlogits = dlogits.data<T>();
        a.losses = losses.data<T>();
        a.n = n;
        a.c = c;
        a.s = s;
        cuda::softmax_xent(a, stream);
    });
}

// The flat operands of bce_with_logits and mse: x, y, grad (M,) of one dtype, and the
// per-element losses (M,) or None.
struct Pointwise {
    CudaArray x, y, grad;
    std::optional<CudaArray> losses;

    Pointwise(const py::object& x_obj, const py::object& y_obj, const py::object& grad_obj,
              double grad_scale, const py::object& losses_obj)
        : x(cuda_array(x_obj, "x")), y(cuda_array(y_obj, "y")),
          grad(cuda_array(grad_obj, "grad")) {
        check_finite(grad_scale, "grad_scale");
        PYFAST_CHECK(x.ndim() == 1, "x must be 1-D, got shape ", shape_str(x));
        check_c_shape(x, "x", x.shape);
        check_dtype_like(y, "y", x, "x");
        check_c_shape(y, "y", x.shape);
        check_dtype_like(grad, "grad", x, "x");
        check_c_shape(grad, "grad", x.shape);
        check_writable(grad, "grad");
        if (!losses_obj.is_none()) losses = result(losses_obj, "losses", x, "x", x.shape);
    }

    std::int64_t m() const { return x.shape[0]; }

    // What the binding returns: the loss sum when no per-element losses were asked for.
    py::object returned(double total) const {
        return losses ? py::object(py::none()) : py::object(py::float_(total));
    }
};

// weight or pos_weight of bce_with_logits: read at [i % period], C-contiguous.
std::optional<CudaArray> periodic_operand(const py::object& obj, const char* name,
                                          const CudaArray& x, std::int64_t m) {
    if (obj.is_none()) return std::nullopt;
    CudaArray a = cuda_array(obj, name);
    check_dtype_like(a, name, x, "x");
    check_period(a.shape, name, m);
    check_c_contiguous(a, name);
    return a;
}

py::object bce_with_logits(const py::object& x_obj, const py::object& y_obj,
                           const py::object& weight_obj, const py::object& pos_weight_obj,
                           double grad_scale, const py::object& grad_obj,
                           const py::object& losses_obj, const py::object& stream_obj) {
    const Pointwise p(x_obj, y_obj, grad_obj, grad_scale, losses_obj);
    const std::int64_t m = p.m();
    const std::optional<CudaArray> w = periodic_operand(weight_obj, "weight", p.x, m);
    const std::optional<CudaArray> pw = periodic_operand(pos_weight_obj, "pos_weight", p.x, m);
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("bce_with_logits", {{p.x, "x"}, {p.y, "y"}, {p.grad, "grad"},
                                   {p.losses, "losses"}, {w, "weight"}, {pw, "pos_weight"}});
    double total;
    {
        py::gil_scoped_release release;
        total = on_float_type(p.x, [&](auto zero) {
            using T = decltype(zero);
            cuda::BceArgs<T> a;
            a.x = p.x.data<const T>();
            a.y = p.y.data<const T>();
            a.weight = data_or_null<const T>(w);
            a.weight_period = w ? w->shape[0] : 1;
            a.pos_weight = data_or_null<const T>(pw);
            a.pos_weight_period = pw ? pw->shape[0] : 1;
            a.grad_scale = grad_scale;
            a.grad = p.grad.data<T>();
            a.losses = data_or_null<T>(p.losses);
            a.m = m;
            return cuda::bce_with_logits(a, stream);
        });
    }
    return p.returned(total);
}

py::object mse(const py::object& x_obj, const py::object& y_obj, double grad_scale,
               const py::object& grad_obj, const py::object& losses_obj,
               const py::object& stream_obj) {
    const Pointwise p(x_obj, y_obj, grad_obj, grad_scale, losses_obj);
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("mse", {{p.x, "x"}, {p.y, "y"}, {p.grad, "grad"}, {p.losses, "losses"}});
    double total;
    {
        py::gil_scoped_release release;
        total = on_float_type(p.x, [&](auto zero) {
            using T = decltype(zero);
            return cuda::mse<T>(p.x.data<const T>(), p.y.data<const T>(), grad_scale,
                                p.grad.data<T>(), data_or_null<T>(p.losses), p.m(), stream);
        });
    }
    return p.returned(total);
}

}  // namespace

void bind_softmax_xent(py::module_& m) {
    m.def("softmax", &softmax, py::arg("x"), py::arg("out"), py::arg("log"), py::kw_only(),
          py::arg("stream"),
          "out = softmax (log=True: log-softmax) of x over axis 1; x and out (A, C, B) "
          "C-contiguous CUDA arrays of one float dtype; enqueued on `stream`.");
    m.def("softmax_xent", &softmax_xent, py::arg("logits"), py::arg("labels"),
          py::arg("weight"), py::arg("ignore_index"), py::arg("smoothing"), py::arg("grad_scale"),
          py::arg("dlogits"), py::arg("losses"), py::kw_only(), py::arg("stream"),
          "Per-position softmax cross-entropy losses (N, S) and grad_scale * their gradient "
          "(N, C, S) in one pass; labels (N, S) int64 (one out of range makes that position "
          "NaN, never an out-of-bounds read); weight (C,) or None; dlogits may be logits.");
    m.def("bce_with_logits", &bce_with_logits, py::arg("x"), py::arg("y"), py::arg("weight"),
          py::arg("pos_weight"), py::arg("grad_scale"), py::arg("grad"), py::arg("losses"),
          py::kw_only(), py::arg("stream"),
          "Binary cross-entropy with logits over flat (M,) CUDA arrays and grad_scale * its "
          "gradient; returns the loss sum (waiting for it) when losses is None.");
    m.def("mse", &mse, py::arg("x"), py::arg("y"), py::arg("grad_scale"), py::arg("grad"),
          py::arg("losses"), py::kw_only(), py::arg("stream"),
          "(x - y)^2 over flat (M,) CUDA arrays and grad_scale * its gradient; returns the loss "
          "sum (waiting for it) when losses is None.");
}

}  // namespace pyfast::binding
