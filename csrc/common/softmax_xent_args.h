// The argument checks of the softmax_xent family that both extensions make alike, on the
// shapes and scalars whatever the arrays are (numpy in bindings/cpu_softmax_xent.cpp, CUDA
// arrays in bindings/cuda_softmax_xent.cpp). Plain C++ with no pybind11, so it lives in
// common/ beside conv_shape.h's checks.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/checks.h"

namespace pyfast {

// softmax_xent: logits (N, C, S) with 1 to 2^31 - 1 classes, smoothing in [0, 1], a finite
// grad_scale.
template <class Shape>
void check_xent_args(const Shape& logits, double smoothing, double grad_scale) {
    PYFAST_CHECK(logits.size() == 3, "logits must be 3-D (N, C, S), got shape ",
                 shape_str(logits));
    PYFAST_CHECK(logits[1] >= 1 && logits[1] <= INT32_MAX,
                 "logits must have 1 to 2^31 - 1 classes (axis 1), got shape ", shape_str(logits));
    PYFAST_CHECK(std::isfinite(smoothing) && smoothing >= 0 && smoothing <= 1,
                 "smoothing must be in [0, 1], got ", smoothing);
    check_finite(grad_scale, "grad_scale");
}

// bce_with_logits' weight and pos_weight: element i of the flat (m,) operands reads
// [i % period], so the period (their size) must divide m.
template <class Shape>
std::int64_t check_period(const Shape& shape, const char* name, std::int64_t m) {
    PYFAST_CHECK(shape.size() == 1 && shape[0] >= 1 && m % shape[0] == 0, name,
                 " must be 1-D with a size that divides ", m, ", got shape ", shape_str(shape));
    return shape[0];
}

}  // namespace pyfast
