"""linear_cross_entropy: time and peak extra memory of the fused classifier + cross-entropy
(forward and backward) against torch's F.linear + F.cross_entropy + backward and against
pyfast's unfused pair (pf.ops.matmul, softmax_cross_entropy in place, two matmuls and a sum
for the gradients), float32.

Memory is the process's resident high-water mark (VmHWM, reset through
/proc/self/clear_refs before the timed call), so C++ and torch allocations count too;
"extra" is that peak minus the resident size before the call minus the gradients every
variant returns (dh, dw, db), i.e. what a variant holds beyond its inputs and outputs.
Each measurement runs in a fresh subprocess; variants are interleaved round by round.

    env -u OPENBLAS_CORETYPE PYTHONPATH=$PWD python benchmarks/bench_linear_xent.py \\
        [--n 4096 --d 1024 --v 32000 --rounds 3 --threads 2]

Under pytest (``pytest benchmarks/bench_linear_xent.py --benchmark-only``) a small shape
is timed with pytest-benchmark, each variant checked against the float64 reference first.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

VARIANTS = ("pyfast_fused", "pyfast_unfused", "torch")
SMALL = (512, 256, 4000)


def inputs(n, d, v, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32) * np.float32(1 / np.sqrt(d))
    b = rng.standard_normal(v, dtype=np.float32) * np.float32(0.1)
    y = rng.integers(0, v, n)
    return h, w, b, y


def make_step(variant, h, w, b, y):
    """A function running one forward + backward and returning (loss, dh, dw, db)."""
    if variant == "pyfast_fused":
        import pyfast as pf
        return lambda: pf.ops.linear_cross_entropy(h, w, y, b)
    if variant == "pyfast_unfused":
        import pyfast as pf

        def step():
            z = pf.ops.matmul(h, w, trans_b=True, bias=b)
            loss, dz = pf.ops.softmax_cross_entropy(z, y, inplace=True)
            dh = pf.ops.matmul(dz, w)
            dw = pf.ops.matmul(dz, h, trans_a=True)
            return loss, dh, dw, dz.sum(axis=0)
        return step
    import torch
    F = torch.nn.functional
    th, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (h, w, b))
    ty = torch.from_numpy(y)

    def step():
        th.grad = tw.grad = tb.grad = None
        loss = F.cross_entropy(F.linear(th, tw, tb), ty)
        loss.backward()
        return loss.detach(), th.grad, tw.grad, tb.grad
    return step


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(variant, n, d, v, threads, repeats):
    """In this process: warm up, then one call under a reset high-water mark, then timed
    repeats. Returns a dict of times (s) and memory (bytes)."""
    import pyfast as pf
    pf.set_num_threads(threads)
    if variant == "torch":
        import torch
        torch.set_num_threads(threads)
    h, w, b, y = inputs(n, d, v)
    step = make_step(variant, h, w, b, y)
    out = step()  # warm-up: first-touch of the kernels' scratch, torch's allocator
    out = None
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    t0 = time.perf_counter()
    out = step()
    first = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    grads = sum(int(np.asarray(g).nbytes) for g in out[1:])
    loss = float(out[0])
    out = None
    times = [first]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t0)
        out = None
    logits = n * v * 4
    return dict(variant=variant, threads=threads, times=times, loss=loss, peak_rss=peak,
                rss_before=before, grads=grads, extra=peak - before - grads,
                extra_frac_of_logits=(peak - before - grads) / logits)


def interleaved(a):
    import pyfast as pf
    h, w, b, y = inputs(a.n, a.d, a.v)
    for threads in a.threads:
        pf.set_num_threads(threads)
        if "torch" in a.variants:
            import torch
            torch.set_num_threads(threads)
        steps = {v: make_step(v, h, w, b, y) for v in a.variants}
        for step in steps.values():
            step()
        times = {v: [] for v in steps}
        for _ in range(a.repeats):
            for v, step in steps.items():
                t0 = time.perf_counter()
                step()
                times[v].append(time.perf_counter() - t0)
        ref = statistics.median(times["torch"]) if "torch" in times else None
        print(f"N={a.n} D={a.d} V={a.v} float32, {threads} threads, {a.repeats} interleaved rounds")
        for v, ts in times.items():
            med = statistics.median(ts)
            print(f"  {v:15s} median {med:.3f} s  min {min(ts):.3f} s"
                  + (f"  torch/this {ref / med:.2f}x" if ref else ""), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--v", type=int, default=32000)
    p.add_argument("--rounds", type=int, default=3, help="subprocesses per variant")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per subprocess")
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--json", help="write the results here")
    p.add_argument("--interleaved", action="store_true",
                   help="time only: every variant in this one process, alternating call by "
                        "call, --repeats rounds (the fairest ratio on a loaded machine)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(a.one, a.n, a.d, a.v, a.threads[0], a.repeats)))
        return
    if a.interleaved:
        interleaved(a)
        return
    results = []
    for threads in a.threads:
        for r in range(a.rounds):
            for variant in a.variants:
                cmd = [sys.executable, __file__, "--one", variant, "--n", str(a.n), "--d",
                       str(a.d), "--v", str(a.v), "--threads", str(threads), "--repeats",
                       str(a.repeats)]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                text=True).stdout.strip().splitlines()[-1])
                results.append(res)
                print(f"round {r} {variant:15s} {threads}t  times {['%.2f' % t for t in res['times']]}"
                      f"  extra {res['extra'] / 2**20:7.1f} MiB"
                      f" ({100 * res['extra_frac_of_logits']:.1f}% of logits)  loss {res['loss']:.5f}",
                      flush=True)
    logits_mib = a.n * a.v * 4 / 2**20
    print(f"\nN={a.n} D={a.d} V={a.v} float32, logits {logits_mib:.0f} MiB")
    print("| variant | threads | median s | min s | vs torch (median) | peak extra MiB (max) | % of logits |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for threads in a.threads:
        rows = {}
        for variant in a.variants:
            rs = [r for r in results if r["variant"] == variant and r["threads"] == threads]
            ts = [t for r in rs for t in r["times"]]
            rows[variant] = (statistics.median(ts), min(ts), max(r["extra"] for r in rs))
        ref = rows.get("torch", (None,))[0]
        for variant, (med, mn, extra) in rows.items():
            ratio = f"{med / ref:.2f}x" if ref else "-"
            print(f"| {variant} | {threads} | {med:.2f} | {mn:.2f} | {ratio} | "
                  f"{extra / 2**20:.1f} | {100 * extra / (a.n * a.v * 4):.1f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(n=a.n, d=a.d, v=a.v, results=results), f, indent=1)


if __name__ == "__main__":
    main()
else:
    import pytest

    @pytest.mark.parametrize("variant", VARIANTS)
    def test_linear_xent(benchmark, variant):
        if variant == "torch":
            pytest.importorskip("torch")
        import pyfast as pf
        n, d, v = SMALL
        h, w, b, y = inputs(n, d, v)
        ref = pf.ops.linear_cross_entropy(h.astype(np.float64), w.astype(np.float64), y,
                                          b.astype(np.float64), backend="reference")
        step = make_step(variant, h, w, b, y)
        got = step()
        for g, e in zip(got, ref):
            np.testing.assert_allclose(np.asarray(g), e, rtol=2e-3, atol=2e-5)
        benchmark.group = f"linear_xent fwd+bwd {n}x{d}x{v} cpu"
        benchmark.extra_info.update(impl=variant, work=3 * 2 * n * d * v, unit="flop")
        benchmark(step)
