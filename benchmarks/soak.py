"""Soak: train ResNet-18 (32x32 input) for many steps and watch the process's resident
memory and the step time. A leak shows as RSS growing after warm-up; fragmentation or a
cache that never stops growing as a rising slope; anything that slows with age (a tape
kept alive, buffers re-packed every step) as step-time drift.

    python benchmarks/soak.py                      # 1000 steps, batch 64
    python benchmarks/soak.py --steps 200 --batch 16 --json soak.json

Every ``--every`` steps it records RSS (from /proc/self/statm), pf.memory.stats() and the
median step time of the window. At the end it prints the RSS slope after warm-up (MB per
100 steps, least squares) and the step-time drift (median of the last window over the
first window after warm-up, minus 1). Targets (issue 18): slope ~0, drift < 5%.
A benchmark, not a test: on a shared machine the step times are noisy, so read the drift
together with the per-window figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import pyfast as pf
from pyfast.nn import functional as F


def rss_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slope_per_100(steps, values):
    if len(steps) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(steps, float), np.asarray(values, float), 1)[0] * 100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--every", type=int, default=50, help="steps per record")
    parser.add_argument("--warmup", type=int, default=None,
                        help="steps left out of the slope and drift (default: a fifth, >= 1 record)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.steps < 2 * args.every:
        parser.error("--steps must cover at least two records (2 * --every)")
    warmup = args.warmup if args.warmup is not None else max(args.every, args.steps // 5)
    if args.threads:
        pf.set_num_threads(args.threads)

    pf.manual_seed(0)
    rng = np.random.default_rng(0)
    model = pf.models.resnet18(num_classes=10, small_input=True)
    model.train()
    optimizer = pf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    # a few distinct batches cycled, so every step sees new values but no data pipeline cost
    batches = [(rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32),
                rng.integers(0, 10, args.batch)) for _ in range(4)]

    records, window, losses = [], [], []
    start = time.perf_counter()
    with pf.use_backend(args.backend) if args.backend else _nothing():
        for step in range(1, args.steps + 1):
            x, y = batches[step % len(batches)]
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            value = loss.item()
            window.append(time.perf_counter() - t0)
            if not np.isfinite(value):
                raise SystemExit(f"step {step}: the loss is {value}")
            if step % args.every == 0:
                rec = dict(step=step, rss_mb=rss_mb(), step_s=float(np.median(window)),
                           step_s_min=float(np.min(window)), loss=value)
                stats = getattr(getattr(pf, "memory", None), "stats", None)
                if stats is not None:
                    rec.update({f"pool_{k}_mb": v / 2**20 for k, v in stats().items()})
                records.append(rec)
                window = []
                print(f"step {step:5d}  rss {rec['rss_mb']:8.1f} MB  step {rec['step_s'] * 1e3:7.1f} ms"
                      f" (min {rec['step_s_min'] * 1e3:.1f})  loss {value:.4f}", flush=True)
    total = time.perf_counter() - start

    after = [r for r in records if r["step"] > warmup]
    rss_slope = slope_per_100([r["step"] for r in after], [r["rss_mb"] for r in after])
    drift = after[-1]["step_s"] / after[0]["step_s"] - 1 if len(after) >= 2 else float("nan")
    drift_min = after[-1]["step_s_min"] / after[0]["step_s_min"] - 1 if len(after) >= 2 \
        else float("nan")
    time_slope = slope_per_100([r["step"] for r in after], [r["step_s"] for r in after])
    summary = dict(
        steps=args.steps, batch=args.batch, every=args.every, warmup=warmup,
        threads=pf.get_num_threads(), backend=args.backend, seconds=total,
        rss_first_mb=records[0]["rss_mb"], rss_after_warmup_mb=after[0]["rss_mb"],
        rss_last_mb=records[-1]["rss_mb"], rss_slope_mb_per_100_steps=rss_slope,
        step_time_drift=drift, step_time_min_drift=drift_min,
        step_time_slope_ms_per_100_steps=time_slope * 1e3,
        cpu=cpu_name(), python=sys.version.split()[0],
        records=records)
    print(f"\nafter warm-up ({warmup} steps): RSS {after[0]['rss_mb']:.1f} -> "
          f"{records[-1]['rss_mb']:.1f} MB, slope {rss_slope:+.2f} MB per 100 steps; "
          f"step time drift {drift * 100:+.1f}% (window minima {drift_min * 100:+.1f}%), "
          f"slope {time_slope * 1e3:+.2f} ms per 100 steps; {total:.0f} s in all")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, args.json)
    return summary


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
