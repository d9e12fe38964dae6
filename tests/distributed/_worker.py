"""What each rank runs in tests/distributed (``python -m tests.distributed._worker SCENARIO
OUT``, under mpiexec), plus the builders and data both sides share: the tests compute the
single-process references with the same functions in their own process.

Rank 0 writes its results to OUT/<scenario>.npz (rank r > 0 to <scenario>.rank<r>.npz).
"""

import os
import signal
import sys
import time

import numpy as np

import pyfast as pf
from pyfast.nn import functional as F

GLOBAL_BATCH = 16


def build_cnn(batchnorm=False, wide=5):
    pf.manual_seed(0)
    layers = [pf.nn.Conv2d(3, 4, 3, padding=1)]
    if batchnorm:
        layers.append(pf.nn.BatchNorm2d(4))
    layers += [pf.nn.ReLU(), pf.nn.Flatten(), pf.nn.Linear(4 * 6 * 6, wide)]
    return pf.nn.Sequential(*layers)


def build_mlp():
    pf.manual_seed(0)
    return pf.nn.Sequential(pf.nn.Linear(8, 32), pf.nn.ReLU(), pf.nn.Linear(32, 3))


def batch(step, n=GLOBAL_BATCH):
    rng = np.random.default_rng(100 + step)
    x = rng.standard_normal((n, 3, 6, 6)).astype(np.float32)
    y = rng.integers(0, 5, n)
    return x, y


def shard(a, rank, world):
    """Rank ``rank``'s contiguous share of a global batch."""
    k = len(a) // world
    return a[rank * k:(rank + 1) * k]


def mlp_data(n=96):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return pf.data.ArrayDataset(x, y)


def grads_of(model):
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters()}


def params_of(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def make_optimizer(kind, params):
    if kind == "sgd":
        return pf.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)
    return pf.optim.Adam(params, lr=0.01, weight_decay=1e-3)


def train_steps(model, opt, steps, rank, world):
    for step in range(steps):
        x, y = batch(step)
        opt.zero_grad()
        F.cross_entropy(model(shard(x, rank, world)), shard(y, rank, world)).backward()
        opt.step()


# ---------------------------------------------------------------------------- scenarios

def scenario_checks(dist, out):
    rank, world = dist.rank(), dist.world_size()
    res = {"world": np.array(world)}

    # collectives
    a = np.arange(6, dtype=np.float32) * (rank + 1)
    res["sum_f32"] = dist.all_reduce(a.copy())
    res["mean_f64"] = dist.all_reduce(np.full(3, rank + 1.0), "mean")
    res["max_i64"] = dist.all_reduce(np.array([rank, -rank], np.int64), "max")
    res["bcast"] = dist.broadcast(np.full(4, float(rank)), root=1)
    dist.barrier()
    errors = []
    for bad in (lambda: dist.all_reduce(np.ones((4, 4), np.float32)[:, ::2]),
                lambda: dist.all_reduce(np.ones(3), op="min"),
                lambda: dist.all_reduce(np.arange(3), op="mean"),
                lambda: dist.all_reduce([1.0, 2.0]),
                lambda: dist.broadcast(np.ones(3), root=world)):
        try:
            bad()
            errors.append("no error")
        except (ValueError, TypeError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    res["errors"] = np.array(errors)

    # one step: gradients, wrapped before the optimizer (DataParallel's own gradient buffer),
    # with several buckets and with one
    for tag, bucket_mb in (("small", 0.001), ("default", 25)):
        model = dist.DataParallel(build_cnn(), bucket_mb=bucket_mb)
        x, y = batch(0)
        F.cross_entropy(model(shard(x, rank, world)), shard(y, rank, world)).backward()
        for name, g in grads_of(model).items():
            res[f"grad_{tag}/{name}"] = g
        res[f"buckets_{tag}"] = np.array(model.stats["buckets"])
    res["state_keys"] = np.array(list(model.state_dict()))

    # a model built differently on one rank is caught at wrap time
    try:
        dist.DataParallel(build_cnn(wide=5 + rank))
        res["mismatch"] = np.array("no error")
    except ValueError as exc:
        res["mismatch"] = np.array(str(exc))

    # rank 0's weights win at wrap time
    m = build_cnn()
    if rank == 1:
        with pf.no_grad():
            for p in m.parameters():
                p.data[...] = 7.0
    m = dist.DataParallel(m)
    res["broadcast_params"] = np.array(all(np.array_equal(p.numpy(), q.numpy()) for p, q in
                                           zip(m.parameters(), build_cnn().parameters())))

    # 20 steps: SGD wrapped after the optimizer (buckets are slices of its flat buffer), Adam
    # wrapped before
    inner = build_cnn()
    opt = make_optimizer("sgd", inner.parameters())
    model = dist.DataParallel(inner, bucket_mb=0.002)
    train_steps(model, opt, 20, rank, world)
    res.update({f"sgd/{k}": v for k, v in params_of(model).items()})
    model = dist.DataParallel(build_cnn(), bucket_mb=0.002)
    opt = make_optimizer("adam", model.parameters())
    train_steps(model, opt, 20, rank, world)
    res.update({f"adam/{k}": v for k, v in params_of(model).items()})

    # synchronised batch norm: gradients and running statistics of the global batch
    model = dist.DataParallel(build_cnn(batchnorm=True), sync_batchnorm=True)
    for step in range(2):
        model.zero_grad()
        x, y = batch(step)
        F.cross_entropy(model(shard(x, rank, world)), shard(y, rank, world)).backward()
    res.update({f"syncbn_grad/{k}": v for k, v in grads_of(model).items()})
    res["syncbn_running_mean"] = model.module[1].running_mean.numpy().copy()
    res["syncbn_running_var"] = model.module[1].running_var.numpy().copy()

    # the sampler's shards, two epochs, through a DataLoader
    ds = pf.data.ArrayDataset(np.arange(23, dtype=np.float32)[:, None], np.arange(23))
    loader = pf.data.DataLoader(ds, 4, sampler=pf.data.DistributedSampler(ds, seed=3))
    for epoch in range(2):
        res[f"shard_epoch{epoch}"] = np.concatenate([yb for _, yb in loader])

    # fit: every rank ends with the same, reduced history
    history, _ = fit_mlp(dist, epochs=2)
    res["history_loss"] = np.array(history["loss"])
    res["history_acc"] = np.array(history["val_accuracy"])
    save(out, "checks", rank, res)


def fit_mlp(dist, epochs, resume=None, checkpoint=None, per_rank_batch=8):
    model = dist.DataParallel(build_mlp())
    ds = mlp_data()
    train = pf.data.DataLoader(ds, per_rank_batch, sampler=pf.data.DistributedSampler(ds, seed=1))
    val = pf.data.DataLoader(ds, 16, sampler=pf.data.DistributedSampler(ds, shuffle=False))
    opt = pf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    callbacks = [Writer()]
    if checkpoint is not None:
        callbacks.append(pf.train.Checkpoint(checkpoint, monitor=None, last=False))
    history = pf.train.fit(model, train, loss_fn=F.cross_entropy, optimizer=opt,
                           epochs=epochs, val_loader=val, callbacks=callbacks,
                           progress=False, resume=resume)
    history["is_writer"] = callbacks[0].is_writer
    return history, model


class Writer(pf.train.Callback):
    def on_train_begin(self, run):
        self.is_writer = run.is_writer


def scenario_resume(dist, out):
    """3 epochs straight; 2 epochs with a checkpoint, then resumed to 3 (same world size)."""
    rank = dist.rank()
    res = {}
    history, model = fit_mlp(dist, epochs=3)
    res.update({f"straight/{k}": v for k, v in params_of(model).items()})
    ckpt = os.path.join(out, "run.safetensors")
    history, model = fit_mlp(dist, epochs=2, checkpoint=ckpt)
    dist.barrier()
    history, model = fit_mlp(dist, epochs=3, resume=ckpt)
    res.update({f"resumed/{k}": v for k, v in params_of(model).items()})
    res["history_loss"] = np.array(history["loss"])
    res["is_writer"] = np.array(history["is_writer"])
    save(out, "resume", rank, res)


def scenario_resume1(dist, out):
    """One rank with the global batch, resumed from the two-rank checkpoint."""
    history, model = fit_mlp(dist, epochs=3, resume=os.path.join(out, "run.safetensors"),
                             per_rank_batch=16)
    res = {f"resumed/{k}": v for k, v in params_of(model).items()}
    res["history_loss"] = np.array(history["loss"])
    save(out, "resume1", dist.rank(), res)


def _failing_run(dist, fail):
    rank, world = dist.rank(), dist.world_size()
    model = dist.DataParallel(build_cnn(), bucket_mb=0.001)
    opt = make_optimizer("sgd", model.parameters())
    first = next(model.parameters())
    for step in range(6):
        if step == 3 and rank == 1:
            if fail == "kill":     # dies in the middle of backward, buckets in flight
                first.register_post_accumulate_grad_hook(
                    lambda p: os.kill(os.getpid(), signal.SIGKILL))
            elif fail == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            elif fail == "hang":
                time.sleep(120)
        x, y = batch(step)
        opt.zero_grad()
        F.cross_entropy(model(shard(x, rank, world)), shard(y, rank, world)).backward()
        opt.step()
    print(f"rank {rank} finished", flush=True)


def scenario_nccl(dist, out):
    """One rank on a GPU through NCCL: collectives on CuPy arrays, DataParallel gradients."""
    import cupy
    res = {}
    a = cupy.arange(6, dtype=cupy.float32)
    res["sum"] = dist.all_reduce(a.copy()).get()
    res["mean"] = dist.all_reduce(a.copy(), "mean").get()
    res["bcast"] = dist.broadcast(a.copy(), 0).get()
    res["host_sum"] = dist.all_reduce(np.arange(3.0))
    dist.barrier()
    for tag, bn in (("plain", False), ("syncbn", True)):
        model = dist.DataParallel(build_cnn(batchnorm=bn).to("cuda"), bucket_mb=0.001,
                                  sync_batchnorm=bn)
        opt = make_optimizer("sgd", model.parameters())
        x, y = batch(0)
        opt.zero_grad()
        F.cross_entropy(model(cupy.asarray(x)), cupy.asarray(y)).backward()
        cupy.cuda.get_current_stream().synchronize()
        for name, p in model.named_parameters():
            res[f"{tag}/{name}"] = p.grad.numpy()
    save(out, "nccl", dist.rank(), res)


def save(out, name, rank, res):
    suffix = "" if rank == 0 else f".rank{rank}"
    np.savez(os.path.join(out, f"{name}{suffix}.npz"), **res)


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    pf.set_num_threads(1)
    dist = pf.distributed
    dist.init("nccl" if scenario == "nccl" else "mpi")
    if scenario in ("kill", "raise", "hang"):
        _failing_run(dist, scenario)
    else:
        globals()[f"scenario_{scenario}"](dist, out)


if __name__ == "__main__":
    main()
