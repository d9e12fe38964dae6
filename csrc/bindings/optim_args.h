// The arguments of the fused optimizer steps, as both extensions take them: hyperparameters
// checked here, and the lists (params, grads and up to three state lists, one array per
// parameter) read and counted here. Each extension then checks the arrays themselves (numpy
// in cpu_optim.cpp, CUDA arrays in cuda_optim.cpp): dtype, shape, layout, writeability.
// It reads py::handle lists, so it is a bindings header, not a csrc/common/ one (rule 15).
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "bindings/common.h"

namespace pyfast::binding {

// Array: py::array or CudaArray. read_list(obj, name) turns one Python list into arrays.
template <class Array>
struct OptimLists {
    std::vector<Array> params, grads, states[3];
    const char* state_names[3] = {"", "", ""};
    bool has_state[3] = {false, false, false};

    template <class ReadList>
    OptimLists(ReadList read_list, const py::handle& params_obj, const py::handle& grads_obj) {
        params = read_list(params_obj, "params");
        grads = read_list(grads_obj, "grads");
        PYFAST_CHECK(!params.empty(), "params is an empty list");
        PYFAST_CHECK(grads.size() == params.size(), "grads has ", grads.size(),
                     " arrays but params has ", params.size());
    }

    // A state list the options `need` (`why` names them); ignored, even unread, otherwise.
    template <class ReadList>
    void add_state(ReadList read_list, int slot, const py::handle& obj, const char* name,
                   bool needed, const char* why) {
        state_names[slot] = name;
        if (!needed) return;
        PYFAST_CHECK(!obj.is_none(), name, " is required", *why ? " " : "", why);
        states[slot] = read_list(obj, name);
        PYFAST_CHECK(states[slot].size() == params.size(), name, " has ", states[slot].size(),
                     " arrays but params has ", params.size());
        has_state[slot] = true;
    }
};

// torch.optim.SGD; state {momentum_bufs}.
template <class Array, class ReadList>
OptimLists<Array> sgd_lists(ReadList read_list, const py::handle& params,
                            const py::handle& grads, const py::handle& momentum_bufs, double lr,
                            double momentum, double dampening, bool nesterov,
                            double weight_decay) {
    check_in_range(lr, "lr", 0, HUGE_VAL);
    check_in_range(momentum, "momentum", 0, HUGE_VAL);
    check_in_range(dampening, "dampening", 0, HUGE_VAL);
    check_in_range(weight_decay, "weight_decay", 0, HUGE_VAL);
    PYFAST_CHECK(!nesterov || (momentum > 0 && dampening == 0),
                 "nesterov needs momentum > 0 and dampening == 0");
    OptimLists<Array> lists(read_list, params, grads);
    lists.add_state(read_list, 0, momentum_bufs, "momentum_bufs", momentum > 0,
                    "with momentum > 0");
    return lists;
}

// torch.optim.RMSprop; states {square_avgs, momentum_bufs, grad_avgs}.
template <class Array, class ReadList>
OptimLists<Array> rmsprop_lists(ReadList read_list, const py::handle& params,
                                const py::handle& grads, const py::handle& square_avgs,
                                const py::handle& momentum_bufs, const py::handle& grad_avgs,
                                double lr, double alpha, double eps, double weight_decay,
                                double momentum, bool centered) {
    check_in_range(lr, "lr", 0, HUGE_VAL);
    check_in_range(alpha, "alpha", 0, 1);
    check_in_range(eps, "eps", 0, HUGE_VAL);
    check_in_range(weight_decay, "weight_decay", 0, HUGE_VAL);
    check_in_range(momentum, "momentum", 0, HUGE_VAL);
    OptimLists<Array> lists(read_list, params, grads);
    lists.add_state(read_list, 0, square_avgs, "square_avgs", true, "");
    lists.add_state(read_list, 1, momentum_bufs, "momentum_bufs", momentum > 0,
                    "with momentum > 0");
    lists.add_state(read_list, 2, grad_avgs, "grad_avgs", centered, "with centered=True");
    return lists;
}

// torch.optim.Adam and AdamW; states {exp_avgs, exp_avg_sqs, max_exp_avg_sqs}.
template <class Array, class ReadList>
OptimLists<Array> adam_lists(ReadList read_list, const py::handle& params,
                             const py::handle& grads, const py::handle& exp_avgs,
                             const py::handle& exp_avg_sqs, const py::handle& max_exp_avg_sqs,
                             std::int64_t step, double lr, double beta1, double beta2,
                             double eps, double weight_decay, bool amsgrad) {
    PYFAST_CHECK(step >= 1, "step must be >= 1 (steps count from 1), got ", step);
    check_in_range(lr, "lr", 0, HUGE_VAL);
    check_in_range(beta1, "beta1", 0, 1, true);
    check_in_range(beta2, "beta2", 0, 1, true);
    check_in_range(eps, "eps", 0, HUGE_VAL);
    check_in_range(weight_decay, "weight_decay", 0, HUGE_VAL);
    OptimLists<Array> lists(read_list, params, grads);
    lists.add_state(read_list, 0, exp_avgs, "exp_avgs", true, "");
    lists.add_state(read_list, 1, exp_avg_sqs, "exp_avg_sqs", true, "");
    lists.add_state(read_list, 2, max_exp_avg_sqs, "max_exp_avg_sqs", amsgrad,
                    "with amsgrad=True");
    return lists;
}

}  // namespace pyfast::binding
