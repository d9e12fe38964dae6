"""Backends: who computes a kernel, loaded lazily, chosen per call.

A backend is a name ("native", "numba", "reference") plus, per device ("cpu", "cuda"), a
namespace of kernel functions. Each backend has a loader module here whose ``load(device)``
returns that namespace or raises ``Unavailable`` with the reason. A namespace lists the
kernel families it implements in ``FAMILIES`` and holds one function per kernel, taking
already-validated arrays with the output preallocated (optim's may check them itself:
pyfast/ops/optim.py). A kernel is named as the ``pf.ops`` function, except (in every
backend): softmax_cross_entropy -> ``softmax_xent``, log_softmax -> ``softmax(..., log)``,
binary_cross_entropy_with_logits -> ``bce_with_logits``, mse_loss -> ``mse``,
linear_cross_entropy -> ``linear_xent``, upsample2d[_backward] ->
``upsample_{nearest,bilinear}2d[_backward]`` (one kernel per mode);
conv_transpose2d_backward has none (pf.ops builds it). Why: docs/architecture.md rule 13.

Choosing (docs/api.md section 1): ``backend=`` argument > ``use_backend`` context >
``PYFAST_BACKEND`` > default order. A backend named explicitly that cannot load raises
``RuntimeError``; one that loads but lacks the family falls through to the next in the
default order.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os

NAMES = ("native", "numba", "reference")
DEVICES = ("cpu", "cuda")
FAMILIES = ("gemm", "conv", "softmax_xent", "optim", "norm", "pool", "resample", "elementwise",
            "linear_xent")

__all__ = ["NAMES", "DEVICES", "FAMILIES", "Unavailable", "available", "use_backend",
           "current", "select", "set_num_threads", "get_num_threads"]


class Unavailable(Exception):
    """Raised by a loader when its backend cannot run on a device; the message says why."""


_loaded: dict = {}  # (name, device) -> namespace or Unavailable
_chosen: dict = {}  # (explicit name or None, family, device) -> (name, namespace)
_context: contextvars.ContextVar = contextvars.ContextVar("pyfast_backend", default=None)
_num_threads: int | None = None


def _check_name(name):
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; valid names are {', '.join(NAMES)}")


def _load(name, device):
    key = (name, device)
    if key not in _loaded:
        loader = importlib.import_module(f"{__name__}.{name}")
        try:
            _loaded[key] = loader.load(device)
        except Unavailable as exc:
            _loaded[key] = exc
        except ImportError as exc:
            _loaded[key] = Unavailable(f"import failed: {exc}")
    return _loaded[key]


def current():
    """The backend name asked for by context or environment, or None for the default order."""
    name = _context.get() or os.environ.get("PYFAST_BACKEND") or None
    if name is not None:
        _check_name(name)
    return name


def select(family, device, backend=None):
    """Return ``(name, namespace)`` of the backend that runs ``family`` on ``device``."""
    explicit = backend if backend is not None else current()
    key = (explicit, family, device)
    hit = _chosen.get(key)
    if hit is not None:
        return hit
    if explicit is None:
        order = NAMES
    else:
        _check_name(explicit)
        ns = _load(explicit, device)
        if isinstance(ns, Unavailable):
            raise RuntimeError(f"backend {explicit!r} cannot run on {device}: {ns}")
        order = NAMES[NAMES.index(explicit):]
    reasons = []
    for name in order:
        ns = _load(name, device)
        if isinstance(ns, Unavailable):
            reasons.append(f"{name}: {ns}")
        elif family in ns.FAMILIES:
            _chosen[key] = (name, ns)
            return name, ns
        else:
            reasons.append(f"{name}: no {family} kernels")
    raise RuntimeError(f"no backend runs {family} on {device} ({'; '.join(reasons)})")


def available():
    """For each backend: whether it loaded (on any device), why not, and its families per
    device; ``reasons`` gives the why-not per device that failed.

    Loads every backend (numba, cupy and the CUDA extension are imported here)."""
    report = {}
    for name in NAMES:
        families, reasons = {}, {}
        for device in DEVICES:
            ns = _load(name, device)
            if isinstance(ns, Unavailable):
                families[device] = []
                reasons[device] = str(ns)
            else:
                families[device] = [f for f in FAMILIES if f in ns.FAMILIES]
        report[name] = {"loaded": len(reasons) < len(DEVICES),
                        "reason": "; ".join(f"{d}: {why}" for d, why in reasons.items()) or None,
                        "families": families, "reasons": reasons}
    return report


@contextlib.contextmanager
def use_backend(name):
    """``with pf.use_backend("numba"): ...`` runs the block's kernels on that backend."""
    _check_name(name)
    token = _context.set(name)
    try:
        yield
    finally:
        _context.reset(token)


def _default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def get_num_threads():
    """Threads used by the native CPU kernels (and Numba's parallel loops)."""
    return _num_threads if _num_threads is not None else _default_threads()


def set_num_threads(n):
    """Set the threads of the CPU kernels of every backend loaded now or later."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _num_threads = n
    for (name, device), ns in _loaded.items():
        if device == "cpu" and not isinstance(ns, Unavailable):
            importlib.import_module(f"{__name__}.{name}").apply_threads(n)
