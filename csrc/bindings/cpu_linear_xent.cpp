// pyfast._C's linear_xent family: the fused classifier matmul + softmax cross-entropy.
// The labels index w's rows, so every one is checked before the kernel runs.

#include "bindings/arrays.h"
#include "cpu/linear_xent.h"
#include "cpu/softmax_xent.h"

namespace pyfast::binding {
namespace {

void linear_xent(const py::array& h, const py::array& w, const std::optional<py::array>& bias,
                 const py::array& labels, std::int64_t ignore_index, double smoothing,
                 double grad_scale, py::array losses, py::array dh, py::array dw,
                 const std::optional<py::array>& db, py::array workspace) {
    check_ndim(h, 2, "h", "2-D (N, D)");
    check_ndim(w, 2, "w", "2-D (V, D)");
    check_ndim(workspace, 2, "workspace", "2-D (R, V)");
    const py::ssize_t n = h.shape(0), d = h.shape(1), v = w.shape(0), rows = workspace.shape(0);
    PYFAST_CHECK(w.shape(1) == d, "w must be (V, ", d, ") for h of shape ", shape_str(h),
                 ", got shape ", shape_str(w));
    PYFAST_CHECK(v >= 1 && v <= INT32_MAX, "w must have 1 to 2^31 - 1 rows, got shape ",
                 shape_str(w));
    PYFAST_CHECK(rows >= 1, "workspace must have at least one row, got shape ",
                 shape_str(workspace));
    PYFAST_CHECK(std::isfinite(smoothing) && smoothing >= 0 && smoothing <= 1,
                 "smoothing must be in [0, 1], got ", smoothing);
    check_finite(grad_scale, "grad_scale");
    PYFAST_CHECK(bias.has_value() == db.has_value(), "bias and db must both be given or both None");
    const auto* py_labels = input<std::int64_t>(labels, "labels", {n});
    on_float_type(h, "h", [&](auto zero) {
        using T = decltype(zero);
        LinearXentArgs<T> a;
        a.h = input<T>(h, "h", {n, d});
        a.w = input<T>(w, "w", {v, d});
        a.bias = optional_input<T>(bias, "bias", v);
        a.labels = py_labels;
        a.ignore_index = ignore_index;
        a.smoothing = smoothing;
        a.grad_scale = grad_scale;
        a.losses = output<T>(losses, "losses", {n});
        a.dh = output<T>(dh, "dh", {n, d});
        a.dw = output<T>(dw, "dw", {v, d});
        a.db = optional_output<T>(db, "db", v);
        a.workspace = output<T>(workspace, "workspace", {rows, v});
        a.n = n;
        a.d = d;
        a.v = v;
        a.block_rows = rows;
        py::gil_scoped_release release;
        const std::int64_t bad = pyfast::first_bad_label(py_labels, n, v, ignore_index);
        if (bad >= 0)
            fail("labels must be in [0, ", v, ") or ignore_index=", ignore_index, "; labels[",
                 bad, "] is ", py_labels[bad]);
        pyfast::linear_xent<T>(a);
    });
}

}  // namespace

void bind_linear_xent(py::module_& m) {
    m.def("linear_xent", &linear_xent, py::arg("h"), py::arg("w"), py::arg("bias"),
          py::arg("labels"), py::arg("ignore_index"), py::arg("smoothing"), py::arg("grad_scale"),
          py::arg("losses"), py::arg("dh"), py::arg("dw"), py::arg("db"), py::arg("workspace"),
          "Per-row cross-entropy losses (N,) of h @ w.T + bias against labels and grad_scale * "
          "the gradients dh (N, D), dw (V, D), db (V,) of their sum, the logits computed "
          "workspace.shape[0] rows at a time into workspace (R, V). labels (N,) int64 in "
          "[0, V) or ignore_index (checked); bias and db both arrays or both None.");
}

}  // namespace pyfast::binding
