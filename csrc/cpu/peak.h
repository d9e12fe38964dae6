// Roofline peaks of the machine the kernels run on, measured rather than taken from a data
// sheet: the 100% marks of `pyfast bench` (docs/benchmarking.md).
#pragma once

#include <cstdint>

namespace pyfast {

// float32 GFLOP/s of an FMA-bound loop on the active ISA, `threads` OpenMP threads, counting
// 2 flops per FMA lane. Median of a few runs of about 0.1 s each.
double fma_peak_gflops(int threads);

// GB/s of an OpenMP-parallel copy of `nbytes` into another `nbytes`, counting the bytes read
// plus the bytes written. Median of a few repetitions. `nbytes` should dwarf the caches.
double copy_bandwidth_gbs(int threads, std::int64_t nbytes);

}  // namespace pyfast
