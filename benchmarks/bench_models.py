"""End-to-end training-step throughput: ResNet-18 (32x32, batch 64), DenseNet-121 (32x32,
batch 32) and U-Net (64x64, batch 16), pyfast against the same networks in torch CPU on the
same threads, same weights, same batch: torch NCHW, torch channels_last and (--compile)
torch.compile (the cases of ``pyfast bench models``; see pyfast/bench/models.py).

Under pytest-benchmark each case runs a few rounds at all cores only, so the file takes
about a minute or two. As a script it prints images/s side by side, the ratio to torch and,
for pyfast, the share of a step spent in each kernel family:

    env -u OPENBLAS_CORETYPE python benchmarks/bench_models.py [--threads N ...]
        [--networks resnet18 ...] [--compile] [--plain-malloc] [--json PATH]

Timings are medians; on a shared machine compare the figures of one run only.
"""

from __future__ import annotations

import argparse
import sys

import pyfast as pf
from pyfast import bench
from pyfast.bench import models

CASES = list(models.cases(bench.Options()))


def test_train_step(benchmark, case):
    """One training step per round (3 rounds after a checked first step)."""
    if isinstance(case, bench.Skip):
        import pytest
        pytest.skip(case.reason)
    threads = pf.get_num_threads()
    benchmark.group = f"models {case.op} {case.shape} {threads}t"
    benchmark.extra_info.update(impl=case.impl, threads=threads, work=case.work, unit=case.unit)
    call = case.prepare()
    with bench.limit_threads(threads):
        case.check(call())
        benchmark.pedantic(call, rounds=3, warmup_rounds=1)
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        batch = int(case.shape[1:].split("x")[0])
        benchmark.extra_info.update(images_per_s=batch / median,
                                    gflops=case.work / median * 1e-9)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES, ids=[
            f"{c.impl}-{c.device}" if isinstance(c, bench.Skip) else f"{c.op}-{c.impl}"
            for c in CASES])


# ---------------------------------------------------------------------------- script

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({1, bench.usable_cores()}))
    parser.add_argument("--networks", nargs="+", choices=[n.name for n in models.NETWORKS])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per row")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--plain-malloc", action="store_true",
                        help="glibc's default allocator settings, as a library user has them")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)
    if not args.plain_malloc:
        from pyfast._memory import keep_freed_memory
        keep_freed_memory()   # as `pyfast bench` does: both libraries reuse warm pages

    machine = bench.machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores, {machine.get('isa')}; torch "
          f"{machine['versions']['torch']}; {machine['date']}; malloc "
          f"{'glibc defaults' if args.plain_malloc else 'freed memory kept'}")
    print(bench.blas_header())
    cases = [c for c in models.cases(bench.Options(compile=args.compile), args.networks)
             if isinstance(c, bench.Case)]
    rows = bench.run(cases, args.threads, budget_s=args.budget)
    competitors = [models.TORCH_IMPLS[m] for m in models.TORCH_MODES
                   if m != "compile" or args.compile]
    print(f"\nimages/s (median of the samples; min-time rate in brackets); ratio = pyfast's "
          f"rate / the competitor's")
    print(f"{'network':<12} {'batch':>5} {'thr':>3} {'pyfast':>14} " +
          " ".join(f"{c:>26}" for c in competitors))
    table = []
    for threads in args.threads:
        for network in models.NETWORKS:
            mine = [r for r in rows if r.op.startswith(network.name + " ")
                    and r.threads == threads]
            by_impl = {r.impl: r for r in mine}
            ours = next((r for r in mine if r.impl.startswith(bench.PYFAST_PREFIX)), None)
            if ours is None:
                continue
            failed = [r for r in mine if r.error]
            if failed:
                print(f"{network.name:<12} !! {failed[0].impl}: {failed[0].error}")
                continue
            rate = network.batch / ours.median_s
            entry = {"network": network.name, "batch": network.batch, "threads": threads,
                     "pyfast_images_per_s": rate,
                     "pyfast_best_images_per_s": network.batch / ours.min_s,
                     "pyfast_gflops": ours.rate, "load_average": ours.load_average}
            cells = []
            for c in competitors:
                r = by_impl.get(c)
                if r is None:
                    cells.append(f"{'-':>26}")
                    continue
                theirs = network.batch / r.median_s
                entry[f"{c}_images_per_s"] = theirs
                entry[f"{c}_best_images_per_s"] = network.batch / r.min_s
                entry[f"ratio_{c}"] = rate / theirs
                cells.append(f"{theirs:>7.1f} ({network.batch / r.min_s:>5.1f}) "
                             f"{rate / theirs:>9.2f}x")
            table.append(entry)
            print(f"{network.name:<12} {network.batch:>5} {threads:>3} {rate:>6.1f} "
                  f"({network.batch / ours.min_s:>5.1f}) " + " ".join(cells))
    profiles = {}
    if not args.no_profile:
        threads = max(args.threads)
        print(f"\nWhere a pyfast step goes ({threads} threads; share of the step by kernel "
              f"family, 'outside kernels' = Python, autograd, NumPy glue):")
        with bench.limit_threads(threads):
            for network in models.NETWORKS:
                if args.networks and network.name not in args.networks:
                    continue
                p = models.profile(network.name)
                profiles[network.name] = p
                parts = ", ".join(f"{k} {100 * v / p['total']:.0f}%" for k, v in p.items()
                                  if k != "total")
                print(f"  {network.name:<12} {p['total']:.2f} s: {parts}")
    for note in bench.notes(rows):
        print("\n" + note)
    if args.json:
        bench.write_json_atomic(args.json, {"schema": "pyfast-bench-models/2",
                                            "machine": bench.machine_info(), "table": table,
                                            "options": {"compile": args.compile,
                                                        "plain_malloc": args.plain_malloc},
                                            "profiles": profiles,
                                            "rows": [vars(r) for r in rows]})
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
