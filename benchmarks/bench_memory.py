"""Minor page faults and images/s of a steady-state training step with pyfast's caching
allocator on and off, in plain library use (no glibc tuning, as a user's script runs it).

One process per run; the allocator is switched step by step (pyfast._alloc.set_enabled),
so "on" and "off" steps alternate and the shared machine's load falls on both alike. Each
network (built as pyfast/bench/models.py builds it: SGD momentum, batch of random data) gets
--warmup steps per variant, then --rounds rounds of one step per variant, each measured by
its ru_minflt delta (minor page faults) and wall time.

    python benchmarks/bench_memory.py [--networks resnet18 densenet121] [--rounds 6]
                                      [--warmup 2] [--json PATH]

PYFAST_ALLOCATOR=0 in the environment turns the allocator off for a whole process instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import pyfast as pf
from pyfast import _memory
from pyfast.bench import models


def _faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run_network(name, rounds, warmup):
    network = next(n for n in models.NETWORKS if n.name == name)
    step = models.pyfast_step(models.Problem(network))
    variants = {"on": True, "off": False}
    for on in variants.values():
        _memory.native.set_enabled(on)
        for _ in range(warmup):
            step()
    faults = {v: [] for v in variants}
    seconds = {v: [] for v in variants}
    held = []
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for v in order:
            _memory.native.set_enabled(variants[v])
            f0, t0 = _faults(), time.perf_counter()
            step()
            seconds[v].append(time.perf_counter() - t0)
            faults[v].append(_faults() - f0)
        held.append(pf.memory.stats()["held"])
    _memory.native.set_enabled(True)
    rows = []
    for v in variants:
        rows.append({"network": name, "batch": network.batch, "variant": v,
                     "faults_per_step_median": statistics.median(faults[v]),
                     "faults_per_step_min": min(faults[v]),
                     "images_per_s_median": network.batch / statistics.median(seconds[v]),
                     "images_per_s_best": network.batch / min(seconds[v]),
                     "faults": faults[v], "seconds": seconds[v]})
    return rows, held


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=["resnet18", "densenet121"],
                        choices=[n.name for n in models.NETWORKS])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if _memory.native is None:
        print("the caching allocator is off (PYFAST_ALLOCATOR=0) or not built", file=sys.stderr)
        return 1
    print(f"{pf.get_num_threads()} threads; steady-state step after {args.warmup} warm-up "
          f"steps per variant, {args.rounds} rounds alternating on/off")
    print(f"{'network':<12} {'batch':>5} {'allocator':>9} {'faults/step med':>15} {'min':>6} "
          f"{'img/s med':>9} {'img/s best':>10}")
    table, loads = [], []
    for name in args.networks:
        rows, held = run_network(name, args.rounds, args.warmup)
        loads.append(os.getloadavg()[0])
        for row in rows:
            print(f"{name:<12} {row['batch']:>5} {row['variant']:>9} "
                  f"{row['faults_per_step_median']:>15.0f} {row['faults_per_step_min']:>6} "
                  f"{row['images_per_s_median']:>9.2f} {row['images_per_s_best']:>10.2f}")
        print(f"{'':<12} held by the allocator after each round (MB): "
              f"{' '.join(f'{h / 1e6:.0f}' for h in held)}")
        table += rows
        pf.memory.empty_cache()
    print(f"load average after each network: {' '.join(f'{x:.1f}' for x in loads)} "
          f"(a shared machine: compare rows of one run only)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "pyfast-bench-memory/1", "threads": pf.get_num_threads(),
                       "loads": loads, "table": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
