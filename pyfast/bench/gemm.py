"""gemm cases: out = a @ b and the fused epilogue out = relu(a @ b + bias), float32, square.

Every pyfast backend that runs gemm on the device, against numpy (OpenBLAS) and torch on the
CPU, and against cupy (cuBLAS) and torch on a GPU. Each implementation writes into a
preallocated output. The fused row's competitors do what a user without pyfast writes: the
matmul, then the bias add and the ReLU as separate in-place passes (torch: addmm, relu_).
Work: 2*M*N*K flops, the epilogue not counted.
"""

from __future__ import annotations

import functools
import types

import numpy as np

import pyfast as pf
from pyfast.bench import (PYFAST_PREFIX, Case, array_module_on, check_close, on_each_device,
                          pyfast_impls, torch_impl)

FAMILY = "gemm"
SIZES = (64, 128, 256, 512, 1024, 2048)
QUICK_SIZES = (128, 512, 1024)
CUDA_SIZES = (1024, 2048, 4096)   # a GPU needs big products to fill it
CUDA_QUICK_SIZES = (4096,)
MATMUL, FUSED = "matmul", "matmul+bias+relu"
OPS = (MATMUL, FUSED)


class Problem:
    """Random float32 operands of one size, shared by every implementation on every device,
    and the float64 oracle of each op, computed once."""

    def __init__(self, n):
        rng = np.random.default_rng(n)
        self.n = n
        self.a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
        self.b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
        self.bias = rng.uniform(-1, 1, n).astype(np.float32)
        self._on_device = {}
        self._oracle = {}

    def operands(self, device):
        """a, b, bias on ``device`` (copied there once) and a fresh output to write."""
        xp = array_module_on(device)
        if device not in self._on_device:
            self._on_device[device] = tuple(xp.asarray(x) for x in (self.a, self.b, self.bias))
        a, b, bias = self._on_device[device]
        return types.SimpleNamespace(a=a, b=b, bias=bias, out=xp.empty_like(a))

    @functools.cached_property
    def _product(self):
        """a @ b in float64 and |a| @ |b|, the scale of its rounding error."""
        a, b = self.a.astype(np.float64), self.b.astype(np.float64)
        return a @ b, np.abs(a) @ np.abs(b)

    def check(self, op, result):
        if op not in self._oracle:
            expected, magnitude = self._product
            if op == FUSED:
                bias = self.bias.astype(np.float64)
                expected, magnitude = np.maximum(expected + bias, 0.0), magnitude + np.abs(bias)
            # Rounding-error bound of a float32 sum of n + 1 terms in any order (ReLU does not
            # widen it); wrong indexing or a lost block is off by O(sqrt(n)), far above it.
            self._oracle[op] = (expected, (self.n + 2) * np.finfo(np.float32).eps * magnitude)
        check_close(result, *self._oracle[op])


def _pyfast(backend):
    def build(x, op):
        fused = op == FUSED
        return lambda: pf.ops.matmul(x.a, x.b, bias=x.bias if fused else None,
                                     activation="relu" if fused else None, out=x.out,
                                     backend=backend)
    return build


def _array_library(xp):
    """numpy on the CPU, cupy on the GPU: the same calls."""
    def build(x, op):
        if op == MATMUL:
            return lambda: xp.matmul(x.a, x.b, out=x.out)

        def matmul_then_bias_relu():
            xp.matmul(x.a, x.b, out=x.out)
            xp.add(x.out, x.bias, out=x.out)
            return xp.maximum(x.out, 0, out=x.out)
        return matmul_then_bias_relu
    return build


def _torch(x, op):
    import torch
    a, b, bias, out = (torch.from_dlpack(v) for v in (x.a, x.b, x.bias, x.out))
    if op == MATMUL:
        return lambda: torch.matmul(a, b, out=out)
    return lambda: torch.addmm(bias, a, b, out=out).relu_()


def _implementations(device, options):
    """(impl name, builder) for ``device``, and the skips."""
    names, skips = pyfast_impls(FAMILY, device, options)
    impls = [(PYFAST_PREFIX + name, _pyfast(name)) for name in names]
    impls.append(("numpy" if device == "cpu" else "cupy",
                  _array_library(array_module_on(device))))
    torch_impl(FAMILY, device, _torch, impls, skips)
    return impls, skips


def _device_cases(device, sizes, options):
    impls, skips = _implementations(device, options)
    yield from skips
    for n in sizes:
        problem = Problem(n)
        for op in OPS:
            for impl, build in impls:
                yield Case(FAMILY, op, f"{n}x{n}x{n}", impl, device, work=2.0 * n ** 3,
                           unit="flop",
                           prepare=lambda build=build, op=op, problem=problem:
                               build(problem.operands(device), op),
                           check=lambda result, op=op, problem=problem: problem.check(op, result))


def cases(options, sizes=None):
    """The gemm cases on the CPU and, when CuPy sees one, on the GPU. ``sizes`` overrides
    the default square sizes on both devices."""
    yield from on_each_device(FAMILY, _device_cases, options,
                              sizes or (QUICK_SIZES if options.quick else SIZES),
                              sizes or (CUDA_QUICK_SIZES if options.quick else CUDA_SIZES))
