// pyfast._C's pool family: max, average and adaptive average pooling over (N, C, H, W) planes,
// forward and backward. The window geometry comes from pf.ops (ceil_mode and defaults are
// resolved there); these bindings check what memory safety needs, the max-pool indices too.

#include "bindings/arrays.h"
#include "cpu/pool.h"

namespace pyfast::binding {
namespace {

PoolGeometry pool_geometry(const std::array<py::ssize_t, 5>& p, std::int64_t kh, std::int64_t kw,
                           std::int64_t sh, std::int64_t sw, std::int64_t ph, std::int64_t pw,
                           std::int64_t dh, std::int64_t dw) {
    PYFAST_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1 && ph >= 0 &&
                 pw >= 0, "kernel size, stride and dilation must be >= 1 and padding >= 0");
    return {p[0], p[1], p[2], p[3], p[4], kh, kw, sh, sw, ph, pw, dh, dw};
}

// The whole-plane geometry of the adaptive pools and of the max-pool backward, which
// follows the indices rather than a window.
PoolGeometry plane_geometry(const std::array<py::ssize_t, 5>& p) {
    return pool_geometry(p, 1, 1, 1, 1, 0, 0, 1, 1);
}

void max_pool2d(const py::array& x, py::array y, py::array indices, std::int64_t kh,
                std::int64_t kw, std::int64_t sh, std::int64_t sw, std::int64_t ph,
                std::int64_t pw, std::int64_t dh, std::int64_t dw) {
    const auto g = pool_geometry(PlaneCall(false, x, y).planes, kh, kw, sh, sw, ph, pw, dh, dw);
    check_same_shape(indices, "indices", y, "y");
    std::int64_t* idx = output<std::int64_t>(indices, "indices");
    on_in_out(x, "x", y, "y", [&](auto px, auto py_) {
        py::gil_scoped_release release;
        pyfast::max_pool2d(px, py_, idx, g);
    });
}

void max_pool2d_backward(const py::array& gy, const py::array& indices, py::array gx) {
    const auto g = plane_geometry(PlaneCall(true, gy, gx).planes);
    check_same_shape(indices, "indices", gy, "gy");
    const std::int64_t* idx = input<std::int64_t>(indices, "indices");
    const std::int64_t bad = on_in_out(gy, "gy", gx, "gx", [&](auto pg, auto pgx) {
        py::gil_scoped_release release;
        return pyfast::max_pool2d_backward(pg, idx, pgx, g);
    });
    PYFAST_CHECK(bad == 0, bad, " indices lie outside [0, ", g.h * g.w, ") (positions in a ",
                 g.h, "x", g.w, " plane); their gradients were dropped");
}

// avg_pool2d (x -> y) and its backward (gy -> gx), which take the same window arguments.
template <bool Backward>
void avg_pool(const py::array& in, py::array out, std::int64_t kh, std::int64_t kw,
              std::int64_t sh, std::int64_t sw, std::int64_t ph, std::int64_t pw,
              bool count_include_pad, std::int64_t divisor) {
    PlaneCall call(Backward, in, out);
    const auto g = pool_geometry(call.planes, kh, kw, sh, sw, ph, pw, 1, 1);
    call.run([&](auto x, auto y) { pyfast::avg_pool2d(x, y, g, count_include_pad, divisor); },
             [&](auto gy, auto gx) {
                 pyfast::avg_pool2d_backward(gy, gx, g, count_include_pad, divisor);
             });
}

// adaptive_avg_pool2d and its backward, which map whole planes onto whole planes.
template <bool Backward>
void adaptive_avg_pool(const py::array& in, py::array out) {
    PlaneCall call(Backward, in, out);
    const auto g = plane_geometry(call.planes);
    PYFAST_CHECK(g.h >= 1 && g.w >= 1 && g.oh >= 1 && g.ow >= 1,
                 Backward ? "adaptive_avg_pool2d_backward" : "adaptive_avg_pool2d",
                 " needs non-empty planes, got ", call.in_name, " ", shape_str(in), " and ",
                 call.out_name, " ", shape_str(out));
    call.run([&](auto x, auto y) { pyfast::adaptive_avg_pool2d(x, y, g); },
             [&](auto gy, auto gx) { pyfast::adaptive_avg_pool2d_backward(gy, gx, g); });
}

}  // namespace

void bind_pool(py::module_& m) {
    m.def("max_pool2d", &max_pool2d, py::arg("x"), py::arg("y"), py::arg("indices"),
          py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"),
          py::arg("pw"), py::arg("dh"), py::arg("dw"));
    m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("gy"), py::arg("indices"),
          py::arg("gx"));
    m.def("avg_pool2d", &avg_pool<false>, py::arg("x"), py::arg("y"), py::arg("kh"),
          py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
          py::arg("count_include_pad"), py::arg("divisor"));
    m.def("avg_pool2d_backward", &avg_pool<true>, py::arg("gy"), py::arg("gx"), py::arg("kh"),
          py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
          py::arg("count_include_pad"), py::arg("divisor"));
    m.def("adaptive_avg_pool2d", &adaptive_avg_pool<false>, py::arg("x"), py::arg("y"));
    m.def("adaptive_avg_pool2d_backward", &adaptive_avg_pool<true>, py::arg("gy"),
          py::arg("gx"));
}

}  // namespace pyfast::binding
