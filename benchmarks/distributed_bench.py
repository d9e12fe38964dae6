"""Data-parallel measurements (run it alone: ``python benchmarks/distributed_bench.py``).

1. All-reduce bandwidth, 1 KB - 256 MB, on 2 ranks: pf.distributed.all_reduce against
   mpi4py's raw ``Allreduce(IN_PLACE, ...)`` on the same buffers, interleaved; each figure
   is the median over repeats of the mean time of a back-to-back burst.
2. ResNet-18 32x32 training step, global batch 64: pyfast 1 process x 2 threads, pyfast
   DataParallel 2 ranks x 1 thread (32 images each), torch DDP (gloo) 2 ranks x 1 thread.
   For the two data-parallel runs: the step with gradient sync, the same step inside
   ``no_sync`` (compute only), each between two barriers (so both include waiting for the
   slower rank), a blocking all-reduce of the whole gradient, and from them the overlap
   share: 1 - (step - compute step) / all-reduce time. Configurations alternate
   over ``--rounds`` rounds; medians are reported.
3. A U-Net step in one process at 1 thread (its compute per image feeds the scaling model).

Writes benchmarks/results/distributed-<date>.json (read by allreduce_model.py) and prints
a table. The machine's load (``uptime``) is recorded before and after.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIZES = [2 ** 10 * 4 ** k for k in range(10)]          # 1 KB .. 256 MB
RESNET_BATCH = 64
BUCKET_SWEEP_MB = (25, 5, 1)      # the default first


def _median(xs):
    return float(np.median(np.asarray(xs)))


# ---------------------------------------------------------------------------- on a rank

def rank_allreduce(out, quick):
    from mpi4py import MPI

    import pyfast as pf
    dist = pf.distributed
    dist.init()
    comm = MPI.COMM_WORLD
    rows = []
    for nbytes in (SIZES[:7] if quick else SIZES):
        n = nbytes // 4
        buf = np.empty(n, np.float32)
        burst = max(1, min(100, int(2e6 // max(nbytes, 1))))   # ~ms per burst
        repeats = 15 if nbytes < 2 ** 24 else 9
        times = {"raw": [], "pyfast": []}

        def raw():
            comm.Allreduce(MPI.IN_PLACE, buf, MPI.SUM)

        def wrapped():
            dist.all_reduce(buf)

        for rep in range(repeats):
            pair = [("raw", raw), ("pyfast", wrapped)]
            for name, fn in (pair if rep % 2 == 0 else pair[::-1]):
                buf[...] = 2.0 ** -60            # sums double each call: stay finite
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(burst):
                    fn()
                times[name].append((time.perf_counter() - t0) / burst)
        raw_s, pf_s = _median(times["raw"]), _median(times["pyfast"])
        rows.append({"bytes": nbytes, "raw_s": raw_s, "pyfast_s": pf_s,
                     "raw_GBps": nbytes / raw_s / 1e9, "pyfast_GBps": nbytes / pf_s / 1e9,
                     "overhead": pf_s / raw_s - 1.0})
    if dist.rank() == 0:
        _write(out, {"allreduce": rows})


def _resnet_data(batch, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
            rng.integers(0, 10, batch).astype(np.int64))


def rank_pyfast(out, mode, steps):
    import pyfast as pf
    from pyfast.nn import functional as F
    threads = 2 if mode == "single" else 1
    pf.set_num_threads(threads)
    dp = mode == "dp"
    if dp:
        pf.distributed.init()
    world = pf.distributed.world_size()
    pf.manual_seed(0)
    model = pf.models.resnet18(num_classes=10, small_input=True)
    if dp:
        model = pf.distributed.DataParallel(model)
    opt = pf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _resnet_data(RESNET_BATCH // world, seed=pf.distributed.rank())

    def step():
        loss = F.cross_entropy(model(x), y)      # model: the wrapper being timed
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(n, ctx=None):
        # each step between two barriers: the slower rank's step, with or without the sync
        t = []
        for _ in range(n):
            if dp:
                pf.distributed.barrier()
            t0 = time.perf_counter()
            if ctx is None:
                step()
            else:
                with ctx():
                    step()
            if dp:
                pf.distributed.barrier()
            t.append(time.perf_counter() - t0)
        return t

    step()
    step()
    result = {"mode": f"pyfast-{mode}", "threads": threads, "ranks": world}
    if not dp:
        result["step_s"] = timed(steps)
        _write(out, result)
        return
    # the bucket sizes interleaved step by step (the machine's load drifts); each wrapper
    # reduces only after its own forward
    inner = model.module
    wrappers = {mb: pf.distributed.DataParallel(inner, bucket_mb=mb) for mb in BUCKET_SWEEP_MB}
    sweep = {str(mb): {"step_s": [], "compute_step_s": [], "end_wait_s": []}
             for mb in BUCKET_SWEEP_MB}
    for _ in range(steps):
        for mb, wrapper in wrappers.items():
            model = wrapper
            row = sweep[str(mb)]
            row["step_s"] += timed(1)
            row["end_wait_s"].append(wrapper.stats["last_wait_s"])
            row["compute_step_s"] += timed(1, wrapper.no_sync)
            row["buckets"] = wrapper.stats["buckets"]
    flat = opt._buckets[0].grad
    ar = []
    for _ in range(5):
        pf.distributed.barrier()
        t0 = time.perf_counter()
        pf.distributed.all_reduce(flat, "mean")
        ar.append(time.perf_counter() - t0)
    default = sweep[str(BUCKET_SWEEP_MB[0])]
    result.update(default, allreduce_s=ar, grad_bytes=int(flat.nbytes), bucket_sweep=sweep)
    if pf.distributed.rank() == 0:
        _write(out, result)


def rank_torch_ddp(out, steps, store):
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pyfast.bench import _torch_models as tm
    torch.set_num_threads(1)
    rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
    world = int(os.environ["OMPI_COMM_WORLD_SIZE"])
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                             world_size=world)
    torch.manual_seed(0)
    model = DDP(tm.resnet(18, num_classes=10, small_input=True))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = (torch.from_numpy(a) for a in _resnet_data(RESNET_BATCH // world, seed=rank))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(ctx=None):
        tdist.barrier()
        t0 = time.perf_counter()
        if ctx is None:
            step()
        else:
            with ctx():
                step()
        tdist.barrier()
        return time.perf_counter() - t0

    step()
    step()
    sync, local = [], []
    for _ in range(steps):
        sync.append(timed())
        local.append(timed(model.no_sync))
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    ar = []
    for _ in range(5):
        tdist.barrier()
        t0 = time.perf_counter()
        tdist.all_reduce(flat)
        ar.append(time.perf_counter() - t0)
    if rank == 0:
        _write(out, {"mode": "torch-ddp-gloo", "threads": 1, "ranks": world, "step_s": sync,
                     "compute_step_s": local, "allreduce_s": ar,
                     "grad_bytes": int(flat.numel() * 4)})
    tdist.destroy_process_group()


def rank_unet(out, steps):
    import pyfast as pf
    from pyfast.nn import functional as F
    pf.set_num_threads(1)
    pf.manual_seed(0)
    model = pf.models.UNet(1, 1)
    opt = pf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    batch = 4
    x = rng.standard_normal((batch, 1, 64, 64)).astype(np.float32)
    y = (rng.random((batch, 1, 64, 64)) < 0.1).astype(np.float32)
    t = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            t.append(time.perf_counter() - t0)
    _write(out, {"mode": "unet-1x64x64", "batch": batch, "threads": 1, "step_s": t,
                 "params": int(sum(p.data.size for p in model.parameters()))})


def _write(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


# ---------------------------------------------------------------------------- driver

def _launch(nproc, args, tmp):
    from pyfast.distributed import launch
    out = os.path.join(tmp, f"{len(os.listdir(tmp))}.json")
    argv = [sys.executable, os.path.abspath(__file__), "--rank-job", *args, out]
    env = dict(os.environ, OMP_NUM_THREADS="1" if nproc > 1 else "2", PYTHONPATH=ROOT,
               GLOO_SOCKET_IFNAME="lo")
    if nproc > 1:
        cmd, env = launch.mpiexec_command(nproc, argv, env=env)
    else:
        cmd = argv
    subprocess.run(cmd, env=env, check=True, cwd=ROOT)
    with open(out) as f:
        return json.load(f)


def _load():
    return os.getloadavg()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank-job", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small sizes, one round")
    p.add_argument("--skip", nargs="*", default=(), choices=("allreduce", "resnet", "unet"))
    args = p.parse_args()
    if args.rank_job:
        job, *rest = args.rank_job
        if job == "allreduce":
            return rank_allreduce(rest[-1], rest[0] == "quick")
        if job == "pyfast":
            return rank_pyfast(rest[-1], rest[0], int(rest[1]))
        if job == "torch":
            return rank_torch_ddp(rest[-1], int(rest[0]), rest[1])
        if job == "unet":
            return rank_unet(rest[-1], int(rest[0]))
        raise SystemExit(f"unknown job {job}")

    import pyfast as pf
    rounds = 1 if args.quick else args.rounds
    doc = {"date": datetime.date.today().isoformat(), "cpu": _cpu(), "cores": os.cpu_count(),
           "load_before": _load(), "pyfast": pf.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if "allreduce" not in args.skip:
            doc["allreduce"] = _launch(2, ["allreduce", "quick" if args.quick else "full"],
                                       tmp)["allreduce"]
        if "resnet" not in args.skip:
            runs = {"pyfast-single": [], "pyfast-dp": [], "torch-ddp-gloo": []}
            for _ in range(rounds):
                runs["pyfast-single"].append(_launch(1, ["pyfast", "single", str(args.steps)],
                                                     tmp))
                runs["pyfast-dp"].append(_launch(2, ["pyfast", "dp", str(args.steps)], tmp))
                store = os.path.join(tmp, f"store{time.time_ns()}")
                runs["torch-ddp-gloo"].append(_launch(2, ["torch", str(args.steps), store],
                                                      tmp))
            doc["resnet18"] = {k: _merge(v) for k, v in runs.items()}
        if "unet" not in args.skip:
            doc["unet"] = _launch(1, ["unet", str(args.steps)], tmp)
    doc["load_after"] = _load()
    write(doc)


def write(doc):
    """Print the tables and write them (.md) and the figures (.json) to results/."""
    import contextlib
    import io
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        _summarise(doc)
    print(text.getvalue(), end="")
    stem = os.path.join(HERE, "results", f"distributed-{doc['date']}")
    with open(stem + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(f"# Data-parallel measurements ({doc['date']}, {doc['cpu']}, {doc['cores']} "
                f"cores; written by benchmarks/distributed_bench.py)\n\n```\n"
                f"{text.getvalue()}```\n")
    print(f"\nwrote {stem}.json and .md")


def _merge(results):
    merged = dict(results[0])
    for key in ("step_s", "compute_step_s", "end_wait_s", "allreduce_s"):
        if key in merged:
            merged[key] = [t for r in results for t in r[key]]
    if "bucket_sweep" in merged:
        merged["bucket_sweep"] = {mb: _merge([r["bucket_sweep"][mb] for r in results])
                                  for mb in merged["bucket_sweep"]}
    return merged


def _summarise(doc):
    """Medians, rates and overlap shares, added to ``doc`` and printed."""
    print(f"load average before {doc['load_before']}, after {doc.get('load_after')}")
    if "allreduce" in doc:
        print("\nall-reduce, 2 ranks (float32 sum, in place)")
        print(f"{'size':>10} {'mpi4py GB/s':>12} {'pyfast GB/s':>12} {'overhead':>9}")
        for r in doc["allreduce"]:
            print(f"{_size(r['bytes']):>10} {r['raw_GBps']:12.3f} {r['pyfast_GBps']:12.3f} "
                  f"{r['overhead']:+9.1%}")
    if "resnet18" in doc:
        print(f"\nResNet-18 32x32, global batch {RESNET_BATCH}, SGD momentum step")
        print("(img/s from the median step and from the best; exposed = median over "
              "adjacent pairs of step - compute step; overlap = 1 - exposed / all-reduce; "
              "end wait = what backward's end waited for pyfast's buckets; hidden = 1 - end "
              "wait / all-reduce)")
        print(f"{'run':>22} {'img/s':>7} {'best':>6} {'step s':>7} {'compute s':>9} "
              f"{'all-reduce s':>12} {'exposed s':>9} {'overlap':>8} {'end wait s':>10} "
              f"{'hidden':>7}")
        rows = []
        for name, r in doc["resnet18"].items():
            rows.append((name, r))
            if "allreduce_s" in r:
                r["allreduce_median_s"] = _median(r["allreduce_s"])
            for mb, sub in r.get("bucket_sweep", {}).items():
                sub["allreduce_median_s"] = r["allreduce_median_s"]
                rows.append((f"{name} {mb} MB", sub))
        for name, r in rows:
            step = _median(r["step_s"])
            r["img_per_s"] = RESNET_BATCH / step
            r["img_per_s_best"] = RESNET_BATCH / min(r["step_s"])
            line = f"{name:>22} {r['img_per_s']:7.1f} {r['img_per_s_best']:6.1f} {step:7.3f}"
            if "compute_step_s" in r:
                comp, ar = _median(r["compute_step_s"]), r["allreduce_median_s"]
                exposed = max(_median(np.subtract(r["step_s"], r["compute_step_s"])), 0.0)
                r.update(step_median_s=step, compute_median_s=comp, exposed_s=exposed,
                         overlap_share=max(0.0, 1.0 - exposed / ar))
                line += (f" {comp:9.3f} {ar:12.4f} {exposed:9.4f} "
                         f"{r['overlap_share']:8.0%}")
                if "end_wait_s" in r:
                    wait = _median(r["end_wait_s"])
                    r.update(end_wait_median_s=wait, hidden_share=max(0.0, 1.0 - wait / ar))
                    line += f" {wait:10.4f} {r['hidden_share']:7.0%}"
            print(line)
    if "unet" in doc:
        u = doc["unet"]
        u["step_median_s"] = _median(u["step_s"])
        print(f"\nU-Net 1x64x64 b{u['batch']} 1 thread: {u['step_median_s']:.3f} s/step, "
              f"{u['params']} parameters")


def _size(n):
    for unit, scale in (("MB", 2 ** 20), ("KB", 2 ** 10)):
        if n >= scale:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
