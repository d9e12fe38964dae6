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

std::uint64_t xcr0() {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // no OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (std::uint64_t(hi) << 32) | lo;
}

CpuIdentity detect_identity() {
    CpuIdentity id{"unknown", "", 0, 0, 0, {}};
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return id;
    const unsigned max_leaf = a;
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4), std::memcpy(vendor + 4, &d, 4), std::memcpy(vendor + 8, &c, 4);
    id.vendor = vendor;
    unsigned c1 = 0, d1 = 0;
    if (__get_cpuid(1, &a, &b, &c1, &d1)) {
        const int base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
        id.family = base_family == 0xf ? base_family + int((a >> 20) & 0xff) : base_family;
        const bool extended = base_family == 0x6 || base_family == 0xf;
        id.model = extended ? (int((a >> 16) & 0xf) << 4) | base_model : base_model;
        id.stepping = a & 0xf;
    }
    unsigned b7 = 0, c7 = 0, d7 = 0, a7_1 = 0;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d7);
        if (a >= 1) __cpuid_count(7, 1, a7_1, b, c, d);
    }
    if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000004u) {
        char brand[49] = {};
        for (unsigned i = 0; i < 3; ++i) {
            __cpuid(0x80000002u + i, a, b, c, d);
            std::memcpy(brand + 16 * i, &a, 4), std::memcpy(brand + 16 * i + 4, &b, 4);
            std::memcpy(brand + 16 * i + 8, &c, 4), std::memcpy(brand + 16 * i + 12, &d, 4);
        }
        id.brand = brand;
        const auto first = id.brand.find_first_not_of(' ');
        id.brand = first == std::string::npos ? "" : id.brand.substr(first);
        id.brand.erase(id.brand.find_last_not_of(' ') + 1);
    }
    const std::uint64_t os = xcr0();
    const bool ymm = (os & 0x6) == 0x6, zmm = ymm && (os & 0xe0) == 0xe0,
               tiles = (os & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
    auto bit = [](unsigned reg, int n) { return ((reg >> n) & 1u) != 0; };
    id.flags = {{"avx2", ymm && bit(b7, 5)},
                {"fma", ymm && bit(c1, 12)},
                {"avx512f", zmm && bit(b7, 16)},
                {"avx512dq", zmm && bit(b7, 17)},
                {"avx512bw", zmm && bit(b7, 30)},
                {"avx512vl", zmm && bit(b7, 31)},
                {"avx512_vnni", zmm && bit(c7, 11)},
                {"avx512_bf16", zmm && bit(a7_1, 5)},
                {"avx512_fp16", zmm && bit(d7, 23)},
                {"amx_tile", tiles && bit(d7, 24)},
                {"amx_bf16", tiles && bit(d7, 22)},
                {"amx_int8", tiles && bit(d7, 25)}};
    return id;
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

const CpuIdentity& cpu_identity() {
    static const CpuIdentity identity = detect_identity();
    return identity;
}

int num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    PYFAST_CHECK(n >= 1, "num_threads must be >= 1, got ", n);
    g_threads.store(n, std::memory_order_relaxed);
}

}  // namespace pyfast
