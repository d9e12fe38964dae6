"""pyfast.jax inside jitted JAX programs against the jax.numpy / jax.lax equivalents, on 1
and 2 threads, and against the same pf.ops call outside JAX (which shows whether pyfast's
OpenMP team and XLA's own CPU thread pool oversubscribe the cores: XLA's threads wait while
a host callback runs, so the time inside jit should be the bare kernel's plus the copy of
the result into XLA's buffer).

1 thread: XLA_FLAGS=--xla_cpu_multi_thread_eigen=false and pf.set_num_threads(1).
(Pinning the process to one core with taskset instead made this script hang in
block_until_ready, every thread idle on a futex, XLA then running one pool thread; a
jitted 64x64 pfj.matmul under taskset ran fine; the cause is not isolated.) 2 threads:
both libraries on their defaults over both cores. Each thread count runs in its own
subprocess; inside it the variants are interleaved and the median and min of the repeats
reported.

    env -u OPENBLAS_CORETYPE PYTHONPATH=$PWD python benchmarks/bench_jax.py [--repeats 7]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def cases(jax, jnp, pf, pfj, rng):
    f32 = np.float32
    a, b = (rng.standard_normal((1024, 1024), dtype=f32) for _ in range(2))
    x = rng.standard_normal((16, 64, 56, 56), dtype=f32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=f32) * f32(0.05)
    z = rng.standard_normal((2048, 32000), dtype=f32)
    y = rng.integers(0, 32000, 2048)
    h = rng.standard_normal((512, 256), dtype=f32)
    wv = rng.standard_normal((8000, 256), dtype=f32) * f32(0.06)
    yv = rng.integers(0, 8000, 512)

    def jnp_ce(logits, labels):
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

    def conv_ref(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return [
        ("matmul 1024^3", (a, b), lambda a, b: pfj.matmul(a, b), lambda a, b: a @ b,
         lambda: pf.ops.matmul(a, b)),
        ("conv2d 16x64x56x56 k3", (x, w), lambda x, w: pfj.conv2d(x, w, padding=1), conv_ref,
         lambda: pf.ops.conv2d(x, w, padding=1)),
        ("cross_entropy fwd+bwd 2048x32000", (z, y),
         jax.value_and_grad(lambda z, y: pfj.softmax_cross_entropy(z, y)),
         jax.value_and_grad(jnp_ce), lambda: pf.ops.softmax_cross_entropy(z, y)),
        ("linear_cross_entropy fwd+bwd 512x256x8000", (h, wv, yv),
         jax.value_and_grad(lambda h, w, y: pfj.linear_cross_entropy(h, w, y), argnums=(0, 1)),
         jax.value_and_grad(lambda h, w, y: jnp_ce(h @ w.T, y), argnums=(0, 1)),
         lambda: pf.ops.linear_cross_entropy(h, wv, yv)),
        ("callback overhead: matmul 8x8", (a[:8, :8], b[:8, :8]),
         lambda a, b: pfj.matmul(a, b), lambda a, b: a @ b,
         lambda: pf.ops.matmul(a[:8, :8], b[:8, :8])),
    ]


def run_one(threads, repeats):
    import jax
    import jax.numpy as jnp

    import pyfast as pf
    import pyfast.jax as pfj
    pf.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out = []
    for name, args, ours, theirs, bare in cases(jax, jnp, pf, pfj, rng):
        args = tuple(jnp.asarray(v) for v in args)
        fns = {"pyfast.jax (jit)": jax.jit(ours), "jax (jit)": jax.jit(theirs)}
        for fn in fns.values():
            jax.block_until_ready(fn(*args))
        bare()
        inner = 200 if "overhead" in name else 1
        times = {k: [] for k in list(fns) + ["pf.ops outside jax"]}
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                for _ in range(inner):
                    jax.block_until_ready(fn(*args))
                times[k].append((time.perf_counter() - t0) / inner)
            t0 = time.perf_counter()
            for _ in range(inner):
                bare()
            times["pf.ops outside jax"].append((time.perf_counter() - t0) / inner)
        out.append(dict(case=name, threads=threads,
                        median={k: statistics.median(v) for k, v in times.items()},
                        min={k: min(v) for k, v in times.items()}))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json")
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.repeats)))
        return
    results = []
    for threads in (1, 2):
        env = dict(os.environ)
        cmd = [sys.executable, __file__, "--one", str(threads), "--repeats", str(a.repeats)]
        if threads == 1:  # XLA's ops single-threaded, pyfast's team of one
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                                " --xla_cpu_multi_thread_eigen=false").strip()
        res = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        results += json.loads(res.stdout.strip().splitlines()[-1])
    print("| case | threads | pyfast.jax in jit ms (min) | jax ms (min) | jax / pyfast.jax | "
          "pf.ops outside jax ms (min) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        m, n = r["median"], r["min"]
        ours, theirs, bare = m["pyfast.jax (jit)"], m["jax (jit)"], m["pf.ops outside jax"]
        scale = 1e6 if "overhead" in r["case"] else 1e3
        unit = "us" if scale == 1e6 else "ms"
        print(f"| {r['case']} | {r['threads']} | {ours * scale:.3f} ({n['pyfast.jax (jit)'] * scale:.3f}) {unit} | "
              f"{theirs * scale:.3f} ({n['jax (jit)'] * scale:.3f}) | {theirs / ours:.2f}x | "
              f"{bare * scale:.3f} ({n['pf.ops outside jax'] * scale:.3f}) |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
