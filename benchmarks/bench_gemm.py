"""gemm with pytest-benchmark: the cases of ``pyfast bench gemm`` (pyfast backends against
numpy and torch, plain and with the fused bias+ReLU epilogue), sizes up to 1024 so that
``pytest benchmarks --benchmark-only`` takes minutes on a 2-core CPU.

As a script it compares GEMM cache blockings (the MC,KC,NC of csrc/cpu/gemm.cpp) against
each other and against numpy's OpenBLAS, on the same threads:

    env -u OPENBLAS_CORETYPE python benchmarks/bench_gemm.py --blocks derived 240,384,3072 \\
        [--sizes 256 512 1024] [--threads 1 2] [--rounds 5]

``derived`` is what the library picks from the cache sizes; "MC,KC,NC" forces a blocking
(PYFAST_GEMM_BLOCKS). The blocking is fixed per process, so each round runs one short
process per blocking, in turn (a change in the machine's load hits all alike); inside it,
pyfast and numpy alternate sample by sample. Median and best rate over all samples.
"""

import argparse
import json
import os
import subprocess
import sys

from pyfast import bench
from pyfast.bench import gemm

CASES = list(gemm.cases(bench.Options(), sizes=tuple(n for n in gemm.SIZES if n <= 1024)))


def test_gemm(run_case, case, threads):
    run_case(case, threads)


# ---------------------------------------------------------------------------- script

def _samples(sizes, threads, samples, min_sample_s=0.05):
    """In this process: per (size, threads), GFLOP/s samples of pyfast and numpy, alternating."""
    import time

    import numpy as np

    import pyfast as pf

    out = {"blocking": _blocking()}
    for n in sizes:
        rng = np.random.default_rng(n)
        a, b = (rng.uniform(-1, 1, (n, n)).astype(np.float32) for _ in range(2))
        c = np.empty_like(a)
        want = a.astype(np.float64) @ b.astype(np.float64)
        calls = {"pyfast": lambda: pf.ops.matmul(a, b, out=c, backend="native"),
                 "numpy": lambda: np.matmul(a, b, out=c)}
        for t in threads:
            with bench.limit_threads(t):
                rates = {k: [] for k in calls}
                for name, call in calls.items():   # warm-up and a check of each result
                    call()
                    bench.check_close(c, want, (n + 2) * np.finfo(np.float32).eps *
                                      (np.abs(a).astype(np.float64) @ np.abs(b)))
                number = max(1, int(min_sample_s / (2.0 * n ** 3 / 50e9)))
                for _ in range(samples):
                    for name, call in calls.items():
                        start = time.perf_counter()
                        for _ in range(number):
                            call()
                        rates[name].append(2.0 * n ** 3 * number /
                                           (time.perf_counter() - start) * 1e-9)
                out[f"{n} {t}"] = rates
    return out


def _blocking():
    from pyfast import _C
    return dict(_C.gemm_blocking("float32"))


def main(argv=None):
    import statistics

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--blocks", nargs="+", default=["derived"],
                        help="'derived' or MC,KC,NC (default: derived)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({1, bench.usable_cores()}))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=3, help="per round, per library")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_samples(args.sizes, args.threads, args.samples)))
        return 0

    machine = bench.machine_info()
    blas = machine.get("blas") or [{}]
    print(f"{machine['cpu']}, {machine['cores']} cores, code path {machine.get('isa')}; "
          f"OpenBLAS core type {blas[0].get('architecture')}"
          + (f"; WARNING: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} forces it"
             if os.environ.get("OPENBLAS_CORETYPE") else ""))
    results = {b: [] for b in args.blocks}
    for _ in range(args.rounds):
        for blocks in args.blocks:
            env = dict(os.environ)
            env.pop("PYFAST_GEMM_BLOCKS", None)
            if blocks != "derived":
                env["PYFAST_GEMM_BLOCKS"] = blocks
            cmd = [sys.executable, __file__, "--child", "--sizes", *map(str, args.sizes),
                   "--threads", *map(str, args.threads), "--samples", str(args.samples)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            results[blocks].append(json.loads(done.stdout))
    load = os.getloadavg()[0]
    print(f"float32 square GEMM, GFLOP/s: median (best) of {args.rounds} x {args.samples} "
          f"samples; load average at the end {load:.1f} on {bench.usable_cores()} cores")
    print(f"{'blocking':<40} {'n':>5} {'thr':>3} {'pyfast':>15} {'numpy':>15} "
          f"{'pyfast/numpy':>12}")
    for blocks, runs in results.items():
        b = runs[0]["blocking"]
        label = f"{blocks} (MC {b['mc']} KC {b['kc']} NC {b['nc']})"
        for n in args.sizes:
            for t in args.threads:
                key = f"{n} {t}"
                ours = [r for run in runs for r in run[key]["pyfast"]]
                theirs = [r for run in runs for r in run[key]["numpy"]]
                mo, mt = statistics.median(ours), statistics.median(theirs)
                print(f"{label:<40} {n:>5} {t:>3} {mo:>7.1f} ({max(ours):>5.1f}) "
                      f"{mt:>7.1f} ({max(theirs):>5.1f}) {mo / mt:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
