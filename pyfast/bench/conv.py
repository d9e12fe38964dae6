"""conv cases: forward and forward+backward of ResNet-18/50 and U-Net layer shapes, float32.

Every pyfast backend that runs conv on the device, against torch (CPU, same threads; on a GPU
torch's cuDNN). "fwd" is y = conv2d(x, w) + bias; "fwd+bwd" is that plus the three gradients
(x, w, bias) of a given gy: pyfast's conv2d then conv2d_backward, torch's conv2d then
torch.autograd.grad (fresh gradients, nothing accumulated). The transposed row is
conv_transpose2d the same way. Work (docs/benchmarking.md): 2*N*K*C/groups*kh*kw*OH*OW flops per
pass (for a transposed convolution, of the convolution it is the input gradient of); fwd+bwd
counts three passes (forward, input gradient, weight gradient), the bias not counted.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import zlib

import numpy as np

import pyfast as pf
from pyfast.bench import PYFAST_PREFIX, Case, check_close, on_each_device, pyfast_impls, torch_impl

FAMILY = "conv"
FWD, FWD_BWD = "fwd", "fwd+bwd"
OPS = (FWD, FWD_BWD)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer shape. For a transposed layer, c is its input channels and k its output
    channels; w is (c, k, kh, kw) as torch's ConvTranspose2d stores it."""
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    kernel: int
    stride: int = 1
    padding: int = 0
    transposed: bool = False

    @property
    def label(self):
        kind = "T" if self.transposed else ""
        return (f"{self.name} N{self.n} {self.c}->{self.k} {self.h}x{self.w} "
                f"{kind}{self.kernel}x{self.kernel}/{self.stride}")

    @property
    def out_hw(self):
        if self.transposed:
            return ((self.h - 1) * self.stride - 2 * self.padding + self.kernel,
                    (self.w - 1) * self.stride - 2 * self.padding + self.kernel)
        return ((self.h + 2 * self.padding - self.kernel) // self.stride + 1,
                (self.w + 2 * self.padding - self.kernel) // self.stride + 1)

    @property
    def flops(self):
        """One pass: of the convolution itself, or of the one a transposed layer inverts."""
        small = (self.h * self.w) if self.transposed else (self.out_hw[0] * self.out_hw[1])
        return 2.0 * self.n * self.k * self.c * self.kernel ** 2 * small


LAYERS = (
    Layer("resnet18 conv2_x", 32, 64, 32, 32, 64, 3, 1, 1),
    Layer("resnet18 conv3_x", 32, 128, 16, 16, 128, 3, 1, 1),
    Layer("resnet18 conv4_x", 8, 256, 14, 14, 256, 3, 1, 1),
    Layer("resnet50 1x1", 8, 256, 56, 56, 64, 1, 1, 0),
    Layer("resnet stem", 8, 3, 224, 224, 64, 7, 2, 3),
    Layer("unet up", 8, 128, 32, 32, 64, 2, 2, 0, transposed=True),
)
QUICK_LAYERS = (LAYERS[0], LAYERS[3], LAYERS[5])
CUDA_LAYERS = (
    Layer("resnet50 conv3_x", 64, 128, 28, 28, 128, 3, 1, 1),
    Layer("resnet50 conv4_x", 64, 256, 14, 14, 256, 3, 1, 1),
    Layer("resnet50 1x1", 64, 256, 56, 56, 64, 1, 1, 0),
    Layer("resnet stem", 64, 3, 224, 224, 64, 7, 2, 3),
    Layer("unet up", 32, 128, 64, 64, 64, 2, 2, 0, transposed=True),
)
CUDA_QUICK_LAYERS = CUDA_LAYERS[:2]


class Problem:
    """Random float32 tensors of one layer, shared by every implementation, and the float64
    oracle of each op (with the scale of its rounding error), computed once."""

    def __init__(self, layer):
        rng = np.random.default_rng(zlib.crc32(layer.label.encode()))
        self.layer = layer
        w_shape = ((layer.c, layer.k) if layer.transposed else (layer.k, layer.c)) \
            + (layer.kernel, layer.kernel)
        scale = 1.0 / np.sqrt(layer.c * layer.kernel ** 2)
        self.x = rng.uniform(-1, 1, (layer.n, layer.c, layer.h, layer.w)).astype(np.float32)
        self.w = (rng.uniform(-1, 1, w_shape) * scale).astype(np.float32)
        self.bias = rng.uniform(-1, 1, layer.k).astype(np.float32)
        self.gy = rng.uniform(-1, 1, (layer.n, layer.k) + layer.out_hw).astype(np.float32)
        self._on_device = {}

    @property
    def params(self):
        return dict(stride=self.layer.stride, padding=self.layer.padding)

    def tensors(self, device):
        """x, w, bias, gy on ``device`` (copied there once)."""
        if device not in self._on_device:
            xp = np if device == "cpu" else _cupy()
            self._on_device[device] = types.SimpleNamespace(
                **{name: xp.asarray(getattr(self, name)) for name in ("x", "w", "bias", "gy")})
        return self._on_device[device]

    def _reference(self, op, x, w, bias, gy):
        fwd = pf.ops.conv_transpose2d if self.layer.transposed else pf.ops.conv2d
        bwd = (pf.ops.conv_transpose2d_backward if self.layer.transposed
               else pf.ops.conv2d_backward)
        y = fwd(x, w, bias, backend="reference", **self.params)
        if op == FWD:
            return (y,)
        return (y,) + tuple(bwd(gy, x, w, backend="reference", **self.params))

    @functools.lru_cache(maxsize=None)
    def oracle(self, op):
        """The float64 results of ``op`` and elementwise bounds on a float32 result's error:
        (terms + 2) * eps * (the same sums over absolute values)."""
        exact = self._reference(op, *(a.astype(np.float64)
                                      for a in (self.x, self.w, self.bias, self.gy)))
        scale = self._reference(op, *(np.abs(a.astype(np.float64))
                                      for a in (self.x, self.w, self.bias, self.gy)))
        lay = self.layer
        oh, ow = lay.out_hw
        small = lay.h * lay.w if lay.transposed else oh * ow
        # terms summed per element: y and gx over channels x taps, gw and gb over positions
        terms = (lay.c * lay.kernel ** 2 + 1, lay.k * lay.kernel ** 2, lay.n * small,
                 lay.n * oh * ow)
        eps = np.finfo(np.float32).eps
        return [(e, (t + 2) * eps * s) for e, s, t in zip(exact, scale, terms)]

    def check(self, op, result):
        for got, (expected, bound) in zip(result, self.oracle(op)):
            check_close(got, expected, bound)


def _cupy():
    import cupy
    return cupy


def _pyfast(backend):
    def build(problem, device, op):
        t, p = problem.tensors(device), problem.params
        lay = problem.layer
        fwd = pf.ops.conv_transpose2d if lay.transposed else pf.ops.conv2d
        bwd = pf.ops.conv_transpose2d_backward if lay.transposed else pf.ops.conv2d_backward
        if op == FWD:
            return lambda: (fwd(t.x, t.w, t.bias, backend=backend, **p),)

        def forward_backward():
            y = fwd(t.x, t.w, t.bias, backend=backend, **p)
            return (y,) + tuple(bwd(t.gy, t.x, t.w, backend=backend, **p))
        return forward_backward
    return build


def _torch(problem, device, op):
    import torch
    F = torch.nn.functional
    t, p = problem.tensors(device), problem.params
    conv = F.conv_transpose2d if problem.layer.transposed else F.conv2d
    x, w, bias, gy = (torch.from_dlpack(v) for v in (t.x, t.w, t.bias, t.gy))
    if op == FWD:
        return lambda: (conv(x, w, bias, **p),)
    xg, wg, bg = (v.detach().requires_grad_() for v in (x, w, bias))

    def forward_backward():
        y = conv(xg, wg, bg, **p)
        return (y.detach(),) + torch.autograd.grad(y, (xg, wg, bg), gy)
    return forward_backward


def _implementations(device, options):
    names, skips = pyfast_impls(FAMILY, device, options)
    impls = [(PYFAST_PREFIX + name, _pyfast(name)) for name in names]
    torch_impl(FAMILY, device, _torch, impls, skips)
    return impls, skips


def _device_cases(device, layers, options):
    impls, skips = _implementations(device, options)
    yield from skips
    for layer in layers:
        problem = Problem(layer)
        for op in OPS:
            work = layer.flops * (1 if op == FWD else 3)
            for impl, build in impls:
                yield Case(FAMILY, op, layer.label, impl, device, work=work, unit="flop",
                           prepare=lambda build=build, op=op, problem=problem:
                               build(problem, device, op),
                           check=lambda result, op=op, problem=problem: problem.check(op, result))


def cases(options, layers=None):
    """The conv cases on the CPU and, when CuPy sees one, on the GPU; ``layers`` overrides
    the default shapes on both devices."""
    yield from on_each_device(FAMILY, _device_cases, options,
                              layers or (QUICK_LAYERS if options.quick else LAYERS),
                              layers or (CUDA_QUICK_LAYERS if options.quick else CUDA_LAYERS))
