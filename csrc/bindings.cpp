// pyfast._C: the native CPU backend's Python face. Each binding checks what it is given
// (so a direct call cannot crash the interpreter), releases the GIL and runs the kernel.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/checks.h"
#include "common/runtime.h"
#include "cpu/gemm.h"
#include "cpu/optim.h"
#include "cpu/peak.h"
#include "cpu/softmax_xent.h"

namespace py = pybind11;
using pyfast::fail;

namespace {

std::string shape_of(const py::array& x) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < x.ndim(); ++i) s += (i ? ", " : "") + std::to_string(x.shape(i));
    return s + (x.ndim() == 1 ? ",)" : ")");
}

template <typename T>
const T* data_of(const py::array& x, const char* name) {
    PYFAST_CHECK(py::isinstance<py::array_t<T>>(x) && x.dtype().is(py::dtype::of<T>()), name,
                 " must have dtype ", std::string(py::str(py::dtype::of<T>())), ", got ",
                 std::string(py::str(x.dtype())));
    for (py::ssize_t i = 0; i < x.ndim(); ++i)
        PYFAST_CHECK(x.strides(i) % static_cast<py::ssize_t>(sizeof(T)) == 0, name,
                     " has strides that are not a multiple of its item size");
    return static_cast<const T*>(x.data());
}

template <typename T>
pyfast::MatRef<T> mat_ref(const py::array& x, const char* name) {
    PYFAST_CHECK(x.ndim() == 2, name, " must be 2-D, got shape ", shape_of(x));
    const T* p = data_of<T>(x, name);
    return {p, x.strides(0) / static_cast<py::ssize_t>(sizeof(T)),
            x.strides(1) / static_cast<py::ssize_t>(sizeof(T))};
}

template <typename T>
T* out_data(py::array& out, const char* name) {
    data_of<T>(out, name);
    PYFAST_CHECK(out.writeable(), name, " is read-only");
    PYFAST_CHECK(out.flags() & py::array::c_style, name, " must be C-contiguous");
    return static_cast<T*>(out.mutable_data());
}

template <typename T>
void matmul_typed(const py::array& a, const py::array& b, py::array& out,
                  const std::optional<py::array>& bias, bool relu) {
    auto ra = mat_ref<T>(a, "a"), rb = mat_ref<T>(b, "b");
    const py::ssize_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
    PYFAST_CHECK(b.shape(0) == k, "matmul: a is ", shape_of(a), " but b is ", shape_of(b),
                 " (inner dimensions differ)");
    PYFAST_CHECK(out.ndim() == 2 && out.shape(0) == m && out.shape(1) == n, "out must have shape (",
                 m, ", ", n, "), got ", shape_of(out));
    T* c = out_data<T>(out, "out");
    pyfast::Epilogue<T> ep;
    ep.relu = relu;
    if (bias) {
        PYFAST_CHECK(bias->ndim() == 1 && bias->shape(0) == n, "bias must have shape (", n,
                     ",), got ", shape_of(*bias));
        PYFAST_CHECK(bias->flags() & py::array::c_style, "bias must be contiguous");
        ep.bias = data_of<T>(*bias, "bias");
    }
    py::gil_scoped_release release;
    pyfast::gemm<T>(m, n, k, ra, rb, c, n, ep);
}

void matmul(const py::array& a, const py::array& b, py::array out,
            const std::optional<py::array>& bias, bool relu) {
    if (a.dtype().is(py::dtype::of<float>())) return matmul_typed<float>(a, b, out, bias, relu);
    if (a.dtype().is(py::dtype::of<double>())) return matmul_typed<double>(a, b, out, bias, relu);
    throw py::type_error("a must be float32 or float64, got " + std::string(py::str(a.dtype())));
}


// ---- softmax_xent -----------------------------------------------------------------------

std::string shape_str(const std::vector<py::ssize_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

// x's data as T after checking dtype, shape and C-contiguity.
template <typename T>
const T* c_array(const py::array& x, const char* name, const std::vector<py::ssize_t>& shape) {
    const T* p = data_of<T>(x, name);
    bool same = x.ndim() == static_cast<py::ssize_t>(shape.size());
    for (py::ssize_t i = 0; same && i < x.ndim(); ++i) same = x.shape(i) == shape[i];
    PYFAST_CHECK(same, name, " must have shape ", shape_str(shape), ", got ", shape_of(x));
    PYFAST_CHECK(x.flags() & py::array::c_style, name, " must be C-contiguous");
    return p;
}

template <typename T>
T* c_array_out(py::array& x, const char* name, const std::vector<py::ssize_t>& shape) {
    c_array<T>(x, name, shape);
    PYFAST_CHECK(x.writeable(), name, " is read-only");
    return static_cast<T*>(x.mutable_data());
}

std::string dtype_str(const py::array& x) { return std::string(py::str(x.dtype())); }

// Calls f(T{}) with T the float type of x: TypeError for anything but float32/float64.
template <class F>
decltype(auto) on_float_type(const py::array& x, const char* name, F&& f) {
    if (x.dtype().is(py::dtype::of<float>())) return f(float{});
    if (x.dtype().is(py::dtype::of<double>())) return f(double{});
    throw py::type_error(std::string(name) + " must be float32 or float64, got " + dtype_str(x));
}

void check_finite(double v, const char* name) {
    PYFAST_CHECK(std::isfinite(v), name, " must be finite, got ", v);
}

void softmax(const py::array& x, py::array out, bool log) {
    PYFAST_CHECK(x.ndim() == 3, "x must be 3-D (A, C, B), softmax over axis 1; got shape ",
                 shape_of(x));
    const std::vector<py::ssize_t> shape{x.shape(0), x.shape(1), x.shape(2)};
    on_float_type(x, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = c_array<T>(x, "x", shape);
        T* po = c_array_out<T>(out, "out", shape);
        py::gil_scoped_release release;
        pyfast::softmax<T>(px, po, shape[0], shape[1], shape[2], log);
    });
}

void softmax_xent(const py::array& logits, const py::array& labels,
                  const std::optional<py::array>& weight, std::int64_t ignore_index,
                  double smoothing, double grad_scale, py::array dlogits, py::array losses) {
    PYFAST_CHECK(logits.ndim() == 3, "logits must be 3-D (N, C, S), got shape ", shape_of(logits));
    const py::ssize_t n = logits.shape(0), c = logits.shape(1), s = logits.shape(2);
    PYFAST_CHECK(c >= 1 && c <= INT32_MAX, "logits must have 1 to 2^31 - 1 classes (axis 1), "
                 "got shape ", shape_of(logits));
    PYFAST_CHECK(std::isfinite(smoothing) && smoothing >= 0 && smoothing <= 1,
                 "smoothing must be in [0, 1], got ", smoothing);
    check_finite(grad_scale, "grad_scale");
    const auto* py_labels = c_array<std::int64_t>(labels, "labels", {n, s});
    on_float_type(logits, "logits", [&](auto zero) {
        using T = decltype(zero);
        pyfast::XentArgs<T> a;
        a.logits = c_array<T>(logits, "logits", {n, c, s});
        a.weight = weight ? c_array<T>(*weight, "weight", {c}) : nullptr;
        a.dlogits = c_array_out<T>(dlogits, "dlogits", {n, c, s});
        a.losses = c_array_out<T>(losses, "losses", {n, s});
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

// An operand that element i of a flat (m) array reads at [i % period]: flat, C-contiguous,
// its size dividing m.
template <typename T>
const T* periodic(const std::optional<py::array>& x, const char* name, py::ssize_t m,
                  std::int64_t* period) {
    *period = 0;
    if (!x) return nullptr;
    PYFAST_CHECK(x->ndim() == 1 && x->shape(0) >= 1 && m % x->shape(0) == 0, name,
                 " must be 1-D with a size that divides ", m, ", got shape ", shape_of(*x));
    *period = x->shape(0);
    return c_array<T>(*x, name, {x->shape(0)});
}

py::object bce_with_logits(const py::array& x, const py::array& y,
                           const std::optional<py::array>& weight,
                           const std::optional<py::array>& pos_weight, double grad_scale,
                           py::array grad, std::optional<py::array> losses) {
    PYFAST_CHECK(x.ndim() == 1, "x must be 1-D, got shape ", shape_of(x));
    check_finite(grad_scale, "grad_scale");
    const py::ssize_t m = x.shape(0);
    return on_float_type(x, "x", [&](auto zero) -> py::object {
        using T = decltype(zero);
        pyfast::BceArgs<T> a;
        a.x = c_array<T>(x, "x", {m});
        a.y = c_array<T>(y, "y", {m});
        a.weight = periodic<T>(weight, "weight", m, &a.weight_period);
        a.pos_weight = periodic<T>(pos_weight, "pos_weight", m, &a.pos_weight_period);
        a.grad = c_array_out<T>(grad, "grad", {m});
        a.losses = losses ? c_array_out<T>(*losses, "losses", {m}) : nullptr;
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
               std::optional<py::array> losses) {
    PYFAST_CHECK(x.ndim() == 1, "x must be 1-D, got shape ", shape_of(x));
    check_finite(grad_scale, "grad_scale");
    const py::ssize_t m = x.shape(0);
    return on_float_type(x, "x", [&](auto zero) -> py::object {
        using T = decltype(zero);
        const T* px = c_array<T>(x, "x", {m});
        const T* py_ = c_array<T>(y, "y", {m});
        T* pg = c_array_out<T>(grad, "grad", {m});
        T* pl = losses ? c_array_out<T>(*losses, "losses", {m}) : nullptr;
        double total;
        {
            py::gil_scoped_release release;
            total = pyfast::mse<T>(px, py_, grad_scale, pg, pl, m);
        }
        return losses ? py::object(py::none()) : py::object(py::float_(total));
    });
}

// ---- optim ------------------------------------------------------------------------------

// A list argument of the optimizer kernels: numpy arrays, one per parameter tensor.
std::vector<py::array> array_list(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
        throw py::type_error(std::string(name) + " must be a list of numpy arrays, got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    std::vector<py::array> out;
    for (const py::handle item : py::reinterpret_borrow<py::sequence>(obj)) {
        if (!py::isinstance<py::array>(item))
            throw py::type_error(std::string(name) + "[" + std::to_string(out.size()) +
                                 "] must be a numpy array, got " +
                                 std::string(py::str(py::type::handle_of(item).attr("__name__"))));
        out.push_back(py::reinterpret_borrow<py::array>(item));
    }
    return out;
}

std::vector<py::ssize_t> shape_vec(const py::array& x) {
    return std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim());
}

// The checked tensors of one optimizer call: params, grads and up to three state lists, all
// of one float dtype, C-contiguous, each entry shaped like its parameter; params and states
// writable. Nothing is touched until every check has passed.
struct OptimLists {
    std::vector<py::array> params, grads;
    std::vector<py::array> states[3];
    bool has_state[3] = {false, false, false};

    OptimLists(const py::handle& params_obj, const py::handle& grads_obj) {
        params = array_list(params_obj, "params");
        grads = array_list(grads_obj, "grads");
        PYFAST_CHECK(!params.empty(), "params is an empty list");
        PYFAST_CHECK(grads.size() == params.size(), "grads has ", grads.size(),
                     " arrays but params has ", params.size());
    }

    void add_state(int slot, const py::handle& obj, const char* name, bool required,
                   const char* why) {
        if (obj.is_none()) {
            PYFAST_CHECK(!required, name, " is required ", why);
            return;
        }
        states[slot] = array_list(obj, name);
        PYFAST_CHECK(states[slot].size() == params.size(), name, " has ", states[slot].size(),
                     " arrays but params has ", params.size());
        has_state[slot] = true;
    }

    template <typename T>
    std::vector<pyfast::OptimTensor<T>> tensors(const char* const names[3]) {
        std::vector<pyfast::OptimTensor<T>> out;
        for (size_t i = 0; i < params.size(); ++i) {
            const std::string idx = "[" + std::to_string(i) + "]";
            const auto shape = shape_vec(params[i]);
            pyfast::OptimTensor<T> t{};
            t.param = c_array_out<T>(params[i], ("params" + idx).c_str(), shape);
            t.grad = c_array<T>(grads[i], ("grads" + idx).c_str(), shape);
            for (int j = 0; j < 3; ++j)
                t.state[j] = has_state[j]
                                 ? c_array_out<T>(states[j][i], (names[j] + idx).c_str(), shape)
                                 : nullptr;
            t.size = params[i].size();
            out.push_back(t);
        }
        return out;
    }

    template <class F>
    void run(const char* const names[3], F&& f) {
        on_float_type(params[0], "params[0]", [&](auto zero) {
            using T = decltype(zero);
            auto list = tensors<T>(names);
            py::gil_scoped_release release;
            f(list);
        });
    }
};

void check_hyper(double v, const char* name, double low, double high, bool high_open = false) {
    PYFAST_CHECK(std::isfinite(v) && v >= low && (high_open ? v < high : v <= high), name,
                 " must be a finite number in [", low, ", ", high, high_open ? ")" : "]",
                 ", got ", v);
}

constexpr double kInf = HUGE_VAL;

void sgd_step(const py::object& params, const py::object& grads, const py::object& bufs,
              double lr, double momentum, double dampening, bool nesterov, double weight_decay,
              bool first) {
    check_hyper(lr, "lr", 0, kInf);
    check_hyper(momentum, "momentum", 0, kInf);
    check_hyper(dampening, "dampening", 0, kInf);
    check_hyper(weight_decay, "weight_decay", 0, kInf);
    PYFAST_CHECK(!nesterov || (momentum > 0 && dampening == 0),
                 "nesterov needs momentum > 0 and dampening == 0");
    OptimLists lists(params, grads);
    lists.add_state(0, bufs, "momentum_bufs", momentum != 0, "with momentum > 0");
    if (momentum == 0) lists.has_state[0] = false;  // not read: no momentum
    const pyfast::SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, first};
    static const char* const names[3] = {"momentum_bufs", "", ""};
    lists.run(names, [&](const auto& list) { pyfast::sgd_step(list, h); });
}

void rmsprop_step(const py::object& params, const py::object& grads,
                  const py::object& square_avgs, const py::object& bufs,
                  const py::object& grad_avgs, double lr, double alpha, double eps,
                  double weight_decay, double momentum, bool centered) {
    check_hyper(lr, "lr", 0, kInf);
    check_hyper(alpha, "alpha", 0, 1);
    check_hyper(eps, "eps", 0, kInf);
    check_hyper(weight_decay, "weight_decay", 0, kInf);
    check_hyper(momentum, "momentum", 0, kInf);
    OptimLists lists(params, grads);
    lists.add_state(0, square_avgs, "square_avgs", true, "");
    lists.add_state(1, bufs, "momentum_bufs", momentum > 0, "with momentum > 0");
    lists.add_state(2, grad_avgs, "grad_avgs", centered, "with centered=True");
    if (momentum == 0) lists.has_state[1] = false;
    if (!centered) lists.has_state[2] = false;
    const pyfast::RmspropHyper h{lr, alpha, eps, weight_decay, momentum, centered};
    static const char* const names[3] = {"square_avgs", "momentum_bufs", "grad_avgs"};
    lists.run(names, [&](const auto& list) { pyfast::rmsprop_step(list, h); });
}

void adam_step(const py::object& params, const py::object& grads, const py::object& exp_avgs,
               const py::object& exp_avg_sqs, const py::object& max_exp_avg_sqs,
               std::int64_t step, double lr, double beta1, double beta2, double eps,
               double weight_decay, bool decoupled, bool amsgrad) {
    PYFAST_CHECK(step >= 1, "step must be >= 1 (steps count from 1), got ", step);
    check_hyper(lr, "lr", 0, kInf);
    check_hyper(beta1, "beta1", 0, 1, true);
    check_hyper(beta2, "beta2", 0, 1, true);
    check_hyper(eps, "eps", 0, kInf);
    check_hyper(weight_decay, "weight_decay", 0, kInf);
    OptimLists lists(params, grads);
    lists.add_state(0, exp_avgs, "exp_avgs", true, "");
    lists.add_state(1, exp_avg_sqs, "exp_avg_sqs", true, "");
    lists.add_state(2, max_exp_avg_sqs, "max_exp_avg_sqs", amsgrad, "with amsgrad=True");
    if (!amsgrad) lists.has_state[2] = false;
    const pyfast::AdamHyper h{lr, beta1, beta2, eps, weight_decay, step, decoupled, amsgrad};
    static const char* const names[3] = {"exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"};
    lists.run(names, [&](const auto& list) { pyfast::adam_step(list, h); });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "pyfast native CPU kernels (C++17, OpenMP, run-time SIMD dispatch)";
    m.attr("FAMILIES") = py::make_tuple("gemm", "softmax_xent", "optim");

    m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"),
          py::arg("relu"),
          "out = relu?(a @ b + bias). a (M, K) and b (K, N) with any strides; out (M, N) "
          "C-contiguous; bias (N,) or None.");

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
    m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grads"), py::arg("momentum_bufs"),
          py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
          py::arg("weight_decay"), py::arg("first"),
          "torch.optim.SGD's step in place over lists of arrays (one parallel region); first: "
          "step 1, the momentum buffers take the gradients.");
    m.def("rmsprop_step", &rmsprop_step, py::arg("params"), py::arg("grads"),
          py::arg("square_avgs"), py::arg("momentum_bufs"), py::arg("grad_avgs"), py::arg("lr"),
          py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
          py::arg("centered"), "torch.optim.RMSprop's step in place over lists of arrays.");
    m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("step"), py::arg("lr"),
          py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("decoupled"), py::arg("amsgrad"),
          "torch.optim.Adam's (decoupled: AdamW's) step in place over lists of arrays.");

    m.def("set_num_threads", &pyfast::set_num_threads, py::arg("n"));
    m.def("get_num_threads", &pyfast::num_threads);
    m.def("isa", [] { return std::string(pyfast::isa_name(pyfast::active_isa())); },
          "The SIMD code path the kernels take now.");
    m.def("best_isa", [] { return std::string(pyfast::isa_name(pyfast::best_isa())); },
          "The best SIMD code path this CPU supports.");
    m.def("supported_isas", &pyfast::supported_isas);
    m.def("set_isa", &pyfast::set_isa, py::arg("name"),
          "Choose a code path (generic, avx2, avx512) no better than best_isa().");
    m.def("cpu_features", [] {
        __builtin_cpu_init();
        py::dict d;
        d["sse2"] = bool(__builtin_cpu_supports("sse2"));
        d["avx"] = bool(__builtin_cpu_supports("avx"));
        d["avx2"] = bool(__builtin_cpu_supports("avx2"));
        d["fma"] = bool(__builtin_cpu_supports("fma"));
        d["avx512f"] = bool(__builtin_cpu_supports("avx512f"));
        return d;
    });

    m.def("fma_peak_gflops", &pyfast::fma_peak_gflops, py::arg("threads"),
          py::call_guard<py::gil_scoped_release>(),
          "Measured float32 FMA peak (GFLOP/s) of the active ISA on `threads` threads.");
    m.def("copy_bandwidth_gbs", &pyfast::copy_bandwidth_gbs, py::arg("threads"), py::arg("nbytes"),
          py::call_guard<py::gil_scoped_release>(),
          "Measured copy bandwidth (GB/s, read + write) of an nbytes buffer on `threads` threads.");
}
