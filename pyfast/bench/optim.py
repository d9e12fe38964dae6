"""optim cases: one optimizer step (Adam, AdamW, SGD with momentum, RMSprop), float32, in
place, on one flat buffer of 1M, 10M or 100M parameters or on 100 tensors of mixed sizes.

Competitors: torch.optim with fused=True (no fused RMSprop exists: reported as skipped),
foreach=True (multi-tensor ops) and foreach=False (the per-parameter loop), each fed the
same gradients and stepping its own copies of the parameters; cupy has no optimizers.
Work: bytes moved per step, 28 per parameter for Adam/AdamW (read p, g, m, v; write p, m,
v) and 20 for SGD-momentum and RMSprop (docs/benchmarking.md), so GB/s compares with the
measured copy bandwidth.

The first step of each implementation, from zero state, is checked against a float64
oracle (the reference backend on a sample of the parameters: the rules are elementwise).
Later steps keep going from there (the step counter advances as in training).
"""

from __future__ import annotations

import functools

import numpy as np

import pyfast as pf
from pyfast.bench import (PYFAST_PREFIX, Case, Skip, array_module_on, check_close, first_reports,
                          on_each_device, pyfast_impls, to_numpy, torch_unavailable)

FAMILY = "optim"
MILLION = 1_000_000
# (label, tensor sizes)
LIST_SIZES = tuple(int(s) for s in np.random.default_rng(100).dirichlet(np.ones(100) * 0.5)
                   * 10 * MILLION + 1)
SHAPES = (("1M", (MILLION,)), ("10M", (10 * MILLION,)), ("100M", (100 * MILLION,)),
          ("100 tensors, 10M", LIST_SIZES))
QUICK_SHAPES = SHAPES[:2]
# pytest benchmarks: 10M flat and the 100-tensor list (1M sits in L3; 100M is 2.8 GB)
BENCH_SHAPES = (SHAPES[1], SHAPES[3])
REFERENCE_MAX_ELEMENTS = 20 * MILLION             # its temporaries beyond: seconds per step
ORACLE_SAMPLE = 100_000

# op -> (pf.ops function, its options, state buffers, torch class, its options, bytes/param)
OPS = {
    "adam": ("adam_step", dict(lr=1e-3), ("exp_avg", "exp_avg_sq"), "Adam", dict(lr=1e-3), 28),
    "adamw": ("adam_step", dict(lr=1e-3, weight_decay=0.01, decoupled=True),
              ("exp_avg", "exp_avg_sq"), "AdamW", dict(lr=1e-3, weight_decay=0.01), 28),
    "sgd-momentum": ("sgd_step", dict(lr=1e-2, momentum=0.9), ("momentum_buf",), "SGD",
                     dict(lr=1e-2, momentum=0.9), 20),
    "rmsprop": ("rmsprop_step", dict(lr=1e-3), ("square_avg",), "RMSprop", dict(lr=1e-3), 20),
}
TORCH_MODES = (("torch-fused", dict(fused=True)), ("torch-foreach", dict(foreach=True)),
               ("torch-loop", dict(foreach=False)))


class Problem:
    """Parameters and gradients (float32) of one shape, flat, and their float64 oracle per op
    on a sample of the parameters."""

    def __init__(self, label, sizes):
        self.label, self.sizes = label, tuple(sizes)
        self.total = int(sum(sizes))
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self._grads = {}

    @functools.cached_property
    def _data(self):
        """(p0, g, sample), made on first use, so listing the cases allocates nothing."""
        rng = np.random.default_rng(len(self.sizes) * 7 + self.sizes[0])
        p0 = rng.standard_normal(self.total, dtype=np.float32)
        g = rng.standard_normal(self.total, dtype=np.float32)
        return p0, g, np.unique(rng.integers(0, self.total, min(ORACLE_SAMPLE, self.total)))

    @property
    def p0(self):
        return self._data[0]

    @property
    def g(self):
        return self._data[1]

    @property
    def sample(self):
        return self._data[2]

    def split(self, flat, xp=np):
        """``flat`` cut into the problem's tensors, each its own (copied) array."""
        flat = xp.asarray(flat)
        return [flat[a:b].copy() for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def grads(self, device):
        """The gradient tensors on ``device`` (made once, read-only to every implementation)."""
        if device not in self._grads:
            xp = array_module_on(device)
            self._grads[device] = self.split(self.g, xp)
        return self._grads[device]

    @functools.lru_cache(maxsize=None)
    def oracle(self, op):
        fn, options, states, *_ = OPS[op]
        p = self.p0[self.sample].astype(np.float64)
        state = {name: np.zeros_like(p) for name in states}
        extra = {"step": 1} if fn != "rmsprop_step" else {}
        getattr(pf.ops, fn)(p, self.g[self.sample].astype(np.float64),
                            *(state[name] for name in states), backend="reference", **extra,
                            **options)
        return p

    def check(self, op, params):
        flat = np.concatenate([to_numpy(t).reshape(-1) for t in params])
        want = self.oracle(op)
        check_close(flat[self.sample], want, 1e-5 * np.abs(want) + 1e-6)


def _pyfast(backend):
    def build(problem, device, op):
        fn, options, state_names, *_ = OPS[op]
        xp = array_module_on(device)
        params, grads = problem.split(problem.p0, xp), problem.grads(device)
        states = [[xp.zeros_like(p) for p in params] for _ in state_names]
        step = getattr(pf.ops, fn)
        counter = [0]

        def call():
            counter[0] += 1
            extra = {"step": counter[0]} if fn != "rmsprop_step" else {}
            step(params, grads, *states, backend=backend, **extra, **options)
            return params
        return call
    return build


def _torch(mode):
    def build(problem, device, op):
        import torch
        *_, cls_name, options, _ = OPS[op]
        xp = array_module_on(device)
        params = [torch.from_dlpack(p).requires_grad_() for p in problem.split(problem.p0, xp)]
        for t, g in zip(params, problem.grads(device)):
            t.grad = torch.from_dlpack(g)
        opt = getattr(torch.optim, cls_name)(params, **options, **mode)

        def call():
            opt.step()
            return [t.detach() for t in params]
        return call
    return build


def _torch_supports(cls_name, mode):
    import torch
    probe = [torch.zeros(4, requires_grad=True)]
    probe[0].grad = torch.zeros(4)
    try:
        getattr(torch.optim, cls_name)(probe, lr=0.1, **mode).step()
    except (TypeError, RuntimeError, ValueError) as exc:
        return str(exc).splitlines()[0]
    return None


def _device_cases(device, shapes, options):
    names, skips = pyfast_impls(FAMILY, device, options)
    yield from skips
    no_torch = torch_unavailable(device)
    if no_torch:
        yield Skip(FAMILY, "torch", device, no_torch)
    reported = set()
    for label, sizes in shapes:
        problem = Problem(label, sizes)
        for op, (_, _, _, cls_name, _, per_param) in OPS.items():
            impls = [(PYFAST_PREFIX + name, _pyfast(name)) for name in names]
            if not no_torch:
                for impl, mode in TORCH_MODES:
                    why = _torch_supports(cls_name, mode)
                    if why is None:
                        impls.append((impl, _torch(mode)))
                    else:
                        yield from first_reports(
                            [Skip(FAMILY, impl, device, f"torch.optim.{cls_name}: {why}")],
                            reported)
            for impl, build in impls:
                if impl == PYFAST_PREFIX + "reference" and problem.total > REFERENCE_MAX_ELEMENTS:
                    yield from first_reports(
                        [Skip(FAMILY, impl, device, "the NumPy reference beyond 20M "
                              "parameters: gigabytes of temporaries, seconds per step")], reported)
                    continue
                yield Case(FAMILY, op, label, impl, device, work=float(per_param * problem.total),
                           unit="byte",
                           prepare=lambda build=build, problem=problem, op=op:
                               build(problem, device, op),
                           check=lambda result, problem=problem, op=op: problem.check(op, result))


def cases(options, shapes=None):
    """The optim cases on the CPU and, when CuPy sees one, on the GPU. ``shapes`` overrides
    the default (label, tensor sizes) list on both devices."""
    yield from on_each_device(FAMILY, _device_cases, options,
                              shapes or (QUICK_SHAPES if options.quick else SHAPES))
