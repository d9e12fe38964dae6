"""pyfast.torch against plain torch (run it alone: ``python benchmarks/bench_torch.py``).

1. Per-call overhead of a custom operator in eager mode: a 64x64 float32 matmul through
   ``torch.ops.pyfast.matmul`` (torch.library define/impl + register_autograd, as
   registered) and through the same kernel registered with ``torch.library.custom_op``,
   minus the kernel's own time (``pyfast._C.matmul`` on NumPy arrays, output preallocated);
   no-op operators show what each registration costs alone.
2. ``pyfast.torch.cross_entropy`` forward + backward at 2048 x 32000 (float32) against
   ``torch.nn.functional.cross_entropy``; ``pyfast.torch.linear_cross_entropy`` at
   N=1024, D=512, V=16000 against F.linear + F.cross_entropy (the full-size case,
   N=4096, D=1024, V=32000, is benchmarks/bench_linear_xent.py's, on pf.ops).
3. One optimizer step on 10M float32 parameters (one tensor, and 100 tensors of mixed
   sizes): ``pyfast.torch.optim.Adam`` against ``torch.optim.Adam(fused=True)``.
4. A ResNet-18 (torchvision's architecture, 32x32 stem, written with torch.nn: torchvision
   from PyPI does not import beside this torch) training step at batch 64, SGD with momentum:
   plain torch against the same model after ``pyfast.torch.convert`` with
   ``pyfast.torch.optim.SGD`` and ``pyfast.torch.cross_entropy``; a profiled converted step
   gives the share of its time spent inside ``torch.ops.pyfast`` operators.

Each comparison alternates A and B over ``--rounds`` rounds, at 1 and 2 threads (pyfast and
torch alike); medians and minima are reported. Writes
benchmarks/results/torch-<date>.json and prints a table; the machine's load (``uptime``)
is recorded before and after.
"""

import argparse
import datetime
import json
import os
import subprocess
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = (1, 2)


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _per_call(fn, calls):
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _alternate(fns, rounds, calls=1):
    """{name: [seconds per call, one per round]}, the functions taking turns each round."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_per_call(fn, calls))
    return times


def _stats(samples):
    return {"median_s": float(np.median(samples)), "min_s": float(np.min(samples)),
            "samples_s": [float(s) for s in samples]}


# ---------------------------------------------------------------------------- 1. overhead

def bench_overhead(rounds, calls):
    import torch

    import pyfast.torch as pft
    from pyfast import _C
    from pyfast.torch import _ops

    torch.manual_seed(0)
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    an, bn, out = a.numpy(), b.numpy(), np.empty((64, 64), np.float32)

    lib = torch.library.Library("pyfast_bench", "DEF")

    @torch.library.custom_op("pyfast_bench::matmul", mutates_args=())
    def custom_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _ops._matmul_impl(_ops._cpu_view, a, b, False, False, None, None)
    custom_matmul.register_fake(lambda a, b: a.new_empty(a.shape[0], b.shape[1]))
    custom_matmul.register_autograd(lambda ctx, g: (g, g),
                                    setup_context=lambda ctx, inputs, output: None)

    @torch.library.custom_op("pyfast_bench::custom_noop", mutates_args=())
    def custom_noop(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)
    custom_noop.register_fake(lambda x: torch.empty_like(x))
    custom_noop.register_autograd(lambda ctx, g: g, setup_context=lambda ctx, inputs, output: None)
    lib.define("noop(Tensor x) -> Tensor")
    lib.impl("noop", lambda x: torch.empty_like(x), "CPU")
    torch.library.register_fake("pyfast_bench::noop", lambda x: torch.empty_like(x), lib=lib)
    torch.library.register_autograd("pyfast_bench::noop", lambda ctx, g: g,
                                    setup_context=lambda ctx, inputs, output: None, lib=lib)
    define_noop = torch.ops.pyfast_bench.noop.default
    matmul = torch.ops.pyfast.matmul.default
    fns = {
        "kernel (_C.matmul, numpy, out given)": lambda: _C.matmul(an, bn, out, None, False),
        "torch.ops.pyfast.matmul (define/impl)": lambda: matmul(a, b, False, False, None, None),
        "pyfast.torch.matmul": lambda: pft.matmul(a, b),
        "same kernel as custom_op": lambda: custom_matmul(a, b),
        "no-op, custom_op": lambda: custom_noop(a),
        "no-op, define/impl + register_autograd": lambda: define_noop(a),
        "torch.empty_like (floor of a no-op)": lambda: torch.empty_like(a),
        "torch.mm": lambda: torch.mm(a, b),
    }
    results = {}
    with _threads(1):
        times = _alternate(fns, rounds, calls)
    kernel = np.asarray(times["kernel (_C.matmul, numpy, out given)"])
    for name, samples in times.items():
        results[name] = _stats(samples)
    for name in ("torch.ops.pyfast.matmul (define/impl)", "pyfast.torch.matmul",
                 "same kernel as custom_op"):
        results[name]["overhead_median_us"] = float(np.median(np.asarray(times[name]) - kernel)
                                                    * 1e6)
        results[name]["overhead_min_us"] = float((np.min(times[name]) - np.min(kernel)) * 1e6)
    del lib
    return results


# -------------------------------------------------------------------- 2. cross-entropy

def bench_cross_entropy(rounds, n=2048, c=32000):
    import torch
    import torch.nn.functional as F

    import pyfast.torch as pft

    torch.manual_seed(1)
    x = torch.randn(n, c, requires_grad=True)
    t = torch.randint(0, c, (n,))

    def step(fn):
        def run():
            x.grad = None
            fn(x, t).backward()
        return run
    with torch.no_grad():
        ref = F.cross_entropy(x, t)
        assert torch.allclose(pft.cross_entropy(x, t), ref, rtol=1e-5, atol=1e-5)
    results = {}
    for threads in THREADS:
        with _threads(threads):
            times = _alternate({"torch": step(F.cross_entropy), "pyfast": step(pft.cross_entropy)},
                               rounds)
        results[f"{threads}t"] = _compare(times, "torch", "pyfast")
    return results


def _compare(times, base, ours):
    out = {name: _stats(s) for name, s in times.items()}
    out["speedup_median"] = out[base]["median_s"] / out[ours]["median_s"]
    out["speedup_min"] = out[base]["min_s"] / out[ours]["min_s"]
    return out


def bench_linear_cross_entropy(rounds, n=1024, d=512, v=16000):
    """pyfast.torch.linear_cross_entropy (fused, no (N, V) logits) against torch's
    F.linear + F.cross_entropy, forward + backward."""
    import torch
    import torch.nn.functional as F

    import pyfast.torch as pft

    torch.manual_seed(4)
    h = torch.randn(n, d, requires_grad=True)
    w = (torch.randn(v, d) * d ** -0.5).requires_grad_()
    t = torch.randint(0, v, (n,))

    def step(fn):
        def run():
            h.grad = w.grad = None
            fn().backward()
        return run
    fns = {"torch linear + cross_entropy": step(lambda: F.cross_entropy(F.linear(h, w), t)),
           "pyfast": step(lambda: pft.linear_cross_entropy(h, w, t))}
    with torch.no_grad():
        assert torch.allclose(pft.linear_cross_entropy(h, w, t),
                              F.cross_entropy(F.linear(h, w), t), rtol=1e-4, atol=1e-4)
    results = {}
    for threads in THREADS:
        with _threads(threads):
            times = _alternate(fns, rounds)
        results[f"{threads}t"] = _compare(times, "torch linear + cross_entropy", "pyfast")
    return results


# ---------------------------------------------------------------------------- 3. Adam

def bench_adam(rounds, total=10_000_000):
    import torch

    import pyfast.torch as pft

    sizes = {"1 tensor": [total],
             "100 tensors": [int(s) + 1 for s in np.random.default_rng(100).dirichlet(
                 np.ones(100) * 0.5) * total]}
    results = {}
    for label, shape in sizes.items():
        g = torch.Generator().manual_seed(2)
        grads = [torch.randn(s, generator=g) for s in shape]
        opts = {}
        for name, make in (("torch fused", lambda p: torch.optim.Adam(p, lr=1e-3, fused=True)),
                           ("pyfast", lambda p: pft.optim.Adam(p, lr=1e-3))):
            params = [torch.zeros(s, requires_grad=True) for s in shape]
            for p, gr in zip(params, grads):
                p.grad = gr
            opts[name] = make(params)
        for threads in THREADS:
            with _threads(threads):
                times = _alternate({k: o.step for k, o in opts.items()}, rounds, calls=3)
            results[f"{label} {threads}t"] = _compare(times, "torch fused", "pyfast")
        p1 = opts["torch fused"].param_groups[0]["params"]
        p2 = opts["pyfast"].param_groups[0]["params"]
        steps = [opts[k].state[p[0]]["step"].item() for k, p in (("torch fused", p1),
                                                                  ("pyfast", p2))]
        assert steps[0] == steps[1]
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(p1, p2))
    return results


# --------------------------------------------------------------------------- 4. ResNet-18

def _busy_share(prof, wall):
    """Seconds inside torch.ops.pyfast operators (union of their intervals) over ``wall``."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.name.startswith("pyfast::"))
    busy, end = 0.0, -1.0
    for s, e in spans:
        if s > end:
            busy += e - s
            end = e
        elif e > end:
            busy += e - end
            end = e
    return busy * 1e-6 / wall


def bench_resnet(rounds, batch=64):
    import copy

    import torch
    import torch.nn.functional as F

    import pyfast.torch as pft
    from pyfast.bench._torch_models import resnet

    torch.manual_seed(3)
    ref = resnet(18, num_classes=10, small_input=True)
    conv = pft.convert(copy.deepcopy(ref))
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    setups = {"torch": (ref, torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9),
                        F.cross_entropy),
              "pyfast.torch": (conv, pft.optim.SGD(conv.parameters(), lr=0.01, momentum=0.9),
                               pft.cross_entropy)}

    def step(model, opt, loss_fn):
        def run():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        return run
    fns = {k: step(*v) for k, v in setups.items()}
    results = {}
    for threads in THREADS:
        with _threads(threads):
            times = _alternate(fns, rounds)
            res = _compare(times, "torch", "pyfast.torch")
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                fns["pyfast.torch"]()
                wall = time.perf_counter() - start
            res["pyfast_op_share_of_step"] = _busy_share(prof, wall)
        results[f"{threads}t"] = res
    return results


class _threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch

        from pyfast import bench
        torch.set_num_threads(self.n)  # limit_threads only touches torch when imported
        self._ctx = bench.limit_threads(self.n)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=["overhead", "cross_entropy",
                                                      "linear_cross_entropy", "adam",
                                                      "resnet"])
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/"
                                                    "torch-<date>.json)")
    args = parser.parse_args()
    import torch
    date = datetime.date.today().isoformat()
    record = {"date": date, "torch": torch.__version__, "load_before": _uptime(),
              "cpu": subprocess.run("lscpu | grep 'Model name'", shell=True,
                                    capture_output=True, text=True).stdout.strip(),
              "rounds": args.rounds}
    benches = {"overhead": lambda: bench_overhead(args.rounds, 2000),
               "cross_entropy": lambda: bench_cross_entropy(args.rounds),
               "linear_cross_entropy": lambda: bench_linear_cross_entropy(args.rounds),
               "adam": lambda: bench_adam(args.rounds),
               "resnet": lambda: bench_resnet(args.rounds)}
    for name in args.only:
        record[name] = benches[name]()
        print(f"== {name}")
        _print(record[name])
    record["load_after"] = _uptime()
    path = args.out or os.path.join(HERE, "results", f"torch-{date}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(record["load_before"], "|", record["load_after"])
    print("wrote", path)


def _print(section):
    for key, value in section.items():
        if "median_s" in value:
            extra = "".join(f" {k}={v:.1f}" for k, v in value.items() if k.endswith("_us"))
            print(f"  {key:45s} median {value['median_s'] * 1e6:10.1f} us  min "
                  f"{value['min_s'] * 1e6:10.1f} us{extra}")
            continue
        share = value.get("pyfast_op_share_of_step")
        print(f"  {key}: speedup median {value['speedup_median']:.2f}x, min "
              f"{value['speedup_min']:.2f}x"
              + ("" if share is None else f", pyfast ops {share:.0%} of the step"))
        for name, v in value.items():
            if isinstance(v, dict):
                print(f"      {name:20s} median {v['median_s'] * 1e3:9.2f} ms  min "
                      f"{v['min_s'] * 1e3:9.2f} ms")


if __name__ == "__main__":
    main()
