// pyfast._C's norm family: batch norm over x (N, C, S), forward (training statistics or the
// running ones), with an optional residual add and ReLU fused in, and backward.

#include "bindings/arrays.h"
#include "cpu/norm.h"

namespace pyfast::binding {
namespace {

// Whether the bytes of two C-contiguous arrays overlap (the fused forward reads x and the
// residual after writing parts of y, so y may alias neither).
// The bytes an (N, C, S) array spans (its batch stride may exceed C * S).
py::ssize_t span_bytes(const py::array& a) {
    if (a.size() == 0) return 0;
    return (a.shape(0) - 1) * a.strides(0) + a.shape(1) * a.shape(2) * a.itemsize();
}

bool overlaps(const py::array& a, const py::array& b) {
    const auto* pa = static_cast<const char*>(a.data());
    const auto* pb = static_cast<const char*>(b.data());
    const py::ssize_t na = span_bytes(a), nb = span_bytes(b);
    return na > 0 && nb > 0 && pa < pb + nb && pb < pa + na;
}

// x (N, C, S) as T with each sample contiguous and a batch stride of at least C * S elements
// (a channel prefix of a larger buffer qualifies); returns the data, sets the stride.
template <typename T>
const T* batch_strided_input(const py::array& x, const char* name, std::int64_t& stride) {
    const T* p = data_of<T>(x, name);
    const py::ssize_t item = sizeof(T), c = x.shape(1), s = x.shape(2);
    const bool inner = (x.strides(2) == item || s == 1) && (x.strides(1) == s * item || c == 1);
    stride = x.shape(0) > 1 ? x.strides(0) / item : c * s;
    PYFAST_CHECK(inner && stride >= c * s, name, " must be C-contiguous within each sample "
                 "with a batch stride of at least C * S elements");
    return p;
}

void batch_norm(const py::array& x, const std::optional<py::array>& weight,
                const std::optional<py::array>& bias, const std::optional<py::array>& running_mean,
                const std::optional<py::array>& running_var, py::array y, py::array mean,
                py::array invstd, bool training, double momentum, double eps,
                const std::optional<py::array>& residual, bool relu) {
    check_ndim(x, 3, "x", "(N, C, S)");
    check_same_shape(y, "y", x, "x");
    PYFAST_CHECK(std::isfinite(momentum) && momentum >= 0 && std::isfinite(eps) && eps >= 0,
                 "momentum and eps must be finite and >= 0, got ", momentum, " and ", eps);
    const py::ssize_t n = x.shape(0), c = x.shape(1), s = x.shape(2);
    PYFAST_CHECK(!training || n * s > 1, "Expected more than 1 value per channel when training, "
                 "got input size ", shape_str(x));
    PYFAST_CHECK(training || (running_mean && running_var),
                 "eval mode needs running_mean and running_var");
    on_float_type(x, "x", [&](auto zero) {
        using T = decltype(zero);
        std::int64_t xn;
        const T* px = batch_strided_input<T>(x, "x", xn);
        T* py_ = output<T>(y, "y");
        const T* w = optional_input<T>(weight, "weight", c);
        const T* b = optional_input<T>(bias, "bias", c);
        T* rm = optional_output<T>(running_mean, "running_mean", c);
        T* rv = optional_output<T>(running_var, "running_var", c);
        T* pm = output<T>(mean, "mean", {c});
        T* pi = output<T>(invstd, "invstd", {c});
        const T* pr = nullptr;
        if (residual) {
            check_same_shape(*residual, "residual", x, "x");
            pr = input<T>(*residual, "residual");
        }
        PYFAST_CHECK(!overlaps(y, x) && !(residual && overlaps(y, *residual)),
                     "y may not overlap x or residual");
        py::gil_scoped_release release;
        pyfast::batch_norm_forward<T>(px, py_, n, c, s, w, b, rm, rv, pm, pi, training, momentum,
                                      eps, pr, relu, xn);
    });
}

void batch_norm_backward(const py::array& gy, const py::array& x,
                         const std::optional<py::array>& weight, const py::array& mean,
                         const py::array& invstd, std::optional<py::array> gx,
                         const std::optional<py::array>& gweight,
                         const std::optional<py::array>& gbias, bool training,
                         const std::optional<py::array>& y,
                         std::optional<py::array> gresidual) {
    check_ndim(x, 3, "x", "(N, C, S)");
    check_same_shape(gy, "gy", x, "x");
    const py::ssize_t n = x.shape(0), c = x.shape(1), s = x.shape(2);
    on_float_type(x, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* pg = input<T>(gy, "gy");
        std::int64_t xn;
        const T* px = batch_strided_input<T>(x, "x", xn);
        const T* w = optional_input<T>(weight, "weight", c);
        const T* pm = input<T>(mean, "mean", {c});
        const T* pi = input<T>(invstd, "invstd", {c});
        T* pgx = nullptr;
        if (gx) {
            check_same_shape(*gx, "gx", x, "x");
            pgx = output<T>(*gx, "gx");
        }
        T* pgw = optional_output<T>(gweight, "gweight", c);
        T* pgb = optional_output<T>(gbias, "gbias", c);
        const T* pyv = nullptr;
        if (y) {
            check_same_shape(*y, "y", x, "x");
            pyv = input<T>(*y, "y");
        }
        T* pgr = nullptr;
        if (gresidual) {
            check_same_shape(*gresidual, "gresidual", x, "x");
            pgr = output<T>(*gresidual, "gresidual");
        }
        py::gil_scoped_release release;
        pyfast::batch_norm_backward<T>(pg, px, n, c, s, w, pm, pi, pgx, pgw, pgb, training, pyv,
                                       pgr, xn);
    });
}

}  // namespace

void bind_norm(py::module_& m) {
    m.def("batch_norm", &batch_norm, py::arg("x"), py::arg("weight"), py::arg("bias"),
          py::arg("running_mean"), py::arg("running_var"), py::arg("y"), py::arg("mean"),
          py::arg("invstd"), py::arg("training"), py::arg("momentum"), py::arg("eps"),
          py::arg("residual") = py::none(), py::arg("relu") = false,
          "Batch norm of x (N, C, S) into y = relu(bn(x) + residual) (the residual and the "
          "ReLU optional); mean/invstd (C,) receive the statistics used.");
    m.def("batch_norm_backward", &batch_norm_backward, py::arg("gy"), py::arg("x"),
          py::arg("weight"), py::arg("mean"), py::arg("invstd"), py::arg("gx"),
          py::arg("gweight"), py::arg("gbias"), py::arg("training"), py::arg("y") = py::none(),
          py::arg("gresidual") = py::none(),
          "Gradients of batch_norm; y: its output when it applied a ReLU (gy is masked where "
          "y <= 0); gresidual receives the residual's gradient.");
}

}  // namespace pyfast::binding
