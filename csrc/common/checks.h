// Argument checks for the native kernels. A failed check throws std::invalid_argument
// (pybind11 turns it into ValueError) before any memory is touched.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace pyfast {

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    std::ostringstream msg;
    (msg << ... << parts);
    throw std::invalid_argument(msg.str());
}

}  // namespace pyfast

#define PYFAST_CHECK(cond, ...)          \
    do {                                 \
        if (!(cond)) ::pyfast::fail(__VA_ARGS__); \
    } while (0)
