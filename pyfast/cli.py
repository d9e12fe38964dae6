"""The ``pyfast`` command (docs/api.md section 8).

    pyfast info [--json]
    pyfast bench [FAMILY ...] [--backend B] [--threads N ...] [--json PATH] [--roofline] [--quick]
    pyfast demo [--out DIR] [--quick] [--tasks T ...] [--seed N] [--backend B] [--device D]
    pyfast train MODEL --data DATASET [--epochs N] [--batch-size N] [--backend B] [--out DIR]
                 [--nproc N]

Exit codes: 0 success, 1 a failure while running (a wrong result, an unwritable file, a
backend asked for that cannot run), 2 a usage error. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time

from pyfast.cli_common import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandFailed, Parser,
                               UsageError, add_kernel_options, check_device, non_negative_int,
                               positive_int)


def _parser():
    from pyfast import backends
    from pyfast._version import __version__
    from pyfast.bench import DEFAULT_BUDGET_S

    parser = Parser(prog="pyfast", description="pyfast: hand-written C++/CUDA and Numba "
                     "deep-learning kernels.")
    parser.add_argument("--version", action="version", version=f"pyfast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    info = commands.add_parser(
        "info", help="version, CPU features and code path, threads, GPU, backends x families",
        description="Print pyfast's version, the CPU's features and the SIMD code path chosen, "
                    "the thread count, the GPU if any, and which backend implements which "
                    "kernel family on which device (or why it did not load).")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(run=_info)

    bench = commands.add_parser(
        "bench", help="time pyfast's kernels against numpy/torch (cupy on a GPU) and the peaks",
        description="Time pyfast's kernels against the libraries a user would otherwise call, "
                    "all on the same thread count, each result checked against a float64 "
                    "oracle first. Shows the median time, GFLOP/s or GB/s, percent of the "
                    "machine's measured peak and the speed ratio against each competitor.")
    bench.add_argument("family", nargs="*", metavar="FAMILY",
                       help="kernel families to run (default: every family with benchmarks)")
    bench.add_argument("--backend", choices=backends.NAMES,
                       help="time only this pyfast backend (competitors still run)")
    bench.add_argument("--threads", type=positive_int, nargs="+", metavar="N",
                       help="CPU thread counts to run (default: 1 and all usable cores)")
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    bench.add_argument("--roofline", action="store_true",
                       help="print the measured FMA peak and copy bandwidth (the 100%% marks); "
                            "with no FAMILY, only that")
    bench.add_argument("--quick", action="store_true", help="a small subset of shapes")
    bench.add_argument("--compile", action="store_true",
                       help="models: also time torch.compile (compiles each network first)")
    bench.add_argument("--plain-malloc", action="store_true",
                       help="keep glibc's default allocator settings (as a library user "
                            "has them) instead of keeping freed memory for reuse")
    bench.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                       help="timing budget per row (default: %(default)s)")
    bench.set_defaults(run=_bench)

    from pyfast import cli_train
    from pyfast.demo import TASKS

    demo = commands.add_parser(
        "demo", help="train ResNet, U-Net, a denoising autoencoder and a DCGAN on built-in "
                     "medical-style data, with metrics, a summary table and pictures",
        description="Train four models from scratch on built-in data, each with per-epoch "
                    "validation and a metric with a target: a ResNet-18 on digits (accuracy "
                    ">= 0.95), a U-Net on synthetic MRI lesions (Dice >= 0.85), a denoising "
                    "autoencoder as a lesion detector (AUROC >= 0.8) and a DCGAN on digits "
                    "(a grid of samples). Prints a summary table and writes pictures, curves "
                    "and summary.json/summary.md to --out. Exits 1 if a target is missed.")
    demo.add_argument("--out", metavar="DIR", default="pyfast-demo",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true",
                      help="a smaller run of about a minute (targets not enforced)")
    demo.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests only
    demo.add_argument("--tasks", nargs="+", choices=TASKS, metavar="TASK",
                      help=f"run only these ({', '.join(TASKS)}; default: all)")
    demo.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                      help="seed of everything random (default: %(default)s)")
    add_kernel_options(demo)
    demo.set_defaults(run=_demo)

    train = cli_train.add_parser(commands)
    train.set_defaults(run=_train)
    return parser


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)   # train --nproc relaunches
        if args.command in ("demo", "train", "bench") and not getattr(args, "plain_malloc",
                                                                          False):
            from pyfast._memory import keep_freed_memory
            keep_freed_memory()   # same-sized arrays every step: reuse pages, no re-faulting
        return args.run(args)
    except UsageError as exc:
        print(f"pyfast: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CommandFailed, OSError) as exc:
        print(f"pyfast: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("pyfast: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------- info

def _native_report():
    try:
        from pyfast import _C
    except ImportError as exc:
        return {"built": False, "reason": str(exc)}
    return {"built": True, "isa": _C.isa(), "best_isa": _C.best_isa(),
            "supported_isas": list(_C.supported_isas()), "cpu_features": dict(_C.cpu_features())}


def _gpu_report():
    try:
        from pyfast import _cuda
    except ImportError as exc:
        return {"built": False, "reason": f"pyfast._cuda is not built ({exc})"}
    report = {"built": True, "device_count": _cuda.device_count()}
    if hasattr(_cuda, "device_status"):
        report["status"] = _cuda.device_status()
    if hasattr(_cuda, "device_info"):
        report["devices"] = [_cuda.device_info(i) for i in range(report["device_count"])]
    return report


def _info_report():
    import numpy as np

    import pyfast as pf
    from pyfast import bench

    return {
        "pyfast": pf.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": bench.cpu_model(),
        "cores": bench.usable_cores(),
        "cpu_identity": bench.cpu_identity(),
        "native": _native_report(),
        "fma_peak_gflops": {str(n): p["fma_gflops"] for n, p in
                            ((n, bench.measure_fma_peak(n))
                             for n in sorted({1, bench.usable_cores()})) if p},
        "code_paths": bench.code_paths(),
        "blas": bench.blas_info(),
        "threads": pf.get_num_threads(),
        "gpu": _gpu_report(),
        "families": list(pf.backends.FAMILIES),
        "backends": pf.backends.available(),
    }


def _print_info(report):
    native, gpu = report["native"], report["gpu"]
    print(f"pyfast {report['pyfast']}  (Python {report['python']}, numpy {report['numpy']}, "
          f"{report['platform']})")
    print(f"CPU      {report['cpu']}, {report['cores']} usable cores")
    ident = report["cpu_identity"]
    if ident:
        c = ident["caches"]
        print(f"core     {ident['core']} ({ident['vendor']} family {ident['family']:#x} model "
              f"{ident['model']:#x} stepping {ident['stepping']}; {ident['brand']})")
        print("ISA      " + " ".join(f"{k}{'' if v else '(no)'}" for k, v in
                                     ident["flags"].items()))
        print(f"caches   L1d {c['l1d'] >> 10} KiB, L2 {c['l2'] >> 10} KiB per core, L3 "
              f"{c['l3'] >> 20} MiB shared by {c['l3_sharing']} CPUs (from {c['source']})")
    if native["built"]:
        features = " ".join(k for k, v in native["cpu_features"].items() if v)
        print(f"features {features}")
        print(f"code     {native['isa']} (best {native['best_isa']}; supported: "
              f"{', '.join(native['supported_isas'])})")
        if report["fma_peak_gflops"]:
            print("FMA peak " + ", ".join(f"{v:.1f} GFLOP/s at {n} thread{'s' * (n != '1')}"
                                          for n, v in report["fma_peak_gflops"].items())
                  + " (float32, measured)")
    else:
        print(f"native   not built: {native['reason']}")
    print(f"threads  {report['threads']}")
    from pyfast import bench
    print(bench.blas_header(report["blas"]))
    print("paths    " + "\n         ".join(f"{family:<12} {path}" for family, path
                                             in report["code_paths"].items()))
    if not gpu["built"]:
        print(f"GPU      none: {gpu['reason']}")
    elif gpu["device_count"] == 0:
        print(f"GPU      none: {gpu.get('status', 'no CUDA device')}")
    else:
        for i, device in enumerate(gpu.get("devices") or [gpu.get("status")]):
            print(f"GPU {i}    {device}")

    families = report["families"]
    label_width = max(len(f"{name}/{device}") for name in report["backends"]
                      for device in ("cpu", "cuda"))
    print("\n" + "  ".join([f"{'backend':<{label_width}}"] + families))
    for name, entry in report["backends"].items():
        reasons = entry["reasons"]
        for device, implemented in entry["families"].items():
            label = f"{name + '/' + device:<{label_width}}"
            if device in reasons:
                print(f"{label}  not loaded: {reasons[device]}")
            else:
                print("  ".join([label] + [f"{'yes' if f in implemented else '-':<{len(f)}}"
                                           for f in families]).rstrip())


def _info(args):
    report = _info_report()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_info(report)
    return EXIT_OK


# ---------------------------------------------------------------------------- bench

def _bench(args):
    from pyfast import bench

    for family in args.family:
        try:
            bench.load_family(family)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise UsageError(f"--json {args.json}: the directory does not exist")
    if not args.budget > 0:
        raise UsageError(f"--budget must be a positive number of seconds, got {args.budget}")
    threads = list(dict.fromkeys(args.threads or sorted({1, bench.usable_cores()})))
    families = args.family or ([] if args.roofline else bench.families())
    options = bench.Options(quick=args.quick, compile=args.compile,
                            backends=(args.backend,) if args.backend else bench.Options.backends)
    machine = bench.machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores, code path {machine.get('isa')}; "
          f"numpy {machine['versions']['numpy']}, torch {machine['versions']['torch'] or '-'}; "
          f"{machine['date']}")
    print(bench.blas_header())
    print("malloc   " + ("glibc defaults (--plain-malloc)" if args.plain_malloc else
                         "freed memory kept for reuse, for every library in this process"))

    cases, skips = bench.collect(families, options)
    if args.backend and families and not any(c.impl == bench.PYFAST_PREFIX + args.backend
                                             for c in cases):
        why = "; ".join(s.reason for s in skips if s.impl == bench.PYFAST_PREFIX + args.backend)
        raise CommandFailed(f"backend {args.backend!r} runs none of {', '.join(families)} here"
                            f" ({why})")

    # The peaks are the 100% marks, so they are measured whenever CPU rows are shown.
    cpu_rows = any(c.device == "cpu" for c in cases)
    peaks = {n: bench.measure_peaks(n) for n in threads} if cpu_rows or args.roofline else {}
    if args.roofline:
        print("\n" + bench.format_peaks(peaks, machine.get("isa")))

    rows = []
    if cases:
        table = bench.Table(cases, peaks)
        rows = bench.run(cases, threads, budget_s=args.budget, peaks=peaks, on_group=table.group)
        table.legend()
    notes = [f"skipped {s.family} {s.impl} on {s.device}: {s.reason}" for s in skips]
    notes += bench.notes(rows)
    if notes:
        print("\n" + "\n".join(notes))

    if args.json:
        document = {"schema": "pyfast-bench/1",
                    "machine": bench.machine_info(),  # after the run: lists the BLAS torch loaded
                    "options": {"families": families, "threads": threads, "quick": args.quick,
                                "backend": args.backend, "compile": args.compile,
                                "plain_malloc": args.plain_malloc},
                    "peaks": {str(n): p for n, p in peaks.items()},
                    "rows": [vars(r) for r in rows],
                    "skipped": [vars(s) for s in skips],
                    "notes": bench.notes(rows)}
        try:
            bench.write_json_atomic(args.json, document)
        except OSError as exc:
            raise CommandFailed(f"cannot write {args.json}: {exc.strerror or exc}") from None
        print(f"\nwrote {args.json}")

    failed = [r for r in rows if r.error is not None]
    if failed:
        print(f"pyfast: error: {len(failed)} of {len(rows)} rows failed (marked !! above)",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------- demo, train

def _demo(args):
    import pyfast as pf
    from pyfast import demo

    scale = "smoke" if args.smoke else "quick" if args.quick else "full"
    device = check_device(args.device)
    if args.threads:
        pf.set_num_threads(args.threads)
    out = os.path.abspath(args.out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise CommandFailed(f"--out {args.out}: cannot create the folder "
                            f"({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK):
        raise CommandFailed(f"--out {args.out}: the folder is not writable")
    tasks = tuple(t for t in demo.TASKS if t in (args.tasks or demo.TASKS))
    print(f"pyfast demo ({scale}): {', '.join(tasks)}; seed {args.seed}, device {device}, "
          f"backend {args.backend or 'auto'}, {pf.get_num_threads()} threads; output in {out}\n",
          flush=True)
    start = time.perf_counter()
    try:
        with pf.use_backend(args.backend) if args.backend else contextlib.nullcontext():
            results = demo.run(out, scale=scale, tasks=tasks, seed=args.seed, device=device)
    except ImportError as exc:   # scikit-learn (the digits) or safetensors missing
        raise CommandFailed(str(exc)) from None
    except RuntimeError as exc:  # a backend asked for by name that cannot run
        raise CommandFailed(str(exc)) from None
    print(demo.format_table(results))
    print(f"\ntotal {time.perf_counter() - start:.1f} s; wrote to {out}:")
    for r in results:
        for path in r.files:
            print(f"  {os.path.relpath(path, out)}")
        for note in r.notes:
            print(f"  note ({r.task}): {note}")
    print("  summary.json, summary.md")
    missed = [r for r in results if r.met is False]
    if missed:
        what = "; ".join(f"{r.task} {r.metric} {r.value:.4f} < {r.target:g}" for r in missed)
        print(f"pyfast: error: the demo missed {len(missed)} target(s): {what}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _train(args):
    from pyfast import cli_train

    try:
        return cli_train.run(args)
    except ImportError as exc:
        raise CommandFailed(str(exc)) from None
    except RuntimeError as exc:  # a backend asked for by name that cannot run
        raise CommandFailed(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
