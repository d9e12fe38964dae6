// Process-wide settings of the CPU kernels: the SIMD code path and the thread count.
//
// The ISA is detected once with cpuid; PYFAST_CPU_ISA (generic, avx2, avx512) or
// set_isa() may choose a lower one, never one the CPU lacks.
#pragma once

#include <string>
#include <vector>

namespace pyfast {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
Isa best_isa();                       // the best path this CPU runs
std::vector<std::string> supported_isas();
Isa active_isa();                     // the path kernels take now
void set_isa(const std::string& name);  // throws invalid_argument if unknown/unsupported

int num_threads();
void set_num_threads(int n);

}  // namespace pyfast

#if defined(__GNUC__)
#define PYFAST_INLINE inline __attribute__((always_inline))
#define PYFAST_TARGET(isa) __attribute__((target(isa)))
#else
#error "pyfast's native kernels need GCC or Clang"
#endif
