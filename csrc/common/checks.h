// Argument checks for the native kernels. A failed check throws std::invalid_argument
// (pybind11 turns it into ValueError) before any memory is touched.
#pragma once

#include <cmath>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>

#define PYFAST_CHECK(cond, ...)          \
    do {                                 \
        if (!(cond)) ::pyfast::fail(__VA_ARGS__); \
    } while (0)

namespace pyfast {

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    std::ostringstream msg;
    (msg << ... << parts);
    throw std::invalid_argument(msg.str());
}

// A shape as Python prints the tuple: "(2, 3)", "(4,)", "()".
template <typename It>
std::string shape_str(It first, It last) {
    std::string s = "(";
    for (It it = first; it != last; ++it) s += (it == first ? "" : ", ") + std::to_string(*it);
    return s + (std::distance(first, last) == 1 ? ",)" : ")");
}

template <typename Shape>
std::string shape_str(const Shape& shape) {
    return shape_str(std::begin(shape), std::end(shape));
}

// Scalar arguments (loss scales, optimizer hyperparameters): NaN and infinities never pass.
inline void check_finite(double v, const char* name) {
    PYFAST_CHECK(std::isfinite(v), name, " must be finite, got ", v);
}

// v in [low, high], or [low, high) when high_open; high may be HUGE_VAL (printed "inf").
inline void check_in_range(double v, const char* name, double low, double high,
                           bool high_open = false) {
    PYFAST_CHECK(std::isfinite(v) && v >= low && (high_open ? v < high : v <= high), name,
                 " must be a finite number in [", low, ", ", high, high_open ? ")" : "]",
                 ", got ", v);
}

}  // namespace pyfast
