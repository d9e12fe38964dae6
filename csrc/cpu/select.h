// Branch-free selects that GCC vectorises under the default -ftrapping-math (where it will
// not if-convert a floating-point `c ? a : b` that guards an operation).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/runtime.h"

namespace pyfast {

template <typename T> struct SameSizeUint;
template <> struct SameSizeUint<float> { using type = std::uint32_t; };
template <> struct SameSizeUint<double> { using type = std::uint64_t; };
template <> struct SameSizeUint<std::int64_t> { using type = std::uint64_t; };

// c ? a : b through integer masks
template <typename T>
PYFAST_INLINE T blend(bool c, T a, T b) {
    using U = typename SameSizeUint<T>::type;
    U ua, ub;
    std::memcpy(&ua, &a, sizeof a);
    std::memcpy(&ub, &b, sizeof b);
    const U mask = U(0) - static_cast<U>(c);
    const U r = (ua & mask) | (ub & ~mask);
    T out;
    std::memcpy(&out, &r, sizeof out);
    return out;
}

}  // namespace pyfast
