// pyfast._cuda's optim family: SGD, RMSprop and Adam(W) steps over lists of CUDA arrays, all
// of them in one kernel launch. Every array is checked before anything is enqueued.

#include "bindings/cuda_arrays.h"
#include "bindings/optim_args.h"
#include "cuda/optim.h"

namespace pyfast::binding {
namespace {

std::vector<CudaArray> cuda_array_list(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
        throw py::type_error(std::string(name) + " must be a list of CUDA arrays, got " +
                             type_name(obj));
    std::vector<CudaArray> out;
    for (const py::handle item : py::reinterpret_borrow<py::sequence>(obj)) {
        const std::string label = std::string(name) + "[" + std::to_string(out.size()) + "]";
        out.push_back(cuda_array(item, label.c_str()));
    }
    return out;
}

// The kernels' view of the lists: one dtype (params[0]'s), each entry C-contiguous, shaped
// like its parameter and on the current device, params and states writable. Enqueues `step`
// on the caller's stream without the GIL.
template <class Step>
void run(const char* what, const OptimLists<CudaArray>& lists, const py::object& stream_obj,
         Step&& step) {
    const cudaStream_t stream = stream_of(stream_obj);
    const int device = device_for(what, {});
    on_float_type(lists.params[0], [&](auto zero) {
        using T = decltype(zero);
        std::vector<cuda::DeviceTensor<T>> tensors;
        for (size_t i = 0; i < lists.params.size(); ++i) {
            const std::string idx = "[" + std::to_string(i) + "]";
            const CudaArray& p = lists.params[i];
            const std::string pname = "params" + idx;
            check_dtype_like(p, pname.c_str(), lists.params[0], "params[0]");
            check_c_shape(p, pname.c_str(), p.shape);
            check_writable(p, pname.c_str());
            check_accessible(p, pname.c_str(), device);
            const std::string gname = "grads" + idx;
            check_dtype_like(lists.grads[i], gname.c_str(), p, pname.c_str());
            check_c_shape(lists.grads[i], gname.c_str(), p.shape);
            check_accessible(lists.grads[i], gname.c_str(), device);
            cuda::DeviceTensor<T> t{p.data<T>(), lists.grads[i].data<const T>(),
                                    {nullptr, nullptr, nullptr}, p.size()};
            for (int j = 0; j < 3; ++j) {
                if (!lists.has_state[j]) continue;
                const std::string sname = lists.state_names[j] + idx;
                const CudaArray& st = lists.states[j][i];
                check_dtype_like(st, sname.c_str(), p, pname.c_str());
                check_c_shape(st, sname.c_str(), p.shape);
                check_writable(st, sname.c_str());
                check_accessible(st, sname.c_str(), device);
                t.state[j] = st.data<T>();
            }
            tensors.push_back(t);
        }
        py::gil_scoped_release release;
        step(tensors, stream);
    });
}

void sgd_step(const py::object& params, const py::object& grads, const py::object& bufs,
              double lr, double momentum, double dampening, bool nesterov, double weight_decay,
              bool first, const py::object& stream) {
    const auto lists = sgd_lists<CudaArray>(cuda_array_list, params, grads, bufs, lr, momentum,
                                            dampening, nesterov, weight_decay);
    const SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, first};
    run("sgd_step", lists, stream,
        [&](const auto& tensors, cudaStream_t s) { cuda::sgd_step(tensors, h, s); });
}

void rmsprop_step(const py::object& params, const py::object& grads,
                  const py::object& square_avgs, const py::object& bufs,
                  const py::object& grad_avgs, double lr, double alpha, double eps,
                  double weight_decay, double momentum, bool centered,
                  const py::object& stream) {
    const auto lists = rmsprop_lists<CudaArray>(cuda_array_list, params, grads, square_avgs,
                                                bufs, grad_avgs, lr, alpha, eps, weight_decay,
                                                momentum, centered);
    const RmspropHyper h{lr, alpha, eps, weight_decay, momentum, centered};
    run("rmsprop_step", lists, stream,
        [&](const auto& tensors, cudaStream_t s) { cuda::rmsprop_step(tensors, h, s); });
}

void adam_step(const py::object& params, const py::object& grads, const py::object& exp_avgs,
               const py::object& exp_avg_sqs, const py::object& max_exp_avg_sqs,
               std::int64_t step, double lr, double beta1, double beta2, double eps,
               double weight_decay, bool decoupled, bool amsgrad, const py::object& stream) {
    const auto lists = adam_lists<CudaArray>(cuda_array_list, params, grads, exp_avgs,
                                             exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1,
                                             beta2, eps, weight_decay, amsgrad);
    const AdamHyper h{lr, beta1, beta2, eps, weight_decay, step, decoupled, amsgrad};
    run("adam_step", lists, stream,
        [&](const auto& tensors, cudaStream_t s) { cuda::adam_step(tensors, h, s); });
}

}  // namespace

void bind_optim(py::module_& m) {
    m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grads"), py::arg("momentum_bufs"),
          py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
          py::arg("weight_decay"), py::arg("first"), py::kw_only(), py::arg("stream"),
          "torch.optim.SGD's step over lists of CUDA arrays, one launch.");
    m.def("rmsprop_step", &rmsprop_step, py::arg("params"), py::arg("grads"),
          py::arg("square_avgs"), py::arg("momentum_bufs"), py::arg("grad_avgs"), py::arg("lr"),
          py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
          py::arg("centered"), py::kw_only(), py::arg("stream"),
          "torch.optim.RMSprop's step over lists of CUDA arrays, one launch.");
    m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("step"), py::arg("lr"),
          py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("decoupled"), py::arg("amsgrad"), py::kw_only(), py::arg("stream"),
          "torch.optim.Adam's (decoupled: AdamW's) step over lists of CUDA arrays, one launch.");
}

}  // namespace pyfast::binding
