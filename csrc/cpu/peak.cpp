// Roofline peaks: an FMA-bound loop and a large parallel copy, timed on this machine.
//
// FMA peak: each thread runs Chains independent recurrences acc = acc * m + c over full-width
// vectors of the active ISA. An FMA has a latency of ~4 cycles and CPUs issue two per cycle,
// so at least 8 must be in flight; 12 chains (24 where AVX-512 has 32 registers) keep the
// loop throughput-bound with the constants still in registers. -ffp-contract=fast turns each
// step into one FMA on avx2/avx512; the SSE2 path issues mul + add, as its GEMM does, and
// is counted the same (2 flops per lane). With 0 < m < 1 the values settle at c / (1 - m),
// far from overflow and denormals, so no step slows down. The loop cannot be folded: its
// trip count, seed and constants are run-time values, float arithmetic is not reassociated
// without -ffast-math, an empty asm pins every accumulator in a register each step, and the
// sum of the accumulators is stored where the compiler must assume it is read.
//
// Copy bandwidth: memcpy of a per-thread slice, the best copy the C library knows (it
// switches to non-temporal stores for large blocks, so no read-for-ownership is paid).
// Both buffers are first touched by the thread that later copies the slice, so on a NUMA
// machine the pages live next to it.

#include "cpu/peak.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "common/checks.h"
#include "common/runtime.h"

namespace pyfast {
namespace {

using std::int64_t;

constexpr int kTimedRuns = 5;
constexpr double kFmaRunSeconds = 0.1;
constexpr int kMaxThreads = 4096;

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef float F32x4 __attribute__((vector_size(16)));
typedef float F32x8 __attribute__((vector_size(32)));
typedef float F32x16 __attribute__((vector_size(64)));

template <typename V, int Chains>
PYFAST_INLINE float fma_chains(int64_t iters, float seed) {
    const V m = V{} + (1.0f - 1e-6f * seed), c = V{} + 1e-6f * seed;
    V acc[Chains];
#pragma GCC unroll 32
    for (int i = 0; i < Chains; ++i) acc[i] = V{} + seed * static_cast<float>(i + 1);
    for (int64_t t = 0; t < iters; ++t) {
#pragma GCC unroll 32
        for (int i = 0; i < Chains; ++i) {
            acc[i] = acc[i] * m + c;
            asm volatile("" : "+v"(acc[i]));
        }
    }
    V sum = V{};
#pragma GCC unroll 32
    for (int i = 0; i < Chains; ++i) sum += acc[i];
    float total = 0.0f;
    for (size_t l = 0; l < sizeof(V) / sizeof(float); ++l) total += sum[l];
    return total;
}

using FmaLoop = float (*)(int64_t, float);

constexpr int kGenericChains = 12, kAvx2Chains = 12, kAvx512Chains = 24;

float fma_loop_generic(int64_t iters, float seed) { return fma_chains<F32x4, kGenericChains>(iters, seed); }
PYFAST_TARGET_AVX2
float fma_loop_avx2(int64_t iters, float seed) { return fma_chains<F32x8, kAvx2Chains>(iters, seed); }
PYFAST_TARGET_AVX512
float fma_loop_avx512(int64_t iters, float seed) { return fma_chains<F32x16, kAvx512Chains>(iters, seed); }

struct FmaPath {
    FmaLoop loop;
    int flops_per_iter;  // per thread: chains x lanes x 2
};

FmaPath fma_path() {
    return for_active_isa<FmaPath>({fma_loop_generic, kGenericChains * 4 * 2},
                                   {fma_loop_avx2, kAvx2Chains * 8 * 2},
                                   {fma_loop_avx512, kAvx512Chains * 16 * 2});
}

// Results land here, so the compiler must compute them.
volatile float g_fma_sink;
volatile char g_copy_sink;

// Seconds for every thread to run `iters` iterations; *team gets the threads OpenMP gave.
double time_fma(FmaLoop loop, int threads, int64_t iters, int* team) {
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
    {
        const float r = loop(iters, 1.0f + static_cast<float>(omp_get_thread_num()));
#pragma omp critical(pyfast_fma_sink)
        g_fma_sink = g_fma_sink + r;
#pragma omp single
        *team = omp_get_num_threads();
    }
    return omp_get_wtime() - t0;
}

struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
};

std::unique_ptr<char[], FreeDeleter> alloc_uninitialised(int64_t nbytes) {
    const int64_t rounded = (nbytes + 63) / 64 * 64;
    char* p = static_cast<char*>(std::aligned_alloc(64, static_cast<size_t>(rounded)));
    if (!p) throw std::bad_alloc();
    return std::unique_ptr<char[], FreeDeleter>(p);
}

// The page-aligned slice [begin, end) of nbytes that thread tid of nth copies.
void slice(int64_t nbytes, int tid, int nth, int64_t* begin, int64_t* end) {
    constexpr int64_t page = 4096;
    const int64_t per = ((nbytes + nth - 1) / nth + page - 1) / page * page;
    *begin = std::min(nbytes, per * tid);
    *end = std::min(nbytes, *begin + per);
}

}  // namespace

double fma_peak_gflops(int threads) {
    PYFAST_CHECK(threads >= 1 && threads <= kMaxThreads, "threads must be in [1, ", kMaxThreads,
                 "], got ", threads);
    const FmaPath path = fma_path();
    int team = threads;
    // Grow the run until it lasts long enough to time, then size it to ~kFmaRunSeconds; the
    // first runs also start the thread pool and raise the clock.
    int64_t iters = 1 << 12;
    double t = time_fma(path.loop, threads, iters, &team);
    while (t < 0.02) {
        iters *= 4;
        t = time_fma(path.loop, threads, iters, &team);
    }
    iters = std::max<int64_t>(1, static_cast<int64_t>(iters * (kFmaRunSeconds / t)));
    std::vector<double> gflops;
    for (int r = 0; r < kTimedRuns; ++r) {
        t = time_fma(path.loop, threads, iters, &team);
        gflops.push_back(static_cast<double>(team) * iters * path.flops_per_iter / t * 1e-9);
    }
    return median(gflops);
}

double copy_bandwidth_gbs(int threads, int64_t nbytes) {
    PYFAST_CHECK(threads >= 1 && threads <= kMaxThreads, "threads must be in [1, ", kMaxThreads,
                 "], got ", threads);
    PYFAST_CHECK(nbytes >= (int64_t{1} << 20), "nbytes must be at least 1 MiB (a copy that fits "
                 "the caches does not measure memory), got ", nbytes);
    auto src = alloc_uninitialised(nbytes), dst = alloc_uninitialised(nbytes);
    char* s = src.get();
    char* d = dst.get();
#pragma omp parallel num_threads(threads)
    {
        int64_t b, e;
        slice(nbytes, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
        std::memset(s + b, 0x5a, static_cast<size_t>(e - b));
        std::memset(d + b, 0, static_cast<size_t>(e - b));
    }
    std::vector<double> gbs;
    for (int r = 0; r <= kTimedRuns; ++r) {  // run 0 warms up
        const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
        {
            int64_t b, e;
            slice(nbytes, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
            std::memcpy(d + b, s + b, static_cast<size_t>(e - b));
        }
        const double t = omp_get_wtime() - t0;
        if (r > 0) gbs.push_back(2.0 * static_cast<double>(nbytes) / t * 1e-9);
    }
    g_copy_sink = d[nbytes - 1];  // the copies are read, so they cannot be dropped
    return median(gbs);
}

}  // namespace pyfast
