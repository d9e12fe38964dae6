"""DataParallel: one model replica per rank, gradients averaged over the ranks in backward.

Wrapping broadcasts rank 0's parameters and buffers (after checking that every rank built the
same parameter names, shapes and dtypes), and then changes nothing else: the wrapper shares
the module's parameter, buffer and child registries, so ``parameters()``, ``state_dict()``
(same keys, no ``module.`` prefix), ``load_state_dict`` and attribute access are the
module's own; ``.module`` is the module.

Gradient reduction overlaps backward (the PyTorch DDP scheme, on pyfast's flat buffers):
- buckets are contiguous slices of the flat gradient buffers the optimizers keep
  (docs/architecture.md rule 10), found from the parameters' gradient views when backward starts;
  a parameter whose gradient is not in such a buffer gets one from DataParallel. A bucket
  holds about ``bucket_mb`` MiB of neighbouring parameters, taken from the end of the buffer,
  since backward produces the last layers' gradients first;
- each parameter's post-accumulate-grad hook (pyfast.tensor) counts down its bucket; a
  bucket whose gradients are all complete starts a non-blocking all-reduce, buckets starting
  strictly in order so that every rank issues the same collectives in the same order;
- at the end of backward the remaining buckets start (a parameter no gradient reached counts
  as zero), every all-reduce is waited for, and the sums are scaled by 1/world_size.
``stats`` reports what was reduced and how long backward's end waited for it.

With ``sync_batchnorm=True`` the batch-norm layers normalise with the statistics of the whole
global batch (see sync_batchnorm.py); otherwise their running statistics stay per rank, as
torch DDP's default. Parameters are those of the module at wrap time.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import weakref

import numpy as np

from pyfast._arrays import is_cupy
from pyfast.nn.module import Module
from pyfast.tensor import is_grad_enabled, register_backward_end_hook

from .comm import require

__all__ = ["DataParallel"]

_SHARED = ("_parameters", "_buffers", "_non_persistent_buffers", "_modules")


class DataParallel(Module):
    """``DataParallel(module, bucket_mb=25, sync_batchnorm=False)`` (docs/api.md section 12);
    needs ``pf.distributed.init()`` first."""

    def __init__(self, module, bucket_mb=25, sync_batchnorm=False):
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel wraps a pf.nn.Module, got {type(module).__name__}")
        if isinstance(module, DataParallel):
            raise ValueError("module is already a DataParallel")
        if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float)) or \
                not math.isfinite(bucket_mb) or bucket_mb <= 0:
            raise ValueError(f"bucket_mb must be a positive number, got {bucket_mb!r}")
        group = require("DataParallel")
        # The wrapper is a view of the module (see the module doc); Module.__init__ is not
        # called, it would make registries of its own.
        for name in _SHARED:
            object.__setattr__(self, name, getattr(module, name))
        object.__setattr__(self, "training", module.training)
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "sync_batchnorm", bool(sync_batchnorm))
        if group.size > 1:
            _check_same_model(group, module)
            with _no_grad():
                for t in _states(module):
                    group.broadcast(t.data, 0)
        params = [p for p in module.parameters() if p.requires_grad]
        object.__setattr__(self, "_reducer",
                           _Reducer(group, params, int(bucket_mb * 2 ** 20)))
        if sync_batchnorm:
            from .sync_batchnorm import enable_sync_batchnorm
            enable_sync_batchnorm(module, group)

    # -- the module's API, unchanged --------------------------------------------------
    def __getattr__(self, name):
        module = self.__dict__.get("module")
        if module is None:
            raise AttributeError(name)
        return getattr(module, name)

    def __setattr__(self, name, value):
        setattr(self.module, name, value)

    def __delattr__(self, name):
        delattr(self.module, name)

    def forward(self, *args, **kwargs):
        reducer = self._reducer
        if reducer.active:          # the last backward raised part way: drop its state
            reducer.reset()
        if self.training and reducer.sync and is_grad_enabled():
            reducer.arm()
        return self.module(*args, **kwargs)

    def train(self, mode=True):
        self.module.train(mode)
        object.__setattr__(self, "training", self.module.training)
        return self

    def apply(self, fn):
        self.module.apply(fn)
        return self

    def __repr__(self):
        body = repr(self.module).replace("\n", "\n  ")
        return f"DataParallel(\n  (module): {body}\n)"

    # -- data-parallel extras -----------------------------------------------------------
    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside this block keep their gradients local (accumulating);
        the first backward after it averages the accumulated sums, as torch DDP."""
        reducer = self._reducer
        previous, reducer.sync = reducer.sync, False
        try:
            yield
        finally:
            reducer.sync = previous

    @property
    def stats(self):
        """{"buckets", "bucket_sizes" (elements), "backward_passes", "reduced_bytes",
        "wait_s" (total time backward's end waited for all-reduces), "last_wait_s",
        "last_inflight_s" (last backward: from its first bucket start to its end)}."""
        r = self._reducer
        return dict(r.stats, buckets=len(r.buckets), bucket_sizes=[b.flat.size for b in r.buckets])


def _no_grad():
    from pyfast.tensor import no_grad
    return no_grad()


def _states(module):
    """Parameters then buffers, in registration order (the same on every rank)."""
    return [t for t in module.parameters()] + [b for b in module.buffers()]


def _check_same_model(group, module):
    """ValueError on every rank when the ranks built different parameters or buffers."""
    mine = [(kind, name, tuple(t.shape), t.dtype.str) for kind, items in
            (("parameter", module.named_parameters()), ("buffer", module.named_buffers()))
            for name, t in items]
    every = group.all_gather_object(mine)
    reference = every[0]
    for r, theirs in enumerate(every[1:], 1):
        if theirs == reference:
            continue
        for a, b in zip(reference, theirs):
            if a != b:
                raise ValueError(
                    f"DataParallel: the model differs across ranks: rank 0 has {a[0]} "
                    f"{a[1]!r} of shape {a[2]} ({np.dtype(a[3])}), rank {r} has {b[0]} "
                    f"{b[1]!r} of shape {b[2]} ({np.dtype(b[3])})")
        raise ValueError(f"DataParallel: the model differs across ranks: rank 0 has "
                         f"{len(reference)} parameters and buffers, rank {r} has {len(theirs)}")


# ---------------------------------------------------------------------------- buckets

def _address(a):
    return a.data.ptr if is_cupy(a) else a.__array_interface__["data"][0]


def _flat_root(a):
    """(the array owning ``a``'s memory, and ``a``'s element offset in it)."""
    root = a
    while isinstance(root.base, type(a)):
        root = root.base
    if root is not a and (not root.flags.c_contiguous or root.dtype != a.dtype):
        root = a
    offset = (_address(a) - _address(root)) // a.itemsize
    return root, offset


class _Bucket:
    __slots__ = ("flat", "members", "min_index")

    def __init__(self, flat, members):
        self.flat, self.members = flat, members
        self.min_index = min(members)


def _grad_storage(p):
    g = p.grad
    return g.data if g is not None else p.grad_storage


def _zeros(like, n):
    if is_cupy(like):
        import cupy
        with like.device:
            return cupy.zeros(n, like.dtype)
    return np.zeros(n, like.dtype)


class _Reducer:
    def __init__(self, group, params, bucket_bytes):
        self.group, self.params, self.bucket_bytes = group, params, bucket_bytes
        self.reducer = group.bucket_reducer()
        self.layout = None       # each parameter's gradient array when the buckets were made
        self.buckets, self.bucket_of = [], []
        self.armed = False       # a training forward ran: the next backward reduces
        self.active = False      # that backward has begun reducing
        self.sync = True         # False inside no_sync()
        self.pending, self.next, self.to_scale = [], 0, []
        self.started_at = None
        self.stats = {"backward_passes": 0, "reduced_bytes": 0, "wait_s": 0.0,
                      "last_wait_s": 0.0, "last_inflight_s": 0.0}
        ref = weakref.ref(self)
        handles = [p.register_post_accumulate_grad_hook(functools.partial(_on_ready, ref, i))
                   for i, p in enumerate(params)]
        handles.append(register_backward_end_hook(functools.partial(_on_end, ref)))
        weakref.finalize(self, _remove_hooks, handles)

    def arm(self):
        if self.armed:
            return
        # every gradient gets a home in a flat buffer before backward writes it
        missing = [p for p in self.params if p.grad is None and p.grad_storage is None]
        if missing:
            by_kind = {}
            for p in missing:
                by_kind.setdefault((p.data.dtype.str, str(p.device)), []).append(p)
            for group in by_kind.values():
                flat = _zeros(group[0].data, sum(p.data.size for p in group))
                start = 0
                for p in group:
                    p.grad_storage = flat[start:start + p.data.size].reshape(p.data.shape)
                    start += p.data.size
        self.armed = True

    def reset(self):
        self.reducer.wait_all()
        self.active = self.armed = False
        self.to_scale = []

    def begin(self):
        storage = [_grad_storage(p) for p in self.params]
        for i, a in enumerate(storage):
            if not a.flags.c_contiguous:     # a gradient assigned by hand: buckets need rows
                p = self.params[i]
                p.grad = storage[i] = a.copy(order="C")
        if self.layout is None or any(a is not b for a, b in zip(storage, self.layout)):
            self._build(storage)
        self.pending = [len(b.members) for b in self.buckets]
        self.next, self.to_scale, self.started_at = 0, [], None
        self.active = True

    def _build(self, storage):
        """Buckets: runs of parameters contiguous in one flat buffer, cut into pieces of
        about bucket_bytes from the buffer's end, ordered by when backward completes them."""
        roots = {}
        for i, a in enumerate(storage):
            root, offset = _flat_root(a)
            roots.setdefault(id(root), (root, []))[1].append((offset, i))
        buckets = []
        for root, entries in roots.values():
            entries.sort()
            root, run, run_bytes = root.reshape(-1), [], 0
            for offset, i in reversed(entries):   # from the end of the buffer
                nbytes = storage[i].size * root.itemsize
                if run and (offset + storage[i].size != run[-1][0] or
                            run_bytes + nbytes > self.bucket_bytes):
                    buckets.append(_make_bucket(root, run, storage))
                    run, run_bytes = [], 0
                run.append((offset, i))
                run_bytes += nbytes
            if run:
                buckets.append(_make_bucket(root, run, storage))
        buckets.sort(key=lambda b: -b.min_index)
        if self.group.size > 1:
            mine = [(b.flat.size, b.flat.dtype.str) for b in buckets]
            every = self.group.all_gather_object(mine)
            if any(theirs != every[0] for theirs in every):
                raise RuntimeError(f"DataParallel: the ranks laid out their gradients "
                                   f"differently (bucket sizes {every}); build the model and "
                                   f"the optimizer the same way on every rank")
        self.buckets = buckets
        self.bucket_of = [0] * len(self.params)
        for k, b in enumerate(buckets):
            for i in b.members:
                self.bucket_of[i] = k
        self.layout = storage

    def launch_ready(self):
        buckets, pending = self.buckets, self.pending
        while self.next < len(buckets) and pending[self.next] == 0:
            bucket = buckets[self.next]
            for i in bucket.members:
                p = self.params[i]
                if p.grad is None:        # no gradient reached it: it counts as zero
                    view = self.layout[i]
                    view.fill(0)
                    p.grad = view
            if self.started_at is None:
                self.started_at = time.perf_counter()
            if not self.reducer.start(bucket.flat) and self.group.size > 1:
                self.to_scale.append(bucket.flat)
            self.stats["reduced_bytes"] += bucket.flat.nbytes
            self.next += 1

    def finish(self):
        for k in range(self.next, len(self.buckets)):
            self.pending[k] = 0
        self.launch_ready()
        t0 = time.perf_counter()
        self.reducer.wait_all()
        t1 = time.perf_counter()
        inv = 1.0 / self.group.size
        for flat in self.to_scale:
            flat *= inv
        s = self.stats
        s["backward_passes"] += 1
        s["last_wait_s"] = t1 - t0
        s["wait_s"] += t1 - t0
        s["last_inflight_s"] = t0 - self.started_at if self.started_at is not None else 0.0
        self.active = self.armed = False
        self.to_scale = []


def _make_bucket(root, run, storage):
    lo = run[-1][0]
    hi = run[0][0] + storage[run[0][1]].size
    return _Bucket(root[lo:hi], [i for _, i in run])


def _on_ready(ref, i, leaf):
    r = ref()
    if r is None or not r.armed:
        return
    if not r.active:
        r.begin()
    k = r.bucket_of[i]
    r.pending[k] -= 1
    if r.pending[k] == 0 and k == r.next:
        r.launch_ready()
    else:
        r.reducer.progress()


def _on_end(ref):
    r = ref()
    if r is None or not r.armed:
        return
    if not r.active:
        r.begin()
    r.finish()


def _remove_hooks(handles):
    for h in handles:
        h.remove()
