"""softmax_xent cases: softmax cross-entropy forward + backward (loss and dlogits), float32,
mean reduction, on (rows, classes) logits.

Ops: "xent fwd+bwd" is pf.ops.softmax_cross_entropy as a user calls it (it allocates
dlogits, as torch allocates its gradient); "xent fwd+bwd in place" writes the gradient over
the logits (inplace=True), the kernel alone. Competitors: torch CPU (F.cross_entropy then
backward through autograd; cupy is not a competitor here: it has no fused cross-entropy)
and "copy", np.copyto of the logits into a preallocated array: exactly one read and one
write of the logits, the bandwidth floor every implementation is measured against (on a
GPU: cupy.copyto). Work: bytes, logits read once + gradient written once (8 N C).

Every result is checked first against a float64 oracle computed in row chunks (on at most
ORACLE_ROWS rows of the big shapes, so the check needs no multi-GB temporaries).
"""

from __future__ import annotations

import functools

import numpy as np

import pyfast as pf
from pyfast.bench import (PYFAST_PREFIX, Case, Skip, WrongResult, array_module_on, check_close,
                          first_reports, on_each_device, pyfast_impls, to_numpy, torch_impl)

FAMILY = "softmax_xent"
SHAPES = ((256, 1000), (2048, 32000), (8192, 50000))
QUICK_SHAPES = ((256, 1000), (2048, 32000))
HEAVY = (8192, 50000)                  # 1.6 GB of logits: `pyfast bench` only
REFERENCE_MAX_ELEMENTS = 1 << 26       # the NumPy reference's temporaries beyond: gigabytes
ORACLE_ROWS = 256
OPS = ("xent fwd+bwd", "xent fwd+bwd in place")


class Problem:
    """Random float32 logits (N(0, 3^2)) and labels of one shape, with their float64 oracle
    on a sample of rows."""

    def __init__(self, rows, classes):
        self.rows, self.classes = rows, classes
        self.sample = (np.arange(rows) if rows <= ORACLE_ROWS
                       else np.unique(np.linspace(0, rows - 1, ORACLE_ROWS).astype(np.int64)))
        self._on_device = {}

    @functools.cached_property
    def _data(self):
        """Made on first use, so listing the cases allocates nothing."""
        rng = np.random.default_rng([self.rows, self.classes])
        x = rng.standard_normal((self.rows, self.classes), dtype=np.float32)
        x *= 3
        return x, rng.integers(0, self.classes, self.rows)

    @property
    def x(self):
        return self._data[0]

    @property
    def y(self):
        return self._data[1]

    @property
    def shape(self):
        return f"{self.rows}x{self.classes}"

    @property
    def work(self):
        return 8.0 * self.rows * self.classes

    def on(self, device):
        """(logits, labels) on ``device``, copied there once."""
        if device not in self._on_device:
            xp = array_module_on(device)
            self._on_device[device] = (xp.asarray(self.x), xp.asarray(self.y))
        return self._on_device[device]

    @functools.cached_property
    def oracle(self):
        """(mean loss over all rows, dlogits of the sampled rows), float64, in row chunks."""
        total = 0.0
        for r0 in range(0, self.rows, 512):
            x = self.x[r0:r0 + 512].astype(np.float64)
            lse = np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1)) + x.max(axis=1)
            total += float((lse - x[np.arange(len(x)), self.y[r0:r0 + 512]]).sum())
        x = self.x[self.sample].astype(np.float64)
        p = np.exp(x - x.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(x)), self.y[self.sample]] -= 1
        return total / self.rows, p / self.rows

    def check(self, result):
        loss, grad = result
        want_loss, want_grad = self.oracle
        loss = float(to_numpy(loss))
        if not abs(loss - want_loss) <= 1e-5 * abs(want_loss):
            raise WrongResult(f"loss {loss:.7g}, expected {want_loss:.7g}")
        if grad is None:  # the copy floor computes no gradient
            return
        got = to_numpy(grad)[self.sample] if grad.shape[0] == self.rows else to_numpy(grad)
        # float32 rounding of p and of the 1 - p_y cancellation, relative to the 1/N scale
        check_close(got, want_grad, 1e-5 * np.abs(want_grad) + 4e-7 / self.rows)


def _pyfast(backend, inplace):
    def build(problem, device):
        x, y = problem.on(device)
        if not inplace:
            return lambda: pf.ops.softmax_cross_entropy(x, y, backend=backend)
        # The checked first call sees the problem's logits; later ones run on the gradient
        # the previous call left in the buffer: the same work, and the values stay finite.
        buf = x.copy()
        return lambda: pf.ops.softmax_cross_entropy(buf, y, inplace=True, backend=backend)
    return build


def _torch(problem, device):
    import torch
    x, y = problem.on(device)
    tx, ty = torch.from_dlpack(x), torch.from_dlpack(y)
    functional = torch.nn.functional

    def call():
        leaf = tx.detach().requires_grad_()
        loss = functional.cross_entropy(leaf, ty)
        loss.backward()
        return loss.detach(), leaf.grad
    return call


def _copy(problem, device):
    xp = array_module_on(device)
    x, _ = problem.on(device)
    out = xp.empty_like(x)
    oracle_loss = problem.oracle[0]

    def call():
        xp.copyto(out, x)
        return oracle_loss, None  # nothing to check but that it ran
    return call


def _implementations(device, options, op):
    names, skips = pyfast_impls(FAMILY, device, options)
    inplace = op.endswith("in place")
    impls = [(PYFAST_PREFIX + name, _pyfast(name, inplace)) for name in names]
    if not inplace:
        torch_impl(FAMILY, device, _torch, impls, skips)
    impls.append(("copy", _copy))
    return impls, skips


def _device_cases(device, shapes, options):
    reported = set()
    for rows, classes in shapes:
        problem = Problem(rows, classes)
        for op in OPS:
            impls, skips = _implementations(device, options, op)
            yield from first_reports(skips, reported)
            for impl, build in impls:
                if impl == PYFAST_PREFIX + "reference" and rows * classes > REFERENCE_MAX_ELEMENTS:
                    why = (f"the NumPy reference at {problem.shape} needs several GB of "
                           f"temporaries and minutes")
                    yield from first_reports([Skip(FAMILY, impl, device, why)], reported)
                    continue
                yield Case(FAMILY, op, problem.shape, impl, device, work=problem.work, unit="byte",
                           prepare=lambda build=build, problem=problem: build(problem, device),
                           check=problem.check)


def cases(options, shapes=None):
    """The softmax_xent cases on the CPU and, when CuPy sees one, on the GPU. ``shapes``
    overrides the default (rows, classes) list on both devices."""
    yield from on_each_device(FAMILY, _device_cases, options,
                              shapes or (QUICK_SHAPES if options.quick else SHAPES))
