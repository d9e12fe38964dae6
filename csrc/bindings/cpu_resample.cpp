// pyfast._C's resample family: nearest and bilinear upsampling of (N, C, H, W) planes,
// forward (x -> y) and backward (gy -> gx). pf.ops computes the source index and weight
// tables (one entry per output row or column); every index is checked here, since the
// kernels read through them.

#include "bindings/arrays.h"
#include "cpu/resample.h"

namespace pyfast::binding {
namespace {

// A table of `size` source indices, each in [0, limit).
const std::int64_t* index_table(const py::array& t, const char* name, py::ssize_t size,
                                py::ssize_t limit) {
    const std::int64_t* p = input<std::int64_t>(t, name, {size});
    for (py::ssize_t i = 0; i < size; ++i)
        PYFAST_CHECK(p[i] >= 0 && p[i] < limit, name, "[", i, "] = ", p[i], " is outside [0, ",
                     limit, ")");
    return p;
}

ResampleGeometry geometry(const PlaneCall& call) {
    const auto& p = call.planes;
    return {p[0], p[1], p[2], p[3], p[4]};
}

template <bool Backward>
void nearest(const py::array& in, py::array out, const py::array& src_h,
             const py::array& src_w) {
    PlaneCall call(Backward, in, out);
    const ResampleGeometry g = geometry(call);
    const auto* th = index_table(src_h, "src_h", g.oh, g.h);
    const auto* tw = index_table(src_w, "src_w", g.ow, g.w);
    call.run([&](auto x, auto y) { pyfast::upsample_nearest2d(x, y, th, tw, g); },
             [&](auto gy, auto gx) { pyfast::upsample_nearest2d_backward(gy, gx, th, tw, g); });
}

// Rows read h0 and h1 with weights lh0 and lh1; columns w0, w1, lw0, lw1.
template <bool Backward>
void bilinear(const py::array& in, py::array out, const py::array& h0, const py::array& h1,
              const py::array& lh0, const py::array& lh1, const py::array& w0,
              const py::array& w1, const py::array& lw0, const py::array& lw1) {
    const PlaneCall call(Backward, in, out);
    const ResampleGeometry g = geometry(call);
    const BilinearTables t{index_table(h0, "h0", g.oh, g.h), index_table(h1, "h1", g.oh, g.h),
                           index_table(w0, "w0", g.ow, g.w), index_table(w1, "w1", g.ow, g.w)};
    on_in_out(in, call.in_name, out, call.out_name, [&](auto pin, auto pout) {
        using T = elem_t<decltype(pout)>;
        const T* a = input<T>(lh0, "lh0", {g.oh});
        const T* b = input<T>(lh1, "lh1", {g.oh});
        const T* c = input<T>(lw0, "lw0", {g.ow});
        const T* d = input<T>(lw1, "lw1", {g.ow});
        py::gil_scoped_release release;
        if constexpr (Backward)
            pyfast::upsample_bilinear2d_backward<T>(pin, pout, t, a, b, c, d, g);
        else
            pyfast::upsample_bilinear2d<T>(pin, pout, t, a, b, c, d, g);
    });
}

}  // namespace

void bind_resample(py::module_& m) {
    m.def("upsample_nearest2d", &nearest<false>, py::arg("x"), py::arg("y"), py::arg("src_h"),
          py::arg("src_w"));
    m.def("upsample_nearest2d_backward", &nearest<true>, py::arg("gy"), py::arg("gx"),
          py::arg("src_h"), py::arg("src_w"));
    m.def("upsample_bilinear2d", &bilinear<false>, py::arg("x"), py::arg("y"), py::arg("h0"),
          py::arg("h1"), py::arg("lh0"), py::arg("lh1"), py::arg("w0"), py::arg("w1"),
          py::arg("lw0"), py::arg("lw1"));
    m.def("upsample_bilinear2d_backward", &bilinear<true>, py::arg("gy"), py::arg("gx"),
          py::arg("h0"), py::arg("h1"), py::arg("lh0"), py::arg("lh1"), py::arg("w0"),
          py::arg("w1"), py::arg("lw0"), py::arg("lw1"));
}

}  // namespace pyfast::binding
