"""The layer API's cost on top of the kernels: per-call overhead and time outside kernels.

Two measurements, each side by side with a competitor in the same process:

1. Python overhead per layer call, in microseconds: a tiny Linear / ReLU / BatchNorm2d layer
   call (autograd recording on, and under no_grad) against the pf.ops call it makes and
   against the bare backend kernel; also forward+backward of a tiny Linear.
2. One training step (forward + backward) of a ResNet basic block (conv3x3-bn-relu-conv3x3-bn
   + identity, relu; 64 channels, 32x32, batch 32): total time, time inside backend kernels
   and inside pf.ops calls (a timing wrapper around ``backends.select``'s namespaces and
   around the pf.ops functions the layers call), so the share spent outside kernels is
   total - kernels. The same block in torch CPU on the same thread count for reference.

3. Per block of the three networks (ResNet-18 BasicBlock at layer1 and layer3 sizes,
   DenseNet-121 denseblock1 + transition1, U-Net's last double conv), one training step
   split by where it runs (``StepClock``): every autograd Function's forward/backward and
   every backend kernel call is wrapped with a timer, so a step's time divides into
   conv/GEMM kernel time (the micro-kernels, with the packing that runs inside them),
   norm / elementwise / pool kernel time, Function glue (checks, layout copies, NumPy
   concatenate and slicing, allocations) and the tape (module calls, the backward walk,
   gradient accumulation). "Outside micro-kernels" = 1 - conv/GEMM kernel time / step.
   Run one tree against another with ``PYTHONPATH=<tree> python benchmarks/bench_layers.py
   --blocks-only`` (the blocks are built from that tree's pf.models).
4. ``--models-ab BASE_TREE``: pf.models training steps (ResNet-18, DenseNet-121, U-Net at
   the sizes of ``pyfast bench models``) of another checkout against this one, one process
   per measurement, alternating which goes first each round, with torch NCHW and
   channels_last in the same rounds.

Run as a script for the table (``python benchmarks/bench_layers.py [--json PATH]
[--threads N ...] [--quick]``) or under pytest-benchmark with the other benchmarks. Timings
are medians of repeated runs; the machine may be shared, so compare figures of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import pyfast as pf
from pyfast import nn
from pyfast.nn import functional as F

BLOCK = dict(batch=32, channels=64, size=32)


# ---------------------------------------------------------------------------- timing

def median_time(fn, repeat=7, min_time=0.05):
    """Median seconds per call of ``fn`` over ``repeat`` samples of at least ``min_time``."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(min_time / once))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples)


class KernelClock:
    """Accumulates the time spent inside backend kernels and inside pf.ops functions.

    Backend kernels are timed by wrapping the namespaces ``backends.select`` hands to
    pf.ops; pf.ops functions by wrapping the module attributes the layers call (nested ops
    calls, e.g. conv_transpose2d_backward -> conv2d, are counted once)."""

    def __init__(self):
        self.kernel_s = 0.0
        self.ops_s = 0.0
        self.kernel_calls = 0
        self.ops_calls = 0
        self._depth = 0

    @contextlib.contextmanager
    def installed(self):
        backends = pf.backends
        real_select = backends.select
        clock = self

        class Timed:
            def __init__(self, ns):
                self._ns = ns

            def __getattr__(self, name):
                fn = getattr(self._ns, name)
                if not callable(fn):
                    return fn

                def timed(*args, **kwargs):
                    t0 = time.perf_counter()
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        clock.kernel_s += time.perf_counter() - t0
                        clock.kernel_calls += 1
                return timed

        def select(family, device, backend=None):
            name, ns = real_select(family, device, backend)
            return name, Timed(ns)

        originals = {name: getattr(pf.ops, name) for name in pf.ops.__all__}

        def wrap(fn):
            def timed(*args, **kwargs):
                clock._depth += 1
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    clock._depth -= 1
                    if clock._depth == 0:
                        clock.ops_s += time.perf_counter() - t0
                        clock.ops_calls += 1
            return timed

        backends.select = select
        for name, fn in originals.items():
            setattr(pf.ops, name, wrap(fn))
        try:
            yield self
        finally:
            backends.select = real_select
            for name, fn in originals.items():
                setattr(pf.ops, name, fn)


# ---------------------------------------------------------------------------- overhead

def layer_overhead():
    """Rows (what, layer call us, pf.ops call us, kernel call us, overhead us)."""
    rng = np.random.default_rng(0)
    rows = []

    def add(what, layer_call, ops_call, kernel_call):
        t_layer, t_ops, t_kernel = (median_time(f) * 1e6 for f in (layer_call, ops_call,
                                                                  kernel_call))
        rows.append(dict(what=what, layer_us=t_layer, ops_us=t_ops, kernel_us=t_kernel,
                         overhead_us=t_layer - t_kernel))

    native = pf.backends.select("gemm", "cpu")[1]
    elementwise = pf.backends.select("elementwise", "cpu")[1]
    norm = pf.backends.select("norm", "cpu")[1]

    lin = nn.Linear(16, 16)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    xt = pf.tensor(x)
    w, b = lin.weight.data, lin.bias.data
    out = np.empty((4, 16), np.float32)
    add("Linear(16,16), batch 4, recording", lambda: lin(xt),
        lambda: pf.ops.matmul(x, w, trans_b=True, bias=b),
        lambda: native.matmul(x, w.T, out, b, False))
    with pf.no_grad():
        add("Linear(16,16), batch 4, no_grad", lambda: lin(xt),
            lambda: pf.ops.matmul(x, w, trans_b=True, bias=b),
            lambda: native.matmul(x, w.T, out, b, False))

    relu = nn.ReLU()
    xr = pf.tensor(rng.standard_normal((4, 16)).astype(np.float32), requires_grad=True)
    add("ReLU, 4x16, recording", lambda: relu(xr), lambda: pf.ops.relu(xr.data),
        lambda: elementwise.relu(xr.data, out))

    bn = nn.BatchNorm2d(8)
    xb = pf.tensor(rng.standard_normal((4, 8, 4, 4)).astype(np.float32))
    y = np.empty((4, 8, 16), np.float32)
    m, s = np.empty(8, np.float32), np.empty(8, np.float32)
    x3 = xb.data.reshape(4, 8, 16)
    add("BatchNorm2d(8), 4x8x4x4, train", lambda: bn(xb),
        lambda: pf.ops.batch_norm(xb.data, bn.weight.data, bn.bias.data, bn.running_mean.data,
                                  bn.running_var.data, training=True),
        lambda: norm.batch_norm(x3, bn.weight.data, bn.bias.data, bn.running_mean.data,
                                bn.running_var.data, y, m, s, True, 0.1, 1e-5))

    g = np.ones((4, 16), np.float32)
    gx, gw = np.empty((4, 16), np.float32), np.empty((16, 16), np.float32)
    xg = pf.tensor(x, requires_grad=True)

    def step():
        lin.weight.grad = None
        lin.bias.grad = None
        xg.grad = None
        lin(xg).backward(g)

    def ops_calls():  # the three GEMMs of forward and backward, bias grad by numpy
        pf.ops.matmul(x, w, trans_b=True, bias=b)
        pf.ops.matmul(g, w)
        pf.ops.matmul(g, x, trans_a=True)
        g.sum(axis=0)

    def kernels():
        native.matmul(x, w.T, out, b, False)
        native.matmul(g, w, gx, None, False)
        native.matmul(g.T, x, gw, None, False)
        g.sum(axis=0)

    add("Linear(16,16) forward+backward", step, ops_calls, kernels)
    return rows


# ---------------------------------------------------------------------------- ResNet block

class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


def torch_block(c):
    import torch

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(c)
            self.relu = torch.nn.ReLU(inplace=True)
            self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = torch.nn.BatchNorm2d(c)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + x)

    return TorchBlock()


def block_inputs(batch, channels, size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    g = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    return x, g


def pyfast_block_step(batch, channels, size):
    pf.manual_seed(0)
    block = BasicBlock(channels)
    x, g = block_inputs(batch, channels, size)
    xt = pf.tensor(x, requires_grad=True)
    params = list(block.parameters())

    def step():
        for p in params:
            p.grad = None
        xt.grad = None
        block(xt).backward(g)

    return step


def torch_block_step(batch, channels, size):
    import torch
    torch.manual_seed(0)
    block = torch_block(channels)
    x, g = block_inputs(batch, channels, size)
    xt = torch.from_numpy(x).requires_grad_()
    gt = torch.from_numpy(g)

    def step():
        block.zero_grad(set_to_none=True)
        xt.grad = None
        block(xt).backward(gt)

    return step


def block_breakdown(threads, batch, channels, size, repeat=5):
    """Total, in-kernel and in-ops seconds of one pyfast step (medians), and torch's."""
    from pyfast.bench import limit_threads
    step = pyfast_block_step(batch, channels, size)
    with limit_threads(threads):
        step()
        totals, kernels, ops_times, calls = [], [], [], 0
        for _ in range(repeat):
            clock = KernelClock()
            with clock.installed():
                t0 = time.perf_counter()
                step()
                totals.append(time.perf_counter() - t0)
            kernels.append(clock.kernel_s)
            ops_times.append(clock.ops_s)
            calls = clock.kernel_calls
        plain = median_time(step, repeat=repeat, min_time=0.0)  # without the clock's wrappers
    row = dict(threads=threads, shape=f"N{batch} C{channels} {size}x{size}",
               pyfast_ms=plain * 1e3, instrumented_ms=statistics.median(totals) * 1e3,
               kernels_ms=statistics.median(kernels) * 1e3,
               ops_ms=statistics.median(ops_times) * 1e3, kernel_calls=calls,
               backends={f: pf.backends.select(f, "cpu")[0]
                         for f in ("conv", "norm", "elementwise")})
    row["outside_kernels_pct"] = 100 * (1 - row["kernels_ms"] / row["instrumented_ms"])
    row["outside_ops_pct"] = 100 * (1 - row["ops_ms"] / row["instrumented_ms"])
    try:
        import torch  # noqa: F401
    except ImportError:
        row["torch_ms"] = None
        return row
    tstep = torch_block_step(batch, channels, size)
    with limit_threads(threads):
        import torch
        torch.set_num_threads(threads)
        row["torch_ms"] = median_time(tstep, repeat=repeat, min_time=0.0) * 1e3
    row["torch_over_pyfast"] = row["torch_ms"] / row["pyfast_ms"]
    return row


# ---------------------------------------------------------------------------- model blocks

# Blocks of the three networks at the sizes they run in pf.models' benchmark steps
# (ResNet-18 and DenseNet-121 32x32 variants at batch 64 / 32, U-Net 64x64 at batch 16).
MODEL_BLOCKS = {
    "resnet18 BasicBlock 64ch 32x32 b64": ("resnet_basic", dict(channels=64, size=32, batch=64)),
    "resnet18 BasicBlock 256ch 8x8 b64": ("resnet_basic", dict(channels=256, size=8, batch=64)),
    "densenet121 denseblock1+transition1 32x32 b32": ("dense_block", dict(size=32, batch=32)),
    "unet DoubleConv 128->64 64x64 b16": ("unet_double", dict(cin=128, cout=64, size=64,
                                                               batch=16)),
}
QUICK_BLOCKS = {  # --quick: the same blocks at a quarter of the batch
    k: (kind, dict(opts, batch=max(1, opts["batch"] // 4))) for k, (kind, opts) in
    MODEL_BLOCKS.items()}


def build_block(kind, opts):
    """(module, input shape) of one of the pf.models blocks."""
    from pyfast.models import densenet, resnet, unet
    b, s = opts["batch"], opts["size"]
    if kind == "resnet_basic":
        c = opts["channels"]
        return resnet.BasicBlock(c, c), (b, c, s, s)
    if kind == "dense_block":
        block = nn.Sequential(densenet._DenseBlock(6, 64, 4, 32, 0.0),
                              densenet._Transition(256, 128))
        return block, (b, 64, s, s)
    if kind == "unet_double":
        return unet._DoubleConv(opts["cin"], opts["cout"]), (b, opts["cin"], s, s)
    raise ValueError(kind)


# What counts as GEMM/conv micro-kernel time: the native conv and gemm kernels (their
# packing, im2col and epilogues run inside them and cannot be split off from Python).
MICRO_FAMILIES = ("conv", "gemm")


class StepClock:
    """Splits one training step's time by where it runs.

    Every ``Function`` subclass's forward and backward is wrapped (the tape calls them as
    ``cls.forward`` / ``type(node).backward``), and so is every backend kernel namespace that
    ``backends.select`` hands out. Time is charged to

    * ``kernel:<family>`` - inside a backend kernel (conv/gemm are the micro-kernels);
    * ``<Function> glue`` - inside a Function's forward/backward but outside kernels: argument
      checks, layout conversion (contiguous copies), NumPy work such as concatenate/slicing,
      output allocation;
    * ``tape`` - everything else: Module.__call__, Tensor creation, the tape's topological
      walk and gradient accumulation (its ops.add kernels are charged to kernel:elementwise).

    The wrappers cost a few microseconds per call, so the instrumented step is slightly
    longer than the plain one; both totals are reported."""

    def __init__(self):
        self.spent = {}
        self._label = None
        self._kernel_t = 0.0   # kernel time inside the current Function call

    def _add(self, key, dt):
        self.spent[key] = self.spent.get(key, 0.0) + dt

    @staticmethod
    def _functions():
        from pyfast.tensor import Function
        seen, todo = [], [Function]
        while todo:
            cls = todo.pop()
            for sub in cls.__subclasses__():
                if sub not in seen:
                    seen.append(sub)
                    todo.append(sub)
        return seen

    @contextlib.contextmanager
    def installed(self):
        clock = self
        backends = pf.backends
        real_select = backends.select

        class Timed:
            def __init__(self, family, ns):
                self._family, self._ns = family, ns

            def __getattr__(self, name):
                fn = getattr(self._ns, name)
                if not callable(fn):
                    return fn
                family = self._family

                def timed(*args, **kwargs):
                    t0 = time.perf_counter()
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        dt = time.perf_counter() - t0
                        clock._add("kernel:" + family, dt)
                        clock._kernel_t += dt
                return timed

        def select(family, device, backend=None):
            name, ns = real_select(family, device, backend)
            return name, Timed(family, ns)

        def wrap(cls, attr, fn):
            label = cls.__name__.lstrip("_") + " glue"

            def timed(*args, **kwargs):
                outer, outer_k = clock._label, clock._kernel_t
                clock._label, clock._kernel_t = label, 0.0
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    dt = time.perf_counter() - t0
                    clock._add(label, dt - clock._kernel_t)
                    clock._label, clock._kernel_t = outer, outer_k + dt if outer else outer_k
            return staticmethod(timed)

        patched = []
        for cls in self._functions():
            for attr in ("forward", "backward"):
                if attr in cls.__dict__:
                    fn = cls.__dict__[attr]
                    fn = fn.__func__ if isinstance(fn, staticmethod) else fn
                    patched.append((cls, attr, cls.__dict__[attr]))
                    setattr(cls, attr, wrap(cls, attr, fn))
        backends.select = select
        try:
            yield self
        finally:
            backends.select = real_select
            for cls, attr, original in patched:
                setattr(cls, attr, original)


def block_step(kind, opts, seed=0):
    """One training step (forward + backward with a random output gradient) of a block."""
    pf.manual_seed(seed)
    block, shape = build_block(kind, opts)
    block.train()
    rng = np.random.default_rng(seed)
    x = pf.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    with pf.no_grad():
        out_shape = block(x).shape
    g = rng.standard_normal(out_shape).astype(np.float32)
    params = list(block.parameters())

    def step():
        for p in params:
            p.grad = None
        x.grad = None
        block(x).backward(g)

    return step


def block_profile(kind, opts, threads, repeat=5):
    """Seconds per step by StepClock category (medians over ``repeat`` instrumented steps),
    plus the plain step's median and the share outside the conv/GEMM micro-kernels."""
    from pyfast.bench import limit_threads
    step = block_step(kind, opts)
    with limit_threads(threads):
        step()
        runs, totals = [], []
        for _ in range(repeat):
            clock = StepClock()
            with clock.installed():
                t0 = time.perf_counter()
                step()
                totals.append(time.perf_counter() - t0)
            runs.append(clock.spent)
        plain = [median_time(step, repeat=1, min_time=0.0) for _ in range(repeat)]
    keys = sorted({k for r in runs for k in r})
    parts = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}
    total = statistics.median(totals)
    parts["tape"] = max(total - sum(parts.values()), 0.0)
    micro = sum(parts.get("kernel:" + f, 0.0) for f in MICRO_FAMILIES)
    return dict(threads=threads, plain_ms=statistics.median(plain) * 1e3,
                plain_min_ms=min(plain) * 1e3, instrumented_ms=total * 1e3,
                parts_ms={k: v * 1e3 for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
                outside_micro_pct=100 * (1 - micro / total))


def print_block_profile(name, r):
    print(f"{name}, {r['threads']}t: step {r['plain_ms']:.1f} ms (min {r['plain_min_ms']:.1f}),"
          f" instrumented {r['instrumented_ms']:.1f} ms; outside conv/GEMM micro-kernels "
          f"{r['outside_micro_pct']:.1f}%")
    total = r["instrumented_ms"]
    print("    " + ", ".join(f"{k} {v:.1f} ({100 * v / total:.0f}%)"
                             for k, v in r["parts_ms"].items() if v >= 0.005 * total))


# ---------------------------------------------------------------------------- model steps A/B

def model_worker(network, threads, steps, impls):
    """In this process: seconds of ``steps`` training steps (after 2 warm-up steps) of
    ``network`` for each of ``impls`` ("pyfast", "torch", "torch_cl" = channels_last), as
    JSON on stdout. The first pyfast step's loss is checked against float64 torch."""
    from pyfast.bench import limit_threads
    from pyfast.bench import models as bm
    net = next(n for n in bm.NETWORKS if n.name == network)
    problem = bm.Problem(net)
    out = {}
    with limit_threads(threads):
        for impl in impls:
            if impl == "pyfast":
                step = bm.pyfast_step(problem)
                try:
                    problem.check(step())
                except Exception as exc:  # a wrong result voids the figure
                    out["error"] = str(exc)
            else:
                import torch
                torch.set_num_threads(threads)
                step = torch_model_step(problem, channels_last=impl == "torch_cl")
                step()
            step()
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            out[impl] = times
    print(json.dumps(out))


def torch_model_step(problem, channels_last):
    import torch
    from pyfast.bench import models as bm
    model = bm.build_torch(problem.network)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in problem.state.items()})
    model.train()
    x, y = torch.from_numpy(problem.x), torch.from_numpy(problem.y)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = bm._torch_loss(model(x), y, problem.network.task)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def models_ab(base, networks, threads_list, rounds, steps):
    """Training-step img/s of pf.models from the tree ``base`` (before) and from this tree
    (after), one process per measurement, alternating before/after each round, with torch
    NCHW and channels_last measured in the same rounds. Returns rows with every step time."""
    import subprocess
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    from pyfast.bench import models as bm
    batch = {n.name: n.batch for n in bm.NETWORKS}
    samples = {}
    for r in range(rounds):
        for network in networks:
            for threads in threads_list:
                order = [("before", base, ["pyfast"]), ("after", here, ["pyfast"]),
                         ("torch", here, ["torch", "torch_cl"])]
                if r % 2:
                    order = order[1::-1] + order[2:]
                for label, tree, impls in order:
                    cmd = [sys.executable, os.path.abspath(__file__), "--model-worker",
                           network, str(threads), str(steps), *impls]
                    res = subprocess.run(cmd, env=dict(env, PYTHONPATH=tree),
                                         capture_output=True, text=True, timeout=1200)
                    if res.returncode:
                        raise RuntimeError(res.stderr[-2000:])
                    got = json.loads(res.stdout.strip().splitlines()[-1])
                    for impl, times in got.items():
                        if impl == "error":
                            print(f"!! {label} {network}: {times}")
                            continue
                        key = (network, threads, "pyfast " + label if impl == "pyfast"
                               else impl)
                        samples.setdefault(key, []).extend(times)
                print(f"  round {r + 1}/{rounds} {network} {threads}t done "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    rows = []
    for (network, threads, impl), times in samples.items():
        b = batch[network]
        rows.append(dict(network=network, threads=threads, impl=impl, batch=b,
                         median_img_s=b / statistics.median(times), best_img_s=b / min(times),
                         step_s=times))
    return rows


# ---------------------------------------------------------------------------- companions

def companion_kernels(threads, batch=32, channels=64, size=32):
    """The native norm/pool/resample/elementwise kernels against torch CPU on ResNet/U-Net
    activation sizes: rows (op, pyfast ms, torch ms). Forward+backward where a layer's
    training step runs both."""
    import torch
    from pyfast.bench import limit_threads
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    shape = (batch, channels, size, size)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    c = channels
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    wt, bt = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    rmt, rvt = torch.zeros(c), torch.ones(c)
    xg = xt.clone().requires_grad_()
    half = x[:, :, :size // 2, :size // 2].copy()
    halft = torch.from_numpy(half).requires_grad_()
    pooled = rng.standard_normal((batch, channels, size // 2, size // 2)).astype(np.float32)

    def bn():
        y, mean, invstd = pf.ops.batch_norm(x, w, b, rm, rv, training=True)
        pf.ops.batch_norm_backward(g, x, w, mean, invstd)

    def bn_torch():
        F.batch_norm(xg, rmt, rvt, wt, bt, training=True).backward(gt)

    def maxpool():
        y, idx = pf.ops.max_pool2d(x, 2)
        pf.ops.max_pool2d_backward(pooled, idx, x.shape)

    def maxpool_torch():
        F.max_pool2d(xg, 2).backward(torch.from_numpy(pooled))

    def bilinear():
        pf.ops.upsample2d(half, scale_factor=2, mode="bilinear")
        pf.ops.upsample2d_backward(g, half.shape, 2, mode="bilinear")

    def bilinear_torch():
        F.interpolate(halft, scale_factor=2, mode="bilinear").backward(gt)

    cases = [
        ("batch_norm train fwd+bwd", bn, bn_torch),
        ("relu fwd", lambda: pf.ops.relu(x), lambda: torch.relu(xt)),
        ("relu bwd", lambda: pf.ops.relu_backward(g, x),
         lambda: torch.ops.aten.threshold_backward(gt, xt, 0)),
        ("add (residual)", lambda: pf.ops.add(x, g), lambda: xt + gt),
        ("max_pool2d 2x2 fwd+bwd", maxpool, maxpool_torch),
        ("max_pool2d 3x3/2 pad 1 fwd", lambda: pf.ops.max_pool2d(x, 3, 2, 1),
         lambda: F.max_pool2d(xt, 3, 2, 1)),
        ("adaptive_avg_pool2d 1 fwd", lambda: pf.ops.adaptive_avg_pool2d(x, 1),
         lambda: F.adaptive_avg_pool2d(xt, 1)),
        ("upsample bilinear x2 fwd+bwd", bilinear, bilinear_torch),
        ("upsample nearest x2 fwd", lambda: pf.ops.upsample2d(half, scale_factor=2),
         lambda: F.interpolate(halft.detach(), scale_factor=2)),
        ("sigmoid fwd", lambda: pf.ops.sigmoid(x), lambda: torch.sigmoid(xt)),
        ("tanh fwd", lambda: pf.ops.tanh(x), lambda: torch.tanh(xt)),
        ("dropout p=0.5 fwd", lambda: pf.ops.dropout(x, 0.5, 1), lambda: F.dropout(xt, 0.5)),
    ]
    rows = []
    with limit_threads(threads):
        torch.set_num_threads(threads)
        for name, ours, theirs in cases:
            t_ours = median_time(ours, repeat=5, min_time=0.05)
            t_theirs = median_time(theirs, repeat=5, min_time=0.05)
            rows.append(dict(op=name, threads=threads, pyfast_ms=t_ours * 1e3,
                             torch_ms=t_theirs * 1e3, torch_over_pyfast=t_theirs / t_ours))
    return rows


# ---------------------------------------------------------------------------- pytest

def test_layer_call_overhead(benchmark):
    lin = nn.Linear(16, 16)
    x = pf.tensor(np.ones((4, 16), np.float32))
    benchmark(lambda: lin(x))
    benchmark.extra_info["rows"] = layer_overhead()


def test_resnet_block_step_pyfast(benchmark):
    step = pyfast_block_step(**BLOCK)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    row = block_breakdown(pf.get_num_threads(), **BLOCK, repeat=3)
    benchmark.extra_info.update(row)


def test_resnet_block_step_torch(benchmark):
    import pytest
    pytest.importorskip("torch")
    step = torch_block_step(**BLOCK)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


# ---------------------------------------------------------------------------- script

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="*", default=sorted({1, pf.get_num_threads()}))
    parser.add_argument("--quick", action="store_true", help="batch 8 instead of 32")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--blocks-only", action="store_true",
                        help="only the per-block split of the model blocks' steps")
    parser.add_argument("--models-ab", metavar="BASE_TREE",
                        help="only the pf.models training steps of BASE_TREE (a pyfast "
                             "checkout with its extension built) against this tree, and torch")
    parser.add_argument("--networks", nargs="+", default=["resnet18", "densenet121", "unet"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--model-worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model_worker:
        network, threads, steps, *impls = args.model_worker
        model_worker(network, int(threads), int(steps), impls)
        return 0
    if args.models_ab:
        print(f"pf.models training steps, before ({args.models_ab}) vs after (this tree), "
              f"torch NCHW and channels_last; one process each, alternating")
        rows = models_ab(args.models_ab, args.networks, args.threads, args.rounds, args.steps)
        print(f"{'network':12s} {'thr':>3s} {'impl':16s} {'median img/s':>12s} {'best img/s':>10s}")
        for r in sorted(rows, key=lambda r: (r["network"], r["threads"], r["impl"])):
            print(f"{r['network']:12s} {r['threads']:3d} {r['impl']:16s} "
                  f"{r['median_img_s']:12.1f} {r['best_img_s']:10.1f}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(dict(machine=platform.processor() or platform.machine(),
                               load_average=os.getloadavg(), models=rows), fh, indent=2)
        return 0
    shape = dict(BLOCK, batch=8) if args.quick else BLOCK

    print("Model blocks, one training step (forward + backward), float32: where it runs")
    profiles = []
    for n in args.threads:
        for name, (kind, opts) in (QUICK_BLOCKS if args.quick else MODEL_BLOCKS).items():
            r = block_profile(kind, opts, n)
            r["block"] = name
            profiles.append(r)
            print_block_profile(name, r)
    if args.blocks_only:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(dict(machine=platform.processor() or platform.machine(),
                               load_average=os.getloadavg(), blocks=profiles), fh, indent=2)
        return 0

    print("Python overhead per layer call (median, microseconds)")
    rows = layer_overhead()
    print(f"{'call':40s} {'layer':>9s} {'pf.ops':>9s} {'kernel':>9s} {'overhead':>9s}")
    for r in rows:
        print(f"{r['what']:40s} {r['layer_us']:9.1f} {r['ops_us']:9.1f} {r['kernel_us']:9.1f} "
              f"{r['overhead_us']:9.1f}")

    print("\nResNet basic block, one training step (forward + backward), float32")
    blocks = []
    for n in args.threads:
        r = block_breakdown(n, **shape)
        blocks.append(r)
        torch_part = "" if r["torch_ms"] is None else \
            f"  torch {r['torch_ms']:.1f} ms (torch/pyfast {r['torch_over_pyfast']:.2f}x)"
        print(f"{n} thread(s), {r['shape']}: pyfast {r['pyfast_ms']:.1f} ms; kernels "
              f"{r['kernels_ms']:.1f} ms in {r['kernel_calls']} calls, pf.ops {r['ops_ms']:.1f} ms "
              f"of {r['instrumented_ms']:.1f} ms instrumented -> outside kernels "
              f"{r['outside_kernels_pct']:.1f}%, outside pf.ops {r['outside_ops_pct']:.1f}%"
              f"{torch_part}")
        print(f"    backends: {r['backends']}")
    companions = []
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    if torch is not None:
        print(f"\nCompanion kernels vs torch CPU, float32, N{shape['batch']} C{shape['channels']} "
              f"{shape['size']}x{shape['size']} (median ms; ratio > 1: pyfast faster)")
        for n in args.threads:
            for r in companion_kernels(n, shape["batch"], shape["channels"], shape["size"]):
                companions.append(r)
                print(f"{n}t {r['op']:32s} pyfast {r['pyfast_ms']:8.2f}  torch {r['torch_ms']:8.2f}"
                      f"  torch/pyfast {r['torch_over_pyfast']:5.2f}")
    if args.json:
        report = dict(machine=platform.processor() or platform.machine(), python=sys.version,
                      load_average=os.getloadavg(), overhead=rows, block=blocks, blocks=profiles,
                      companions=companions)
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
