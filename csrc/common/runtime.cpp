#include "common/runtime.h"

#include <cpuid.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

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

// Walks the deterministic cache-parameter leaf (4 on Intel, 0x8000001D on AMD): each
// subleaf describes one cache until type 0.
bool caches_from_cpuid(CpuCaches& c) {
    unsigned a, b, cx, d;
    if (!__get_cpuid(0, &a, &b, &cx, &d)) return false;
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4), std::memcpy(vendor + 4, &d, 4), std::memcpy(vendor + 8, &cx, 4);
    unsigned leaf;
    if (std::strcmp(vendor, "GenuineIntel") == 0 && a >= 4) {
        leaf = 4;
    } else if (std::strcmp(vendor, "AuthenticAMD") == 0 &&
               __get_cpuid(0x80000000u, &a, &b, &cx, &d) && a >= 0x8000001Du) {
        leaf = 0x8000001Du;
    } else {
        return false;
    }
    bool any = false;
    for (unsigned sub = 0; sub < 16; ++sub) {
        __cpuid_count(leaf, sub, a, b, cx, d);
        const unsigned type = a & 0x1f, level = (a >> 5) & 0x7;
        if (type == 0) break;
        if (type == 2) continue;  // instruction cache
        const std::int64_t ways = ((b >> 22) & 0x3ff) + 1, parts = ((b >> 12) & 0x3ff) + 1,
                           line = (b & 0xfff) + 1, sets = std::int64_t(cx) + 1;
        const std::int64_t size = ways * parts * line * sets;
        if (level == 1) c.l1d = size;
        if (level == 2) c.l2 = size;
        if (level == 3) c.l3 = size, c.l3_sharing = static_cast<int>(((a >> 14) & 0xfff) + 1);
        any = true;
    }
    return any && c.l1d > 0 && c.l2 > 0;
}

CpuCaches detect_caches() {
    CpuCaches c{0, 0, 0, 1, "cpuid"};
    if (!caches_from_cpuid(c)) {
        c = {sysconf(_SC_LEVEL1_DCACHE_SIZE), sysconf(_SC_LEVEL2_CACHE_SIZE),
             sysconf(_SC_LEVEL3_CACHE_SIZE), 1, "sysconf"};
        if (c.l1d <= 0 || c.l2 <= 0) c = {32 << 10, 512 << 10, 0, 1, "default"};
    }
    if (c.l3 < 0) c.l3 = 0;
    return c;
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

const CpuCaches& cpu_caches() {
    static const CpuCaches caches = detect_caches();
    return caches;
}

int num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    PYFAST_CHECK(n >= 1, "num_threads must be >= 1, got ", n);
    g_threads.store(n, std::memory_order_relaxed);
}

}  // namespace pyfast
