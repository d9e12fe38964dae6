// pyfast._C's optim family: SGD, RMSprop and Adam(W) steps in place over lists of numpy
// arrays, all of them in one parallel region. Every array is checked before any is written.

#include <algorithm>
#include <tuple>

#include "bindings/arrays.h"
#include "bindings/optim_args.h"
#include "cpu/optim.h"

namespace pyfast::binding {
namespace {

// A list argument of the optimizer kernels: numpy arrays, one per parameter tensor.
std::vector<py::array> array_list(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
        throw py::type_error(std::string(name) + " must be a list of numpy arrays, got " +
                             type_name(obj));
    std::vector<py::array> out;
    for (const py::handle item : py::reinterpret_borrow<py::sequence>(obj)) {
        if (!py::isinstance<py::array>(item))
            throw py::type_error(std::string(name) + "[" + std::to_string(out.size()) +
                                 "] must be a numpy array, got " + type_name(item));
        out.push_back(py::reinterpret_borrow<py::array>(item));
    }
    return out;
}

// The kernels' view of the lists: one dtype (params[0]'s), each entry C-contiguous and shaped
// like its parameter, params and states writeable. Runs `step` on it without the GIL.
template <class Step>
void run(OptimLists<py::array>& lists, Step&& step) {
    on_float_type(lists.params[0], "params[0]", [&](auto zero) {
        using T = decltype(zero);
        std::vector<OptimTensor<T>> tensors;
        for (size_t i = 0; i < lists.params.size(); ++i) {
            const std::string idx = "[" + std::to_string(i) + "]";
            py::array& param = lists.params[i];
            const std::vector<py::ssize_t> shape = shape_of(param);
            OptimTensor<T> t{};
            t.param = output<T>(param, ("params" + idx).c_str(), shape);
            t.grad = input<T>(lists.grads[i], ("grads" + idx).c_str(), shape);
            for (int j = 0; j < 3; ++j)
                t.state[j] = lists.has_state[j]
                                 ? output<T>(lists.states[j][i],
                                             (lists.state_names[j] + idx).c_str(), shape)
                                 : nullptr;
            t.size = param.size();
            tensors.push_back(t);
        }
        py::gil_scoped_release release;
        step(tensors);
    });
}

void sgd_step(const py::object& params, const py::object& grads, const py::object& bufs,
              double lr, double momentum, double dampening, bool nesterov, double weight_decay,
              bool first) {
    auto lists = sgd_lists<py::array>(array_list, params, grads, bufs, lr, momentum, dampening,
                                      nesterov, weight_decay);
    const SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, first};
    run(lists, [&](const auto& tensors) { pyfast::sgd_step(tensors, h); });
}

void rmsprop_step(const py::object& params, const py::object& grads,
                  const py::object& square_avgs, const py::object& bufs,
                  const py::object& grad_avgs, double lr, double alpha, double eps,
                  double weight_decay, double momentum, bool centered) {
    auto lists = rmsprop_lists<py::array>(array_list, params, grads, square_avgs, bufs,
                                          grad_avgs, lr, alpha, eps, weight_decay, momentum,
                                          centered);
    const RmspropHyper h{lr, alpha, eps, weight_decay, momentum, centered};
    run(lists, [&](const auto& tensors) { pyfast::rmsprop_step(tensors, h); });
}

void adam_step(const py::object& params, const py::object& grads, const py::object& exp_avgs,
               const py::object& exp_avg_sqs, const py::object& max_exp_avg_sqs,
               std::int64_t step, double lr, double beta1, double beta2, double eps,
               double weight_decay, bool decoupled, bool amsgrad) {
    auto lists = adam_lists<py::array>(array_list, params, grads, exp_avgs, exp_avg_sqs,
                                       max_exp_avg_sqs, step, lr, beta1, beta2, eps,
                                       weight_decay, amsgrad);
    const AdamHyper h{lr, beta1, beta2, eps, weight_decay, step, decoupled, amsgrad};
    run(lists, [&](const auto& tensors) { pyfast::adam_step(tensors, h); });
}


// pf.ops.optim's aliasing check on NumPy arrays, where reading an address from Python costs
// about 1 us an array (the __array_interface__ dict): the first pair (i, j), i < j, of
// arrays whose memory overlaps with at least one of them written, or None. The same sweep
// as pyfast/ops/optim.py's check_no_aliasing: spans sorted by (start, end, index); a span
// overlaps an earlier one exactly when it starts before the furthest end reached so far.
py::object first_overlap(const py::sequence& arrays, const py::sequence& written) {
    const size_t n = arrays.size();
    PYFAST_CHECK(written.size() == n, "written must have one flag per array: got ",
                 written.size(), " for ", n, " arrays");
    struct Span {
        std::uintptr_t lo, hi;
        size_t index;
        bool written;
    };
    std::vector<Span> spans;
    spans.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const py::handle item = arrays[i];
        if (!py::isinstance<py::array>(item))
            throw py::type_error("arrays[" + std::to_string(i) + "] must be a numpy array, got " +
                                 type_name(item));
        const auto a = py::reinterpret_borrow<py::array>(item);
        if (a.size() == 0) continue;
        auto lo = reinterpret_cast<std::uintptr_t>(a.data()), hi = lo;
        for (py::ssize_t d = 0; d < a.ndim(); ++d) {
            const py::ssize_t reach = (a.shape(d) - 1) * a.strides(d);
            if (reach < 0) lo += reach; else hi += reach;
        }
        spans.push_back({lo, hi + static_cast<std::uintptr_t>(a.itemsize()), i,
                         py::cast<bool>(written[i])});
    }
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
        return std::tie(a.lo, a.hi, a.index) < std::tie(b.lo, b.hi, b.index);
    });
    const Span* furthest = nullptr;          // of all spans so far, the one reaching furthest
    const Span* furthest_written = nullptr;  // of the written ones
    for (const Span& s : spans) {
        for (const Span* prior : {s.written ? furthest : nullptr, furthest_written})
            if (prior && s.lo < prior->hi)
                return py::make_tuple(std::min(prior->index, s.index),
                                      std::max(prior->index, s.index));
        if (!furthest || s.hi > furthest->hi) furthest = &s;
        if (s.written && (!furthest_written || s.hi > furthest_written->hi)) furthest_written = &s;
    }
    return py::none();
}

}  // namespace

void bind_optim(py::module_& m) {
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
    m.def("first_overlap", &first_overlap, py::arg("arrays"), py::arg("written"),
          "The first pair (i, j) of arrays sharing memory, one of them written, or None.");
    // run() checks every array (type, dtype, shape, layout, writeability) before the kernel
    // writes any: pf.ops may skip its own checks of NumPy lists (pyfast/ops/optim.py).
    m.attr("optim_checks_arrays") = true;
}

}  // namespace pyfast::binding
