// pyfast._cuda's conv family: conv2d (forward, with bias and ReLU fused), its backward pass
// and conv_transpose2d. The shape rules are common/conv_shape.h's, shared with the CPU
// bindings; the dtype of w decides and every other array must match it.

#include "bindings/cuda_arrays.h"
#include "cuda/conv.h"

namespace pyfast::binding {
namespace {

ConvShape4 shape4(const CudaArray& x, const char* name) {
    PYFAST_CHECK(x.ndim() == 4, name, " must be 4-D, got shape ", shape_str(x));
    return {x.shape[0], x.shape[1], x.shape[2], x.shape[3]};
}

ConvPair conv_pair(const py::handle& v, const char* name) {
    std::vector<std::int64_t> e;
    try {
        e = int_tuple(v);
    } catch (const py::cast_error&) {
        throw py::type_error(std::string(name) + " must be a pair of ints");
    }
    if (e.size() != 2) throw py::type_error(std::string(name) + " must be a pair of ints");
    return {e[0], e[1]};
}

// A conv operand: a C-contiguous CUDA array of w's dtype (w itself when w is null).
CudaArray conv_array(const py::handle& obj, const char* name, const CudaArray* w) {
    const CudaArray x = cuda_array(obj, name);
    if (w) check_dtype_like(x, name, *w, "w");
    check_c_contiguous(x, name);
    return x;
}

std::optional<CudaArray> optional_conv_array(const py::handle& obj, const char* name,
                                             const CudaArray& w) {
    if (obj.is_none()) return std::nullopt;
    return conv_array(obj, name, &w);
}

// Written by the kernel: exactly `shape`, writable.
void check_result(const CudaArray& x, const char* name, const std::vector<std::int64_t>& shape) {
    check_shape(x, name, shape);
    check_writable(x, name);
}

// The end of conv2d and conv_transpose2d: the optional bias (channels,), then
// launch(x, w, bias, out, stream) typed by w's dtype, enqueued without the GIL.
template <class Launch>
void enqueue_with_bias(const char* what, const CudaArray& x, const CudaArray& w,
                       const CudaArray& out, const py::object& bias_obj, std::int64_t channels,
                       const py::object& stream_obj, Launch&& launch) {
    const std::optional<CudaArray> bias = optional_conv_array(bias_obj, "bias", w);
    if (bias) check_shape(*bias, "bias", {channels});
    const cudaStream_t stream = stream_of(stream_obj);
    device_for(what, {{x, "x"}, {w, "w"}, {out, "out"}, {bias, "bias"}});
    py::gil_scoped_release release;
    on_float_type(w, [&](auto zero) {
        using T = decltype(zero);
        launch(x.data<const T>(), w.data<const T>(), data_or_null<const T>(bias), out.data<T>(),
               stream);
    });
}

void conv2d(const py::object& x_obj, const py::object& w_obj, const py::object& bias_obj,
            const py::object& out_obj, const py::object& stride, const py::object& padding,
            const py::object& dilation, std::int64_t groups, bool relu,
            const py::object& stream_obj) {
    const CudaArray w = conv_array(w_obj, "w", nullptr);
    const CudaArray x = conv_array(x_obj, "x", &w);
    const CudaArray out = conv_array(out_obj, "out", &w);
    const auto s = conv2d_shape("conv2d", shape4(x, "x"), shape4(w, "w"),
                                conv_pair(stride, "stride"), conv_pair(padding, "padding"),
                                conv_pair(dilation, "dilation"), groups);
    check_result(out, "out", {s.n, s.k, s.oh, s.ow});
    enqueue_with_bias("conv2d", x, w, out, bias_obj, s.k, stream_obj,
                      [&](auto px, auto pw, auto pb, auto pout, cudaStream_t stream) {
                          cuda::conv2d_forward(s, px, pw, pb, pout, relu, stream);
                      });
}

void conv2d_backward(const py::object& gy_obj, const py::object& x_obj, const py::object& w_obj,
                     const py::object& gx_obj, const py::object& gw_obj,
                     const py::object& gb_obj, const py::object& stride,
                     const py::object& padding, const py::object& dilation,
                     std::int64_t groups, const py::object& stream_obj) {
    const CudaArray w = conv_array(w_obj, "w", nullptr);
    const CudaArray gy = conv_array(gy_obj, "gy", &w);
    const std::optional<CudaArray> x = optional_conv_array(x_obj, "x", w);
    const std::optional<CudaArray> gx = optional_conv_array(gx_obj, "gx", w);
    const std::optional<CudaArray> gw = optional_conv_array(gw_obj, "gw", w);
    const std::optional<CudaArray> gb = optional_conv_array(gb_obj, "gb", w);
    PYFAST_CHECK(!gw || x, "conv2d_backward: the weight gradient gw needs x");
    const ConvShape4 gy_shape = shape4(gy, "gy"), w_shape = shape4(w, "w");
    std::optional<ConvShape4> in_shape;
    if (x || gx) in_shape = x ? shape4(*x, "x") : shape4(*gx, "gx");
    const auto s = conv2d_backward_shape(gy_shape, w_shape, in_shape,
                                         conv_pair(stride, "stride"),
                                         conv_pair(padding, "padding"),
                                         conv_pair(dilation, "dilation"), groups);
    if (gx) check_result(*gx, "gx", {s.n, s.c, s.h, s.w});
    if (gw) check_result(*gw, "gw", w.shape);
    if (gb) check_result(*gb, "gb", {s.k});
    const cudaStream_t stream = stream_of(stream_obj);
    device_for("conv2d_backward",
               {{gy, "gy"}, {w, "w"}, {x, "x"}, {gx, "gx"}, {gw, "gw"}, {gb, "gb"}});
    py::gil_scoped_release release;
    on_float_type(w, [&](auto zero) {
        using T = decltype(zero);
        cuda::conv2d_backward<T>(s, gy.data<const T>(), data_or_null<const T>(x),
                                 w.data<const T>(), data_or_null<T>(gx), data_or_null<T>(gw),
                                 data_or_null<T>(gb), stream);
    });
}

void conv_transpose2d(const py::object& x_obj, const py::object& w_obj,
                      const py::object& bias_obj, const py::object& out_obj,
                      const py::object& stride, const py::object& padding,
                      const py::object& dilation, std::int64_t groups,
                      const py::object& stream_obj) {
    const CudaArray w = conv_array(w_obj, "w", nullptr);
    const CudaArray x = conv_array(x_obj, "x", &w);
    const CudaArray out = conv_array(out_obj, "out", &w);
    const ConvShape4 out_shape = shape4(out, "out");
    const auto s = conv_transpose2d_shape(shape4(x, "x"), shape4(w, "w"), out_shape,
                                          conv_pair(stride, "stride"),
                                          conv_pair(padding, "padding"),
                                          conv_pair(dilation, "dilation"), groups);
    check_writable(out, "out");
    enqueue_with_bias("conv_transpose2d", x, w, out, bias_obj, s.c, stream_obj,
                      [&](auto px, auto pw, auto pb, auto pout, cudaStream_t stream) {
                          cuda::conv_transpose2d(s, px, pw, pb, pout, stream);
                      });
}

}  // namespace

void bind_conv(py::module_& m) {
    m.def("conv2d", &conv2d, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("out"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
          py::arg("relu"), py::kw_only(), py::arg("stream"),
          "out = relu?(conv2d(x, w) + bias), enqueued on `stream` without synchronising. x (N, "
          "C, H, W), w (K, C/groups, kh, kw), bias (K,) or None, out (N, K, OH, OW): C-contiguous "
          "CUDA arrays of one dtype on the current device; stride, padding, dilation (h, w).");
    m.def("conv2d_backward", &conv2d_backward, py::arg("gy"), py::arg("x"), py::arg("w"),
          py::arg("gx"), py::arg("gw"), py::arg("gb"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"), py::kw_only(), py::arg("stream"),
          "Overwrites conv2d's gradients gx, gw, gb (each may be None; x may be None when gw "
          "is) given gy, enqueued on `stream`.");
    m.def("conv_transpose2d", &conv_transpose2d, py::arg("x"), py::arg("w"),
          py::arg("bias"), py::arg("out"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"), py::kw_only(), py::arg("stream"),
          "out = conv_transpose2d(x, w) + bias, enqueued on `stream`. x (N, Cin, H, W), w (Cin, "
          "Cout/groups, kh, kw), out (N, Cout, OH, OW) whose extent carries output_padding.");
}

}  // namespace pyfast::binding
