#include "common/runtime.h"

#include <atomic>
#include <cstdlib>

#include "common/checks.h"

namespace pyfast {
namespace {

Isa detect() {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
    return Isa::generic;
}

Isa parse(const std::string& name) {
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512})
        if (name == isa_name(isa)) return isa;
    fail("unknown CPU code path '", name, "'; valid names are generic, avx2, avx512");
}

Isa initial() {
    const char* env = std::getenv("PYFAST_CPU_ISA");
    if (env && *env) {
        Isa want = parse(env);
        if (static_cast<int>(want) <= static_cast<int>(best_isa())) return want;
    }
    return best_isa();
}

std::atomic<int> g_isa{-1};
std::atomic<int> g_threads{1};

}  // namespace

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

Isa best_isa() {
    static const Isa best = detect();
    return best;
}

std::vector<std::string> supported_isas() {
    std::vector<std::string> names;
    for (int i = 0; i <= static_cast<int>(best_isa()); ++i)
        names.emplace_back(isa_name(static_cast<Isa>(i)));
    return names;
}

Isa active_isa() {
    int isa = g_isa.load(std::memory_order_relaxed);
    if (isa < 0) {
        isa = static_cast<int>(initial());
        g_isa.store(isa, std::memory_order_relaxed);
    }
    return static_cast<Isa>(isa);
}

void set_isa(const std::string& name) {
    Isa want = parse(name);
    PYFAST_CHECK(static_cast<int>(want) <= static_cast<int>(best_isa()), "this CPU cannot run the ",
                 name, " code path (best available: ", isa_name(best_isa()), ")");
    g_isa.store(static_cast<int>(want), std::memory_order_relaxed);
}

int num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    PYFAST_CHECK(n >= 1, "num_threads must be >= 1, got ", n);
    g_threads.store(n, std::memory_order_relaxed);
}

}  // namespace pyfast
