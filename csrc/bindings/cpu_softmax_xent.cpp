// pyfast._C's softmax_xent family: softmax, the fused softmax cross-entropy (losses and
// gradient in one pass), binary cross-entropy with logits and mean squared error. The
// integer labels index memory, so every one is checked before the kernel runs.

#include "bindings/arrays.h"
#include "common/softmax_xent_args.h"
#include "cpu/softmax_xent.h"

namespace pyfast::binding {
namespace {

void softmax(const py::array& x, py::array out, bool log) {
    PYFAST_CHECK(x.ndim() == 3, "x must be 3-D (A, C, B), softmax over axis 1; got shape ",
                 shape_str(x));
    const std::vector<py::ssize_t> shape{x.shape(0), x.shape(1), x.shape(2)};
    on_float_type(x, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = input<T>(x, "x", shape);
        T* po = output<T>(out, "out", shape);
        py::gil_scoped_release release;
        pyfast::softmax<T>(px, po, shape[0], shape[1], shape[2], log);
    });
}

void softmax_xent(const py::array& logits, const py::array& labels,
                  const std::optional<py::array>& weight, std::int64_t ignore_index,
                  double smoothing, double grad_scale, py::array dlogits, py::array losses) {
    const std::vector<py::ssize_t> shape = shape_of(logits);
    check_xent_args(shape, smoothing, grad_scale);
    const py::ssize_t n = shape[0], c = shape[1], s = shape[2];
    const auto* py_labels = input<std::int64_t>(labels, "labels", {n, s});
    on_float_type(logits, "logits", [&](auto zero) {
        using T = decltype(zero);
        XentArgs<T> a;
        a.logits = input<T>(logits, "logits", {n, c, s});
        a.weight = optional_input<T>(weight, "weight", c);
        a.dlogits = output<T>(dlogits, "dlogits", {n, c, s});
        a.losses = output<T>(losses, "losses", {n, s});
        a.labels = py_labels;
        a.ignore_index = ignore_index;
        a.smoothing = smoothing;
        a.grad_scale = grad_scale;
        a.n = n;
        a.c = c;
        a.s = s;
        py::gil_scoped_release release;
        // The labels index the logits: every one is checked before anything is read or written.
        const std::int64_t bad = pyfast::first_bad_label(py_labels, n * s, c, ignore_index);
        if (bad >= 0)
            fail("labels must be in [0, ", c, ") or ignore_index=", ignore_index, "; labels[",
                 bad / s, ", ", bad % s, "] is ", py_labels[bad]);
        pyfast::softmax_xent<T>(a);
    });
}

// weight or pos_weight of bce_with_logits: read at [i % period], C-contiguous.
template <typename T>
const T* periodic(const std::optional<py::array>& x, const char* name, py::ssize_t m,
                  std::int64_t* period) {
    *period = 0;
    if (!x) return nullptr;
    *period = check_period(shape_of(*x), name, m);
    return input<T>(*x, name);
}

py::object bce_with_logits(const py::array& x, const py::array& y,
                           const std::optional<py::array>& weight,
                           const std::optional<py::array>& pos_weight, double grad_scale,
                           py::array grad, const std::optional<py::array>& losses) {
    check_ndim(x, 1, "x", "1-D");
    check_finite(grad_scale, "grad_scale");
    const py::ssize_t m = x.shape(0);
    return on_float_type(x, "x", [&](auto zero) {
        using T = decltype(zero);
        BceArgs<T> a;
        a.x = input<T>(x, "x", {m});
        a.y = input<T>(y, "y", {m});
        a.weight = periodic<T>(weight, "weight", m, &a.weight_period);
        a.pos_weight = periodic<T>(pos_weight, "pos_weight", m, &a.pos_weight_period);
        a.grad = output<T>(grad, "grad", {m});
        a.losses = optional_output<T>(losses, "losses", m);
        a.grad_scale = grad_scale;
        a.m = m;
        double total;
        {
            py::gil_scoped_release release;
            total = pyfast::bce_with_logits<T>(a);
        }
        return losses ? py::object(py::none()) : py::object(py::float_(total));
    });
}

py::object mse(const py::array& x, const py::array& y, double grad_scale, py::array grad,
               const std::optional<py::array>& losses) {
    check_ndim(x, 1, "x", "1-D");
    check_finite(grad_scale, "grad_scale");
    const py::ssize_t m = x.shape(0);
    return on_float_type(x, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = input<T>(x, "x", {m});
        const T* py_ = input<T>(y, "y", {m});
        T* pg = output<T>(grad, "grad", {m});
        T* pl = optional_output<T>(losses, "losses", m);
        double total;
        {
            py::gil_scoped_release release;
            total = pyfast::mse<T>(px, py_, grad_scale, pg, pl, m);
        }
        return losses ? py::object(py::none()) : py::object(py::float_(total));
    });
}

}  // namespace

void bind_softmax_xent(py::module_& m) {
    m.def("softmax", &softmax, py::arg("x"), py::arg("out"), py::arg("log"),
          "out = softmax (log=True: log-softmax) of x over axis 1; x and out (A, C, B) "
          "C-contiguous, one float dtype.");
    m.def("softmax_xent", &softmax_xent, py::arg("logits"), py::arg("labels"), py::arg("weight"),
          py::arg("ignore_index"), py::arg("smoothing"), py::arg("grad_scale"),
          py::arg("dlogits"), py::arg("losses"),
          "Per-position softmax cross-entropy losses (N, S) and grad_scale * their gradient "
          "(N, C, S) in one pass. labels (N, S) int64 in [0, C) or ignore_index (checked); "
          "weight (C,) or None; dlogits may be logits itself.");
    m.def("bce_with_logits", &bce_with_logits, py::arg("x"), py::arg("y"), py::arg("weight"),
          py::arg("pos_weight"), py::arg("grad_scale"), py::arg("grad"), py::arg("losses"),
          "Binary cross-entropy with logits over flat (M,) arrays and grad_scale * its gradient; "
          "weight and pos_weight (P,) with P dividing M (element i takes [i % P]) or None. "
          "Returns the loss sum when losses is None.");
    m.def("mse", &mse, py::arg("x"), py::arg("y"), py::arg("grad_scale"), py::arg("grad"),
          py::arg("losses"),
          "(x - y)^2 over flat (M,) arrays and grad_scale * its gradient; returns the loss sum "
          "when losses is None.");
}

}  // namespace pyfast::binding
