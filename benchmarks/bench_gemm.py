"""gemm with pytest-benchmark: the cases of ``pyfast bench gemm`` (pyfast backends against
numpy and torch, plain and with the fused bias+ReLU epilogue), sizes up to 1024 so that
``pytest benchmarks --benchmark-only`` takes minutes on a 2-core CPU.

As a script it compares GEMM cache blockings (the MC,KC,NC of csrc/cpu/gemm.cpp) against
each other and against numpy's OpenBLAS, on the same threads:

    env -u OPENBLAS_CORETYPE python benchmarks/bench_gemm.py --blocks derived 240,384,3072 \\
        [--sizes 256 512 1024] [--threads 1 2] [--rounds 15]

``derived`` is what the library picks from the cache sizes; "MC,KC,NC" forces a blocking
(``pyfast._C.set_gemm_blocks``). Every blocking and numpy take one short sample each in
turn, so a change in the machine's load hits all alike; median and best rate of the
samples (on a busy machine the best is the closer estimate of the uncontended speed).
"""

import argparse
import os
import sys

from pyfast import bench
from pyfast.bench import gemm

CASES = list(gemm.cases(bench.Options(), sizes=tuple(n for n in gemm.SIZES if n <= 1024)))


def test_gemm(run_case, case, threads):
    run_case(case, threads)


# ---------------------------------------------------------------------------- script

def _blocking():
    from pyfast import _C
    return dict(_C.gemm_blocking("float32"))


def _set_blocks(blocks):
    from pyfast import _C
    _C.set_gemm_blocks(*(0, 0, 0) if blocks == "derived" else map(int, blocks.split(",")))


def main(argv=None):
    import statistics
    import time

    import numpy as np

    import pyfast as pf

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--blocks", nargs="+", default=["derived"],
                        help="'derived' or MC,KC,NC (default: derived)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({1, bench.usable_cores()}))
    parser.add_argument("--rounds", type=int, default=15, help="samples per implementation")
    parser.add_argument("--sample-s", type=float, default=0.02, help="seconds per sample")
    args = parser.parse_args(argv)

    machine = bench.machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores, code path {machine.get('isa')}")
    print(bench.blas_header())
    labels = {}
    for blocks in args.blocks:
        _set_blocks(blocks)
        b = _blocking()
        labels[blocks] = f"pyfast {blocks} (MC {b['mc']} KC {b['kc']} NC {b['nc']})"
    _set_blocks("derived")
    load_start = os.getloadavg()[0]
    table = []
    for n in args.sizes:
        rng = np.random.default_rng(n)
        a, b = (rng.uniform(-1, 1, (n, n)).astype(np.float32) for _ in range(2))
        c = np.empty_like(a)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        want = a64 @ b64
        bound = (n + 2) * np.finfo(np.float32).eps * (np.abs(a64) @ np.abs(b64))
        impls = {labels[blk]: (blk, lambda: pf.ops.matmul(a, b, out=c, backend="native"))
                 for blk in args.blocks}
        impls["numpy (OpenBLAS)"] = (None, lambda: np.matmul(a, b, out=c))
        for t in args.threads:
            with bench.limit_threads(t):
                rates = {k: [] for k in impls}
                calls = {}
                for name, (blk, call) in impls.items():   # warm-up, check, calls per sample
                    if blk:
                        _set_blocks(blk)
                    call()
                    bench.check_close(c, want, bound)
                    start = time.perf_counter()
                    call()
                    calls[name] = max(1, int(args.sample_s / (time.perf_counter() - start)))
                for _ in range(args.rounds):   # one sample of each in turn
                    for name, (blk, call) in impls.items():
                        if blk:
                            _set_blocks(blk)
                        start = time.perf_counter()
                        for _ in range(calls[name]):
                            call()
                        rates[name].append(2.0 * n ** 3 * calls[name] /
                                           (time.perf_counter() - start) * 1e-9)
                _set_blocks("derived")
            for name, r in rates.items():
                table.append((n, t, name, statistics.median(r), max(r)))
    print(f"float32 square GEMM, GFLOP/s, median and best of {args.rounds} samples of "
          f"~{args.sample_s * 1e3:.0f} ms each, implementations interleaved sample by sample; "
          f"load average {load_start:.1f} -> {os.getloadavg()[0]:.1f} on "
          f"{bench.usable_cores()} cores")
    width = max(len(k) for k in list(labels.values()) + ["numpy (OpenBLAS)"])
    print(f"{'n':>5} {'thr':>3}  {'implementation':<{width}} {'median':>7} {'best':>7} "
          f"{'median/numpy':>12} {'best/numpy':>10}")
    for n, t, name, med, best in table:
        ref = next(x for x in table if x[:3] == (n, t, "numpy (OpenBLAS)"))
        print(f"{n:>5} {t:>3}  {name:<{width}} {med:>7.1f} {best:>7.1f} "
              f"{med / ref[3]:>11.2f}x {best / ref[4]:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
