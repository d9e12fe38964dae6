"""End-to-end training-step throughput: ResNet-18 (32x32, batch 64), DenseNet-121 (32x32,
batch 32) and U-Net (64x64, batch 16), pyfast against the same networks in torch CPU on the
same threads (the cases of ``pyfast bench models``; see pyfast/bench/models.py).

Under pytest-benchmark each case runs a few rounds at all cores only, so the file takes
about a minute or two. As a script it prints images/s side by side, the ratio to torch and,
for pyfast, the share of a step spent in each kernel family:

    python benchmarks/bench_models.py [--threads N ...] [--networks resnet18 ...] [--json PATH]

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
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)
    from pyfast._memory import keep_freed_memory
    keep_freed_memory()   # as `pyfast bench` does: both libraries reuse warm pages

    machine = bench.machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores, {machine.get('isa')}; torch "
          f"{machine['versions']['torch']}; {machine['date']}")
    cases = [c for c in models.cases(bench.Options(), args.networks)
             if isinstance(c, bench.Case)]
    rows = bench.run(cases, args.threads, budget_s=args.budget)
    print(f"\n{'network':<24} {'batch':>5} {'threads':>7} {'pyfast img/s':>12} "
          f"{'torch img/s':>11} {'pyfast/torch':>12} {'pyfast GFLOP/s':>14}")
    table = []
    for threads in args.threads:
        for network in models.NETWORKS:
            mine = [r for r in rows if r.op.startswith(network.name + " ")
                    and r.threads == threads and r.impl.startswith(bench.PYFAST_PREFIX)]
            theirs = [r for r in rows if r.op.startswith(network.name + " ")
                      and r.threads == threads and r.impl == "torch"]
            if not mine:
                continue
            r, t = mine[0], (theirs[0] if theirs else None)
            if r.error or (t and t.error):
                print(f"{network.name:<24} !! {r.error or t.error}")
                continue
            ours = network.batch / r.median_s
            torch_rate = network.batch / t.median_s if t else float("nan")
            table.append({"network": network.name, "batch": network.batch, "threads": threads,
                          "pyfast_images_per_s": ours, "torch_images_per_s": torch_rate,
                          "ratio": ours / torch_rate, "pyfast_gflops": r.rate,
                          "load_average": r.load_average})
            print(f"{network.name:<24} {network.batch:>5} {threads:>7} {ours:>12.1f} "
                  f"{torch_rate:>11.1f} {ours / torch_rate:>11.2f}x {r.rate:>14.1f}")
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
        bench.write_json_atomic(args.json, {"schema": "pyfast-bench-models/1",
                                            "machine": bench.machine_info(), "table": table,
                                            "profiles": profiles,
                                            "rows": [vars(r) for r in rows]})
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
