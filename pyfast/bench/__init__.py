"""pyfast.bench: pyfast's kernels timed against the libraries a user would otherwise call
and against the machine's measured peaks, side by side in one run (docs/benchmarking.md).

A kernel family plugs in with one module, ``pyfast.bench.<family>``, whose
``cases(options)`` yields a ``Case`` for each (op, shape, implementation) that can run here
and a ``Skip`` saying why for each that cannot. ``run`` checks every case's first result
against a float64 oracle, times it (warm-up, then samples until a time budget and a minimum
count; median and interquartile spread) with every library on the same thread count, and
turns the times into rows: GFLOP/s or GB/s, percent of the measured peak, and the speed
ratio against each competitor timed in the same group (family, op, shape, device, threads).

Importing this module is cheap: torch, numba and cupy load when a case is built or run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import pkgutil
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

import pyfast as pf
from pyfast._outputs import write_bytes_atomic

__all__ = ["Options", "Case", "Skip", "Row", "WrongResult", "families", "load_family",
           "collect", "pyfast_impls", "installed", "cuda_unavailable", "array_module_on",
           "torch_unavailable", "torch_impl", "on_each_device", "first_reports", "limit_threads",
           "measure", "blocking", "run", "measure_peaks", "machine_info", "notes",
           "check_close", "to_numpy", "cpu_model", "usable_cores", "Table", "format_peaks",
           "write_json_atomic", "cpu_identity", "microarchitecture", "blas_info",
           "blas_header", "code_paths", "measure_fma_peak",
           "PYFAST_PREFIX", "RATE_UNITS", "COPY_BYTES", "DEFAULT_BUDGET_S"]

PYFAST_PREFIX = "pyfast-"            # impl names of pyfast's backends; the rest are competitors
RATE_UNITS = {"flop": "GFLOP/s", "byte": "GB/s"}
PEAK_OF_UNIT = {"flop": "fma_gflops", "byte": "copy_gbs"}
COPY_BYTES = 256 << 20               # far beyond any L3, so the copy measures memory
DEFAULT_BUDGET_S = 0.3               # timing budget per row
MIN_SAMPLES = 5
MIN_SAMPLE_S = 1e-3                  # fast calls are batched so one sample lasts this long


@dataclasses.dataclass(frozen=True)
class Options:
    """What a family's ``cases`` should produce."""
    quick: bool = False                          # a small subset of shapes
    backends: tuple = pf.backends.NAMES          # pyfast backends to include
    compile: bool = False                        # models: also time torch.compile


@dataclasses.dataclass
class Case:
    """One implementation of one op on one shape.

    ``prepare()`` allocates inputs and outputs and returns the call to time; that call
    returns its result, which ``check`` verifies (raising ``WrongResult``) before timing."""
    family: str
    op: str                      # what is computed, e.g. "matmul", "matmul+bias+relu"
    shape: str                   # e.g. "512x512x512"
    impl: str                    # "pyfast-native", "numpy", "torch", "cupy", ...
    device: str                  # "cpu" or "cuda"
    work: float                  # flops or bytes of one call
    unit: str                    # "flop" or "byte"
    prepare: Callable[[], Callable[[], Any]]
    check: Callable[[Any], None]

    @property
    def group(self):
        return (self.family, self.op, self.shape, self.device)

    @property
    def name(self):
        return f"{self.family}-{self.op}-{self.shape}-{self.impl}-{self.device}"


@dataclasses.dataclass(frozen=True)
class Skip:
    """An implementation that cannot run here, and why."""
    family: str
    impl: str
    device: str
    reason: str


@dataclasses.dataclass
class Row:
    """The measurement of one case at one thread count (None on a GPU)."""
    family: str
    op: str
    shape: str
    impl: str
    device: str
    threads: int | None
    unit: str
    work: float
    median_s: float | None = None
    p25_s: float | None = None
    p75_s: float | None = None
    min_s: float | None = None
    samples: int = 0
    calls_per_sample: int = 0
    rate: float | None = None           # GFLOP/s or GB/s (RATE_UNITS[unit])
    peak_percent: float | None = None
    ratios: dict = dataclasses.field(default_factory=dict)  # competitor -> its time / ours
    error: str | None = None
    load_average: float | None = None   # 1-minute load average after the row: contention shows


class WrongResult(AssertionError):
    """An implementation's result differs from the float64 oracle beyond rounding error."""


# ---------------------------------------------------------------------------- families

def families():
    """Names of the families with a bench module, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_family(name):
    if name not in families():
        raise ValueError(f"unknown benchmark family {name!r}; available: {', '.join(families())}")
    return importlib.import_module(f"{__name__}.{name}")


def collect(family_names, options):
    """The cases and skips of the given families."""
    cases, skips = [], []
    for name in family_names:
        for item in load_family(name).cases(options):
            (skips if isinstance(item, Skip) else cases).append(item)
    return cases, skips


def pyfast_impls(family, device, options):
    """The pyfast backends (of ``options.backends``) with ``family`` kernels on ``device``,
    as (names, skips)."""
    names, skips = [], []
    for name in options.backends:
        try:
            chosen, _ = pf.backends.select(family, device, name)
        except RuntimeError as exc:
            skips.append(Skip(family, PYFAST_PREFIX + name, device, str(exc)))
            continue
        if chosen == name:
            names.append(name)
        else:  # select fell through to the next backend
            skips.append(Skip(family, PYFAST_PREFIX + name, device,
                              f"{name} has no {family} kernels on {device}"))
    return names, skips


def installed(module):
    """Whether ``module`` can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None


def cuda_unavailable():
    """None when CuPy sees a GPU, else why not (imports cupy when it is installed)."""
    if not installed("cupy"):
        return "cupy is not installed"
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device, broken install: all mean "no GPU here"
        return f"no CUDA device ({exc})"
    return None if count > 0 else "no CUDA device"


# What every family's ``cases`` needs (pyfast/bench/conv.py can adopt these too).

def array_module_on(device):
    """numpy for "cpu", cupy for "cuda" (imported here, on first use)."""
    if device == "cpu":
        return np
    import cupy
    return cupy


def torch_unavailable(device):
    """None when torch can run on ``device``, else why not."""
    if not installed("torch"):
        return "torch is not installed"
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            return "this torch has no CUDA"
    return None


def torch_impl(family, device, build, impls, skips):
    """Append ("torch", ``build``) to ``impls`` when torch runs on ``device``, else its Skip
    to ``skips``."""
    why = torch_unavailable(device)
    if why is None:
        impls.append(("torch", build))
    else:
        skips.append(Skip(family, "torch", device, why))


def on_each_device(family, device_cases, options, cpu_shapes, cuda_shapes=None):
    """``device_cases("cpu", cpu_shapes, options)`` and, when CuPy sees a GPU, the same on
    "cuda" with ``cuda_shapes`` (default: the CPU's); without a GPU, one Skip saying why."""
    yield from device_cases("cpu", cpu_shapes, options)
    no_gpu = cuda_unavailable()
    if no_gpu:
        yield Skip(family, "all", "cuda", no_gpu)
        return
    yield from device_cases("cuda", cpu_shapes if cuda_shapes is None else cuda_shapes, options)


def first_reports(skips, reported):
    """The ``skips`` not in ``reported`` yet, which records them: a reason that holds for
    every shape is listed once."""
    for skip in skips:
        if (skip.impl, skip.reason) not in reported:
            reported.add((skip.impl, skip.reason))
            yield skip


# ---------------------------------------------------------------------------- timing

@contextlib.contextmanager
def limit_threads(n):
    """Run the block with pyfast (and numba, which follows it), the BLAS under numpy
    (threadpoolctl) and torch each on ``n`` threads; ``None`` changes nothing."""
    if n is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.callback(pf.set_num_threads, pf.get_num_threads())
        pf.set_num_threads(n)
        if installed("threadpoolctl"):
            from threadpoolctl import threadpool_limits
            stack.enter_context(threadpool_limits(limits=n, user_api="blas"))
        torch = sys.modules.get("torch")  # only when a case already imported it
        if torch is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(n)
        yield


def _cpu_sample(call, number):
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def _cuda_sampler():
    import cupy
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    null = cupy.cuda.Stream.null

    def sample(call, number):
        # Events on the legacy default stream are ordered after all work on the device's
        # blocking streams, so they bracket cupy's, torch's and pyfast's default-stream launches.
        cupy.cuda.runtime.deviceSynchronize()
        start.record(null)
        for _ in range(number):
            call()
        end.record(null)
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) * 1e-3 / number

    return sample


def blocking(call, device):
    """``call`` made to return only when its device work is done (for outside timers)."""
    if device == "cpu":
        return call
    import cupy

    def call_and_wait():
        result = call()
        cupy.cuda.runtime.deviceSynchronize()
        return result

    return call_and_wait


def measure(call, device="cpu", budget_s=DEFAULT_BUDGET_S, min_samples=MIN_SAMPLES):
    """Time ``call``: warm up, then take samples until ``budget_s`` has passed and there are
    ``min_samples`` (a call slower than that budget allows stops at 3 samples or 5 budgets).
    Returns (sorted per-call seconds of each sample, calls per sample)."""
    sample = _cpu_sample if device == "cpu" else _cuda_sampler()
    sample(call, 1)  # first-call costs: page faults, JIT compilation, lazy initialisation
    per_call = sample(call, 1)
    number = max(1, math.ceil(MIN_SAMPLE_S / max(per_call, 1e-9)))
    sample(call, number)  # warm at the batch size (clocks, caches)
    times, start = [], time.perf_counter()
    while True:
        times.append(sample(call, number))
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s and len(times) >= min_samples:
            break
        if len(times) >= 3 and elapsed >= 5 * budget_s:
            break
    return sorted(times), number


def _measure_row(case, threads, budget_s):
    row = Row(case.family, case.op, case.shape, case.impl, case.device, threads, case.unit,
              case.work)
    try:
        call = case.prepare()  # before limit_threads: it may import torch, which then gets n
        with limit_threads(threads):
            case.check(call())
            times, row.calls_per_sample = measure(call, case.device, budget_s)
    except WrongResult as exc:
        row.error = f"WRONG RESULT: {exc}"
        return row
    except Exception as exc:  # any failure becomes a loud row, the run goes on
        row.error = f"FAILED: {type(exc).__name__}: {exc}"
        return row
    row.samples = len(times)
    row.median_s = float(np.median(times))
    row.p25_s, row.p75_s = (float(q) for q in np.percentile(times, [25, 75]))
    row.min_s = times[0]
    row.rate = case.work / row.median_s * 1e-9
    row.load_average = _load_average()
    return row


def _load_average():
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not available on this OS
        return None


def _complete_group(rows, peaks):
    """Fill in percent of peak and the ratios against the group's competitors."""
    timed = [r for r in rows if r.error is None]
    for row in timed:
        peak = (peaks or {}).get(row.threads) if row.device == "cpu" else None
        if peak and peak.get(PEAK_OF_UNIT[row.unit]):
            row.peak_percent = 100.0 * row.rate / peak[PEAK_OF_UNIT[row.unit]]
        row.ratios = {other.impl: other.median_s / row.median_s for other in timed
                      if other is not row and not other.impl.startswith(PYFAST_PREFIX)}


def _groups(cases):
    groups = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    return list(groups.values())


def run(cases, thread_counts, *, budget_s=DEFAULT_BUDGET_S, peaks=None, on_group=None):
    """Measure every case: CPU cases once per thread count, GPU cases once. ``peaks`` maps a
    thread count to ``measure_peaks``' result; ``on_group(rows)`` sees each finished group."""
    passes = [(n, [c for c in cases if c.device == "cpu"]) for n in thread_counts]
    gpu_cases = [c for c in cases if c.device != "cpu"]
    if gpu_cases:
        passes.append((None, gpu_cases))
    rows = []
    for threads, pass_cases in passes:
        for group in _groups(pass_cases):
            group_rows = [_measure_row(case, threads, budget_s) for case in group]
            _complete_group(group_rows, peaks)
            rows += group_rows
            if on_group is not None:
                on_group(group_rows)
    return rows


# ---------------------------------------------------------------------------- peaks, machine

def measure_peaks(threads):
    """The CPU's measured float32 FMA peak and copy bandwidth on ``threads`` threads, or None
    when the native extension is not built."""
    try:
        from pyfast import _C
    except ImportError:
        return None
    return {"fma_gflops": _C.fma_peak_gflops(threads),
            "copy_gbs": _C.copy_bandwidth_gbs(threads, COPY_BYTES)}


def measure_fma_peak(threads):
    """The measured float32 FMA peak alone (GFLOP/s), as {"fma_gflops": ...}, or None."""
    try:
        from pyfast import _C
    except ImportError:
        return None
    return {"fma_gflops": _C.fma_peak_gflops(threads)}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# Display family/model ranges of the cores this project meets (AMD's and Intel's published
# numbers); an unknown pair prints as "family F model M".
_AMD_CORES = ((0x17, 0x00, 0x2f, "Zen / Zen+"), (0x17, 0x30, 0xff, "Zen 2"),
              (0x19, 0x00, 0x0f, "Zen 3"), (0x19, 0x10, 0x1f, "Zen 4"),
              (0x19, 0x20, 0x5f, "Zen 3"), (0x19, 0x60, 0x7f, "Zen 4"),
              (0x19, 0xa0, 0xaf, "Zen 4c"), (0x1a, 0x00, 0xff, "Zen 5"))
_INTEL_CORES = {0x3f: "Haswell", 0x4f: "Broadwell", 0x55: "Skylake-SP / Cascade Lake",
                0x6a: "Ice Lake-SP", 0x6c: "Ice Lake-SP", 0x8f: "Sapphire Rapids",
                0xcf: "Emerald Rapids", 0xad: "Granite Rapids", 0xae: "Granite Rapids",
                0x97: "Alder Lake", 0x9a: "Alder Lake", 0xb7: "Raptor Lake",
                0xba: "Raptor Lake", 0xbf: "Raptor Lake"}


def microarchitecture(vendor, family, model):
    """The core's name from cpuid's vendor and display family/model, e.g. "Zen 4"."""
    if vendor == "AuthenticAMD":
        for fam, lo, hi, name in _AMD_CORES:
            if family == fam and lo <= model <= hi:
                return name
    elif vendor == "GenuineIntel" and family == 6 and model in _INTEL_CORES:
        return _INTEL_CORES[model]
    return f"family {family:#x} model {model:#x}"


def cpu_identity():
    """cpuid's view of the CPU (vendor, brand, family, model, stepping, the ISA flags pyfast
    uses, the core's name) and the data caches the kernels block for; None without _C."""
    try:
        from pyfast import _C
    except ImportError:
        return None
    if not hasattr(_C, "cpu_identity"):   # an extension built before it existed
        return None
    ident = dict(_C.cpu_identity())
    ident["flags"] = dict(ident["flags"])
    ident["core"] = microarchitecture(ident["vendor"], ident["family"], ident["model"])
    ident["caches"] = dict(_C.cpu_caches())
    return ident


def blas_info():
    """The BLAS libraries loaded in this process (threadpoolctl), with OpenBLAS's core type
    ("architecture"), and the OPENBLAS_CORETYPE override if one is set."""
    libs = []
    if installed("threadpoolctl"):
        from threadpoolctl import threadpool_info
        libs = [{k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                         "threading_layer", "prefix", "num_threads")}
                for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return {"libraries": libs, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}


def blas_header(info=None):
    """One line naming the BLAS competitors' kernels, and a warning line when
    OPENBLAS_CORETYPE forces OpenBLAS onto a core type other than the one it would detect."""
    info = info or blas_info()
    parts = [f"{lib['internal_api']} {lib['version']} ({lib['prefix']}): core type "
             f"{lib.get('architecture') or '?'}, {lib.get('threading_layer')}"
             for lib in info["libraries"]]
    lines = ["BLAS     " + ("; ".join(parts) if parts else
                            "unknown (threadpoolctl is not installed)" if not installed(
                                "threadpoolctl") else "none loaded")]
    if info["openblas_coretype"]:
        lines.append(f"WARNING: OPENBLAS_CORETYPE={info['openblas_coretype']} is set: OpenBLAS "
                     f"runs that core type's kernels instead of the ones it would pick for "
                     f"this CPU, which may be slower and flatter pyfast's ratios; rerun with "
                     f"`env -u OPENBLAS_CORETYPE`")
    return "\n".join(lines)


# The SIMD dispatch of each native CPU kernel family (csrc/cpu/<family>.cpp): families with a
# path per ISA take the active one; the rest are plain C++ built for the x86-64 baseline.
_PER_ISA = {"conv": "direct, weight-gradient, implicit-GEMM and Winograd F(4x4,3x3) "
                    "(all three passes) micro-kernels (im2col via gemm), the algorithm "
                    "chosen per shape (pf.ops.last_conv_path() says which ran)",
            "softmax_xent": "vectorised exp/log (vec_math.h)",
            "linear_xent": "blocks of rows through the gemm micro-kernel and softmax_xent",
            "optim": "vector update loops (vec_math.h)",
            "elementwise": "sigmoid, tanh and dropout (relu, leaky_relu, add: baseline SSE2)"}
_BASELINE = ("norm", "pool", "resample")


def code_paths():
    """Per native kernel family, the code path it takes on this CPU now: {family: text}."""
    try:
        from pyfast import _C
    except ImportError as exc:
        return {"all": f"pyfast._C not built ({exc})"}
    isa = _C.isa()
    paths = {}
    if hasattr(_C, "gemm_blocking"):
        b = dict(_C.gemm_blocking("float32"))
        paths["gemm"] = (f"{isa} {b['mr']}x{b['nr']} micro-kernel; float32 blocks MC {b['mc']} "
                         f"KC {b['kc']} NC {b['nc']} (from the cache sizes)")
    else:
        paths["gemm"] = f"{isa} micro-kernel"
    for family, what in _PER_ISA.items():
        paths[family] = f"{isa}: {what}"
    for family in _BASELINE:
        paths[family] = "x86-64 baseline (SSE2), no per-ISA path"
    return paths


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info():
    """CPU, code path, library versions and the date, for a results file."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {"pyfast": pf.__version__, "numpy": np.__version__,
                     **{d: _version(d) for d in ("torch", "numba", "threadpoolctl")},
                     "cupy": _version("cupy-cuda13x") or _version("cupy-cuda12x")
                     or _version("cupy")},
    }
    try:
        from pyfast import _C
        info.update(isa=_C.isa(), best_isa=_C.best_isa())
    except ImportError as exc:
        info["isa"] = f"pyfast._C not built ({exc})"
    blas = blas_info()
    info["blas"] = blas["libraries"]
    info["openblas_coretype"] = blas["openblas_coretype"]
    ident = cpu_identity()
    if ident is not None:
        info["cpu_identity"] = ident
    cupy = sys.modules.get("cupy")  # only if a GPU case ran
    if cupy is not None:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return info


def notes(rows=()):
    """Caveats of this run's environment (and of its ``rows``), one line each."""
    out = []
    loads = [r.load_average for r in rows if r.load_average is not None]
    cores = usable_cores()
    if loads and max(loads) > cores + 1:  # this run accounts for at most `cores` of it
        out.append(f"the load average reached {max(loads):.1f} on {cores} cores: other processes "
                   f"competed for the CPU, so some timings (multi-threaded ones most) are "
                   f"unreliable (the JSON has load_average per row)")
    if not installed("threadpoolctl"):
        out.append("threadpoolctl is not installed: numpy's BLAS keeps its own thread count")
    if os.environ.get("OPENBLAS_CORETYPE"):
        out.append(f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} was set: numpy's "
                   f"OpenBLAS ran that core type's kernels, which may be slower than the ones "
                   f"it picks for this CPU (see the header)")
    if not installed("pyfast._C"):
        out.append("pyfast._C is not built: no measured peaks, no %peak column")
    return out


# ---------------------------------------------------------------------------- checking

def to_numpy(x):
    """A numpy array from a numpy, cupy or torch result."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.partition(".")[0]
    if module == "cupy":
        return x.get()
    if module == "torch":
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_close(result, expected, bound):
    """Raise WrongResult unless |result - expected| <= bound elementwise (NaN fails)."""
    got = to_numpy(result)
    if got.shape != expected.shape:
        raise WrongResult(f"shape {got.shape}, expected {expected.shape}")
    err = np.abs(got.astype(np.float64) - expected)
    bad = ~(err <= bound)
    if bad.any():
        badness = np.where(bad, np.nan_to_num(err, nan=np.inf), -1.0)
        worst = np.unravel_index(np.argmax(badness), err.shape)
        tolerance = float(np.broadcast_to(bound, err.shape)[worst])
        raise WrongResult(f"{int(bad.sum())} of {bad.size} elements off; at "
                          f"{tuple(map(int, worst))} got {float(got[worst]):.7g}, expected "
                          f"{float(expected[worst]):.7g} (tolerance {tolerance:.3g})")


# ---------------------------------------------------------------------------- output

def _format_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            break
    else:
        unit, scale = "ns", 1e-9
    value = seconds / scale
    return f"{value:.2f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def _threads_label(threads):
    return f"{threads} thread{'s' if threads != 1 else ''}"


def _ratio_width(competitor):
    return max(9, len(competitor) + 3)


class Table:
    """A plain-text table printed one group at a time, a header per (family, device, threads)."""

    def __init__(self, cases, peaks=None, out=None):
        self.out = out or sys.stdout
        self.peaks = peaks or {}
        self.widths = {key: max([len(key)] + [len(getattr(c, key)) for c in cases])
                       for key in ("op", "shape", "impl")}
        self.competitors = {}  # (family, device) -> competitor impls, in order of appearance
        for c in cases:
            names = self.competitors.setdefault((c.family, c.device), [])
            if not c.impl.startswith(PYFAST_PREFIX) and c.impl not in names:
                names.append(c.impl)
        self.section = None

    def _header(self, row):
        title = [row.family, row.device]
        if row.threads is not None:
            title.append(_threads_label(row.threads))
            peak = self.peaks.get(row.threads)
            if peak:
                title.append(f"peaks {peak['fma_gflops']:.1f} GFLOP/s FMA, "
                             f"{peak['copy_gbs']:.1f} GB/s copy")
        w = self.widths
        cols = [f"{'op':<{w['op']}}", f"{'shape':<{w['shape']}}", f"{'impl':<{w['impl']}}",
                f"{'median':>9}", f"{'spread':>7}", f"{'rate':>15}", f"{'%peak':>6}"]
        cols += [f"{'vs ' + c:>{_ratio_width(c)}}"
                 for c in self.competitors[(row.family, row.device)]]
        return f"\n== {' | '.join(title)} ==\n" + "  ".join(cols)

    def group(self, rows):
        section = (rows[0].family, rows[0].device, rows[0].threads)
        if section != self.section:
            self.section = section
            print(self._header(rows[0]), file=self.out)
        else:
            print(file=self.out)
        w = self.widths
        for i, row in enumerate(rows):
            first = i == 0
            cols = [f"{row.op if first else '':<{w['op']}}",
                    f"{row.shape if first else '':<{w['shape']}}", f"{row.impl:<{w['impl']}}"]
            if row.error is not None:
                cols.append(f"!! {row.error}")
            else:
                spread = 50.0 * (row.p75_s - row.p25_s) / row.median_s
                percent = "" if row.peak_percent is None else f"{row.peak_percent:.0f}%"
                cols += [f"{_format_time(row.median_s):>9}", f"{f'±{spread:.1f}%':>7}",
                         f"{row.rate:>7.1f} {RATE_UNITS[row.unit]:<7}", f"{percent:>6}"]
                for c in self.competitors[(row.family, row.device)]:
                    ratio = row.ratios.get(c)
                    cols.append(f"{'' if ratio is None else f'{ratio:.2f}x':>{_ratio_width(c)}}")
            print("  ".join(cols).rstrip(), file=self.out, flush=True)

    def legend(self):
        print("\nmedian of the samples; spread: half the interquartile range; %peak: of the "
              "measured FMA peak (flops) or copy bandwidth (bytes) at that thread count;\n"
              "vs X: X's median time / this row's (above 1: faster than X).", file=self.out)


def format_peaks(peaks, isa=None):
    """The roofline marks as a small table: threads, FMA peak, copy bandwidth, ridge point."""
    lines = [f"Measured peaks (float32{', ' + isa + ' code path' if isa else ''}):",
             f"{'threads':>7}  {'FMA GFLOP/s':>11}  {'copy GB/s':>9}  {'ridge FLOP/byte':>15}"]
    for threads, peak in peaks.items():
        if peak is None:
            lines.append(f"{threads:>7}  not measured: pyfast._C is not built")
            continue
        ridge = peak["fma_gflops"] / peak["copy_gbs"]
        lines.append(f"{threads:>7}  {peak['fma_gflops']:>11.1f}  {peak['copy_gbs']:>9.1f}  "
                     f"{ridge:>15.1f}")
    return "\n".join(lines)


def write_json_atomic(path, document):
    """Write ``document`` as JSON to ``path`` so that no reader ever sees half a file: a
    temporary file in the same directory, fsync, then rename over ``path``."""
    text = json.dumps(document, indent=1, default=str) + "\n"
    write_bytes_atomic(path, text.encode())
