"""models cases: one training step (forward, loss, backward, SGD-momentum update) of a whole
network, pyfast against the same network in torch CPU on the same threads, as a user of each
library would write it: torch's default NCHW tensors ("torch"), torch with the model and
batch in channels_last ("torch-channels_last", the layout oneDNN's convolutions prefer) and,
with ``Options(compile=True)`` (``pyfast bench models --compile``), ``torch.compile`` of the
NCHW model ("torch-compile"; its first step includes the compilation, outside the timing).

- ResNet-18, 32x32 variant (small_input), 3x32x32 inputs, 10 classes, batch 64;
- DenseNet-121, 32x32 variant, 3x32x32 inputs, 10 classes, batch 32;
- U-Net (base 64, depth 4, transposed-conv upsampling), 1x64x64 inputs, batch 16, BCE loss.

Both start from the same weights (pyfast's initialisation, loaded into the torch twin of
pyfast.bench._torch_models) and see the same batch. The first step's loss is checked
against the same step in torch float64 before anything is timed. Work is the step's
flops: 3x the forward convolutions' and linear layers' 2*MACs (forward, input gradient,
weight gradient), counted on pyfast's forward. images/s = batch / median time.

``profile(name)`` splits a pyfast step's time by kernel family (a timing wrapper around
every pf.ops function) and reports what is left as time outside kernels.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import time

import numpy as np

import pyfast as pf
from pyfast.bench import PYFAST_PREFIX, Case, Skip, WrongResult, installed

FAMILY = "models"


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    batch: int
    shape: tuple          # one input (C, H, W)
    task: str             # "classes" or "masks"
    options: tuple = ()   # (name, value) pairs for the model constructors

    @property
    def label(self):
        return f"b{self.batch}x{'x'.join(map(str, self.shape))}"


NETWORKS = (Network("resnet18", 64, (3, 32, 32), "classes"),
            Network("densenet121", 32, (3, 32, 32), "classes"),
            Network("unet", 16, (1, 64, 64), "masks"))


def build_pyfast(network):
    name, options = network.name, dict(network.options)
    if name == "resnet18":
        return pf.models.resnet18(num_classes=10, small_input=True, **options)
    if name == "densenet121":
        return pf.models.densenet121(num_classes=10, small_input=True, **options)
    if name == "unet":
        return pf.models.UNet(1, 1, **options)
    raise ValueError(f"unknown network {name!r}; known: {', '.join(n.name for n in NETWORKS)}")


def build_torch(network):
    from pyfast.bench import _torch_models as tm
    name, options = network.name, dict(network.options)
    if name == "resnet18":
        return tm.resnet(18, num_classes=10, small_input=True, **options)
    if name == "densenet121":
        return tm.densenet(121, num_classes=10, small_input=True, **options)
    return tm.UNet(1, 1, **options)


@functools.lru_cache(maxsize=None)
def step_flops(network):
    """Flops of one training step: 3x the forward's, counted on one image (they scale with
    the batch) of a fresh pyfast model."""
    model = build_pyfast(network).eval()
    x = np.zeros((1,) + network.shape, np.float32)
    return 3.0 * network.batch * _forward_flops(model, x)


# ---------------------------------------------------------------------------- flops

_FLOP_OPS = ("conv2d", "conv_transpose2d", "matmul")


@contextlib.contextmanager
def _wrapped_ops(names, wrapper):
    """Replace pf.ops functions by wrapper(name, original) for the block (the layers call
    them through the module attribute, so this sees every call)."""
    saved = {n: getattr(pf.ops, n) for n in names}
    try:
        for n, f in saved.items():
            setattr(pf.ops, n, wrapper(n, f))
        yield
    finally:
        for n, f in saved.items():
            setattr(pf.ops, n, f)


def _forward_flops(model, x):
    total = [0.0]

    def count(name, f):
        def counted(*args, **kwargs):
            out = f(*args, **kwargs)
            if name == "matmul":
                a = args[0]
                total[0] += 2.0 * a.shape[0] * a.shape[1] * out.shape[1]
            elif name == "conv2d":
                w = args[1]
                total[0] += 2.0 * out.size * w[0].size
            else:  # transposed: each input element meets w[c] (out/groups x kh x kw)
                w = args[1]
                total[0] += 2.0 * args[0].size * w[0].size
            return out
        return counted

    with _wrapped_ops(_FLOP_OPS, count), pf.no_grad():
        model(x)
    return total[0]


# ---------------------------------------------------------------------------- problems

class Problem:
    """Initial weights, one batch and the float64 torch loss of the first step."""

    def __init__(self, network, seed=0):
        self.network = network
        pf.manual_seed(seed)
        model = build_pyfast(network)
        self.state = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((network.batch,) + network.shape).astype(np.float32)
        if network.task == "classes":
            self.y = rng.integers(0, 10, network.batch).astype(np.int64)
        else:
            self.y = (rng.random((network.batch, 1) + network.shape[1:]) < 0.1).astype(np.float32)
        self.flops = step_flops(network)

    @functools.cached_property
    def loss64(self):
        import torch
        model = build_torch(self.network).double()
        model.load_state_dict({k: torch.from_numpy(v.astype(np.float64) if v.dtype.kind == "f"
                                                   else v) for k, v in self.state.items()})
        model.train()
        with torch.no_grad():
            out = model(torch.from_numpy(self.x.astype(np.float64)))
            return float(_torch_loss(out, torch.from_numpy(self.y), self.network.task))

    def check(self, loss):
        want = self.loss64
        if not abs(loss - want) <= 1e-3 * max(1.0, abs(want)):
            raise WrongResult(f"first-step loss {loss:.7g}, float64 torch says {want:.7g}")


def _torch_loss(out, y, task):
    import torch
    if task == "classes":
        return torch.nn.functional.cross_entropy(out, y)
    return torch.nn.functional.binary_cross_entropy_with_logits(out, y.to(out.dtype))


def pyfast_step(problem, backend=None):
    """A function running one training step of a fresh pyfast model; returns the loss."""
    from pyfast.nn import functional as F

    model = build_pyfast(problem.network)
    model.load_state_dict(problem.state)
    model.train()
    optimizer = pf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = F.cross_entropy if problem.network.task == "classes" else \
        F.binary_cross_entropy_with_logits
    x, y = problem.x, problem.y

    def step():
        with pf.use_backend(backend) if backend else contextlib.nullcontext():
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.item()

    return step


TORCH_MODES = ("nchw", "channels_last", "compile")
TORCH_IMPLS = {"nchw": "torch", "channels_last": "torch-channels_last",
               "compile": "torch-compile"}


def torch_step(problem, mode="nchw"):
    """One training step of a fresh torch twin: ``mode`` "nchw" (torch's default layout),
    "channels_last" (model and batch converted once, as torch's tuning guide says) or
    "compile" (``torch.compile`` of the NCHW model, default settings)."""
    import torch
    if mode not in TORCH_MODES:
        raise ValueError(f"mode must be one of {', '.join(TORCH_MODES)}, got {mode!r}")
    model = build_torch(problem.network)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in problem.state.items()})
    model.train()
    x, y = torch.from_numpy(problem.x), torch.from_numpy(problem.y)
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if mode == "compile" else model
    task = problem.network.task

    def step():
        loss = _torch_loss(forward(x), y, task)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _backends(options):
    """pyfast backends to time: native alone unless one was asked for (a whole network on
    the reference or numba backend takes minutes per step)."""
    if tuple(options.backends) == tuple(pf.backends.NAMES):
        return ("native",)
    return tuple(options.backends)


def cases(options, networks=None):
    """A Case per (network, implementation) on the CPU. ``networks`` overrides NETWORKS
    (names); ``options.quick`` keeps ResNet-18 only."""
    chosen = [n for n in NETWORKS if networks is None or n.name in networks]
    if options.quick and networks is None:
        chosen = chosen[:1]
    torch_ok = installed("torch")
    if not torch_ok:
        yield Skip(FAMILY, "torch", "cpu", "torch is not installed")
    for backend in _backends(options):
        try:
            pf.backends.select("conv", "cpu", backend)
        except RuntimeError as exc:
            yield Skip(FAMILY, PYFAST_PREFIX + backend, "cpu", str(exc))
    names = [b for b in _backends(options) if _loads(b)]
    modes = [m for m in TORCH_MODES if m != "compile" or options.compile]
    for network in chosen:
        problem = _LazyProblem(network)
        impls = [(PYFAST_PREFIX + b, functools.partial(_pyfast_prepare, problem, b))
                 for b in names]
        if torch_ok:
            impls += [(TORCH_IMPLS[m], functools.partial(_torch_prepare, problem, m))
                      for m in modes]
        for impl, prepare in impls:
            yield Case(FAMILY, f"{network.name} train step", network.label, impl, "cpu",
                       work=problem.flops, unit="flop", prepare=prepare,
                       check=problem.check_result)


def _loads(backend):
    try:
        pf.backends.select("conv", "cpu", backend)
        return True
    except RuntimeError:
        return False


class _LazyProblem:
    """Builds the Problem (weights, flops, the float64 loss) on first use, so listing cases
    is cheap."""

    def __init__(self, network):
        self.network = network

    @functools.cached_property
    def problem(self):
        return Problem(self.network)

    @property
    def flops(self):
        return step_flops(self.network)

    def check_result(self, loss):
        self.problem.check(loss)


def _pyfast_prepare(lazy, backend):
    return pyfast_step(lazy.problem, backend)


def _torch_prepare(lazy, mode):
    return torch_step(lazy.problem, mode)


# ---------------------------------------------------------------------------- profile

OP_FAMILIES = {
    "conv2d": "conv", "conv2d_backward": "conv", "conv_transpose2d": "conv",
    "conv_transpose2d_backward": "conv", "matmul": "gemm",
    "softmax_cross_entropy": "softmax_xent", "softmax": "softmax_xent",
    "log_softmax": "softmax_xent", "binary_cross_entropy_with_logits": "softmax_xent",
    "mse_loss": "softmax_xent",
    "sgd_step": "optim", "adam_step": "optim", "rmsprop_step": "optim",
    "batch_norm": "norm", "batch_norm_backward": "norm",
    "max_pool2d": "pool", "max_pool2d_backward": "pool", "avg_pool2d": "pool",
    "avg_pool2d_backward": "pool", "adaptive_avg_pool2d": "pool",
    "adaptive_avg_pool2d_backward": "pool", "upsample2d": "resample",
    "upsample2d_backward": "resample",
}


def profile(network, steps=2, backend=None):
    """Seconds per pyfast training step of ``network`` (a name of NETWORKS or a Network)
    spent in each kernel family (time inside pf.ops calls), plus "outside kernels" (Python,
    autograd, NumPy glue) and "total". Activations, dropout and add count as "elementwise"."""
    if not isinstance(network, Network):
        name = network
        network = next((n for n in NETWORKS if n.name == name), None)
        if network is None:
            raise ValueError(f"unknown network {name!r}; known: "
                             f"{', '.join(n.name for n in NETWORKS)}")
    step = pyfast_step(Problem(network), backend)
    step()  # warm-up: first-call allocations, lazy loading
    spent = collections.defaultdict(float)
    depth = [0]

    def timed(op, f):
        family = OP_FAMILIES.get(op, "elementwise")

        def call(*args, **kwargs):
            if depth[0]:      # an op calling another op counts once
                return f(*args, **kwargs)
            depth[0] += 1
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[family] += time.perf_counter() - start
                depth[0] -= 1
        return call

    names = [n for n in pf.ops.__all__ if callable(getattr(pf.ops, n))]
    with _wrapped_ops(names, timed):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        total = (time.perf_counter() - start) / steps
    out = {k: v / steps for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    out["outside kernels"] = total - sum(out.values())
    out["total"] = total
    return out
