"""Minor page faults and images/s of a steady-state training step with pyfast's caching
allocator on and off (PYFAST_ALLOCATOR=1/0), in plain library use: no glibc tuning, as a
user's script runs it. The variant "off+mallopt" adds pyfast._memory.keep_freed_memory(), the
process-wide glibc tuning pyfast's own commands apply.

The allocator's setting is read at import, so each (network, variant) runs in a process of
its own, as a user's would; the variants alternate within a round (in reversed order every
other round) so the shared machine's load falls on all of them alike. Each process builds
the network as pyfast/bench/models.py does (SGD momentum, a batch of random data), runs
--warmup steps, then --steps steps, each measured by its ru_minflt delta (minor page
faults) and wall time.

    python benchmarks/bench_memory.py [--networks resnet18 densenet121] [--rounds 2]
                                      [--steps 3] [--warmup 2] [--variants on off]
                                      [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = {"on": {"PYFAST_ALLOCATOR": "1"}, "off": {"PYFAST_ALLOCATOR": "0"},
            "off+mallopt": {"PYFAST_ALLOCATOR": "0", "_BENCH_MEMORY_MALLOPT": "1"}}
NETWORKS = ("resnet18", "densenet121", "unet")


def _faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(name, steps, warmup):
    """In this process: faults and seconds of each of `steps` steps after `warmup`."""
    if os.environ.get("_BENCH_MEMORY_MALLOPT") == "1":
        from pyfast._memory import keep_freed_memory
        keep_freed_memory()
    import pyfast as pf
    from pyfast.bench import models
    network = next(n for n in models.NETWORKS if n.name == name)
    step = models.pyfast_step(models.Problem(network))
    for _ in range(warmup):
        step()
    faults, seconds, held = [], [], []
    for _ in range(steps):
        f0, t0 = _faults(), time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
        faults.append(_faults() - f0)
        held.append(pf.memory.stats()["held"])
    return {"network": name, "batch": network.batch, "threads": pf.get_num_threads(),
            "allocator": pf.memory.enabled(), "faults": faults, "seconds": seconds,
            "held": held}


def _child(name, variant, steps, warmup):
    env = dict(os.environ, **VARIANTS[variant])
    env.pop("OPENBLAS_CORETYPE", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                           "--steps", str(steps), "--warmup", str(warmup)],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=["resnet18", "densenet121"],
                        choices=NETWORKS)
    parser.add_argument("--variants", nargs="+", default=["on", "off"], choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--child", metavar="NETWORK", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.warmup)))
        return 0

    runs = {(n, v): [] for n in args.networks for v in args.variants}
    loads = []
    for r in range(args.rounds):
        for name in args.networks:
            order = args.variants if r % 2 == 0 else args.variants[::-1]
            for variant in order:
                runs[name, variant].append(_child(name, variant, args.steps, args.warmup))
                loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    threads = runs[args.networks[0], args.variants[0]][0]["threads"]
    print(f"{threads} threads; per process {args.warmup} warm-up steps, then {args.steps} "
          f"measured; {args.rounds} processes per row, variants alternating")
    print(f"{'network':<12} {'batch':>5} {'variant':<12} {'faults/step med':>15} {'min':>7} "
          f"{'img/s med':>9} {'img/s best':>10} {'held MB':>8}")
    table = []
    for name in args.networks:
        for variant in args.variants:
            done = runs[name, variant]
            faults = [f for d in done for f in d["faults"]]
            seconds = [s for d in done for s in d["seconds"]]
            batch = done[0]["batch"]
            row = {"network": name, "batch": batch, "variant": variant,
                   "faults_per_step_median": statistics.median(faults),
                   "faults_per_step_min": min(faults),
                   "images_per_s_median": batch / statistics.median(seconds),
                   "images_per_s_best": batch / min(seconds), "runs": done}
            table.append(row)
            print(f"{name:<12} {batch:>5} {variant:<12} {row['faults_per_step_median']:>15.0f} "
                  f"{row['faults_per_step_min']:>7} {row['images_per_s_median']:>9.2f} "
                  f"{row['images_per_s_best']:>10.2f} {done[-1]['held'][-1] / 1e6:>8.0f}")
    print(f"load average {min(loads):.1f}-{max(loads):.1f} over the run (a shared machine: "
          f"compare rows of one run only)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "pyfast-bench-memory/1", "loads": loads, "table": table}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
