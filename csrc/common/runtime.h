// Process-wide settings of the CPU kernels: the SIMD code path and the thread count.
//
// The ISA is detected once with cpuid; PYFAST_CPU_ISA (generic, avx2, avx512) or
// set_isa() may choose a lower one, never one the CPU lacks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
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

// The data caches one core sees, in bytes, read once with cpuid (deterministic cache
// parameters: leaf 4 on Intel, 0x8000001D on AMD), else from sysconf, else typical sizes.
// Blocking parameters derive from these, never from constants fitted on one machine.
// l3 is the whole level-3 cache; l3_sharing the logical CPUs that share it.
struct CpuCaches {
    std::int64_t l1d, l2, l3;
    int l3_sharing;
    const char* source;  // "cpuid", "sysconf" or "default"
};
const CpuCaches& cpu_caches();

// Who the CPU is (cpuid leaves 0, 1, 7 and 0x80000002-4) and the instruction-set extensions
// pyfast's code paths care about, each true only when the CPU has it and the OS saves its
// register state (XCR0): what the family/model-specific tuning and `pyfast info` read.
struct CpuIdentity {
    std::string vendor, brand;
    int family, model, stepping;  // display family and model (extended fields folded in)
    std::vector<std::pair<std::string, bool>> flags;
};
const CpuIdentity& cpu_identity();

// Threads for `work` elements of independent `units` (planes, channels): one below 16K
// elements, where a parallel region costs more than it saves, else up to one per unit.
inline int team(std::int64_t work, std::int64_t units) {
    if (work < (1 << 14)) return 1;
    return static_cast<int>(
        std::max<std::int64_t>(1, std::min<std::int64_t>(num_threads(), units)));
}

// The one switch over the active ISA for a kernel with a SIMD path per ISA: calls
// f(Cfg{}, tiles) with the configuration (a tag type of static constants) and the
// target-compiled tile function of that path, as Paths names them (see
// PYFAST_ISA_TILE_PATHS). It runs once per call, outside the loops, so the lambda is free.
template <class Paths, class F>
decltype(auto) with_active_isa(F&& f) {
    switch (active_isa()) {
        case Isa::avx512: return f(typename Paths::avx512{}, Paths::tiles_avx512);
        case Isa::avx2: return f(typename Paths::avx2{}, Paths::tiles_avx2);
        default: return f(typename Paths::generic{}, Paths::tiles_generic);
    }
}

// The active ISA's tile function of Paths, where the caller needs no configuration.
template <class Paths>
auto active_tiles() {
    return with_active_isa<Paths>([](auto, auto tiles) { return tiles; });
}

// One of three values (usually functions compiled per ISA) by the active ISA.
template <typename V>
V for_active_isa(V generic, V avx2, V avx512) {
    switch (active_isa()) {
        case Isa::avx512: return avx512;
        case Isa::avx2: return avx2;
        default: return generic;
    }
}

}  // namespace pyfast

#if defined(__GNUC__)
#define PYFAST_INLINE inline __attribute__((always_inline))
#define PYFAST_TARGET(isa) __attribute__((target(isa)))
#else
#error "pyfast's native kernels need GCC or Clang"
#endif

// The target of each SIMD path, in one place (best_isa() checks the CPU has these).
#define PYFAST_TARGET_AVX2 PYFAST_TARGET("avx2,fma")
#define PYFAST_TARGET_AVX512 PYFAST_TARGET("avx512f,avx512dq,avx512vl,avx512bw,fma")

// The six tile functions of a kernel and the Paths<float>/<double> that name them for
// with_active_isa. A macro because a target attribute applies to a whole function: each ISA
// needs a function of its own, into which the micro-kernel is inlined and so compiled for
// that ISA. PYFAST_ISA_TILE_PATHS(Paths, Arg, run, fn, cfg) writes
//   void fn_generic_f32(const Arg<float>& b, int64_t t0, int64_t t1)  // run<cfgGenericF32>
//   ... fn_avx2_f32, fn_avx512_f32 (under their targets), and the same three for f64;
//   template <typename T> struct Paths;  // Paths<float>, Paths<double>: the configurations
//                                        // generic, avx2, avx512 and tiles_generic, ...
// (cfg may be empty: cfgGenericF32 is then GenericF32.)
#define PYFAST_ISA_TILE_PATHS(Paths, Arg, run, fn, cfg)              \
    PYFAST_ISA_TILES_OF_TYPE_(Arg, run, fn, cfg, float, f32, F32)    \
    PYFAST_ISA_TILES_OF_TYPE_(Arg, run, fn, cfg, double, f64, F64)   \
    template <typename T>                                            \
    struct Paths;                                                    \
    PYFAST_ISA_PATHS_OF_TYPE_(Paths, Arg, fn, cfg, float, f32, F32)  \
    PYFAST_ISA_PATHS_OF_TYPE_(Paths, Arg, fn, cfg, double, f64, F64)

#define PYFAST_ISA_TILES_OF_TYPE_(Arg, run, fn, cfg, T, t, Ty)                           \
    void fn##_generic_##t(const Arg<T>& b, std::int64_t t0, std::int64_t t1) {            \
        run<cfg##Generic##Ty>(b, t0, t1);                                                 \
    }                                                                                     \
    PYFAST_TARGET_AVX2                                                                    \
    void fn##_avx2_##t(const Arg<T>& b, std::int64_t t0, std::int64_t t1) {               \
        run<cfg##Avx2##Ty>(b, t0, t1);                                                    \
    }                                                                                     \
    PYFAST_TARGET_AVX512                                                                  \
    void fn##_avx512_##t(const Arg<T>& b, std::int64_t t0, std::int64_t t1) {             \
        run<cfg##Avx512##Ty>(b, t0, t1);                                                  \
    }

#define PYFAST_ISA_PATHS_OF_TYPE_(Paths, Arg, fn, cfg, T, t, Ty)                          \
    template <>                                                                           \
    struct Paths<T> {                                                                     \
        using generic = cfg##Generic##Ty;                                                 \
        using avx2 = cfg##Avx2##Ty;                                                       \
        using avx512 = cfg##Avx512##Ty;                                                   \
        using Tiles = void (*)(const Arg<T>&, std::int64_t, std::int64_t);                \
        static constexpr Tiles tiles_generic = fn##_generic_##t;                          \
        static constexpr Tiles tiles_avx2 = fn##_avx2_##t;                                \
        static constexpr Tiles tiles_avx512 = fn##_avx512_##t;                            \
    };
