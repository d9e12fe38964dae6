// What the bindings of both extensions share: the binder of each kernel family, how a
// module binds and lists its families, and small pybind11 helpers. The array checks are
// each extension's own (arrays.h for pyfast._C, cuda_arrays.h for pyfast._cuda).
// csrc/bindings/ keeps only what touches pybind11 objects (here, optim_args.h); checks on
// shapes and scalars that need no Python live in csrc/common/ (conv_shape.h,
// softmax_xent_args.h), docs/architecture.md rule 15.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <initializer_list>
#include <string>

#include "common/checks.h"

namespace pyfast::binding {

namespace py = pybind11;
// Each extension's array header adds shape_str overloads for its array type here, which
// would hide common/checks.h's for shapes and containers.
using pyfast::shape_str;

// The Python type name of obj, for messages that say what was passed instead.
inline std::string type_name(const py::handle& obj) {
    return std::string(py::str(py::type::handle_of(obj).attr("__name__")));
}

// The binders of the kernel families, one per family and extension: bind_<family> is
// defined in csrc/bindings/cpu_<family>.cpp for pyfast._C and cuda_<family>.cpp for
// pyfast._cuda, where that backend has the family.
void bind_gemm(py::module_& m);
void bind_conv(py::module_& m);
void bind_softmax_xent(py::module_& m);
void bind_optim(py::module_& m);
void bind_norm(py::module_& m);
void bind_pool(py::module_& m);
void bind_resample(py::module_& m);
void bind_elementwise(py::module_& m);
void bind_linear_xent(py::module_& m);

// A kernel family of an extension: its name in FAMILIES and the function that binds it.
struct Family {
    const char* name;
    void (*bind)(py::module_& m);
};

// Binds the families' functions into m and lists them, in this order, as m.FAMILIES.
inline void bind_families(py::module_& m, std::initializer_list<Family> families) {
    py::tuple names(families.size());
    std::size_t i = 0;
    for (const Family& family : families) {
        family.bind(m);
        names[i++] = family.name;
    }
    m.attr("FAMILIES") = names;
}

}  // namespace pyfast::binding
