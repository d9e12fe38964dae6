"""What `import pyfast` costs over `import numpy` (docs/benchmarking.md target: <= +15 ms), with
bytecode and without it, as fresh interpreters see it.

Each statement runs in a new `python -c` process, the statements interleaved round by
round so that a change in the machine's load hits all of them alike; median and min of the
wall times. Two settings of pyfast's own files (numpy keeps its installed bytecode in both):

- bytecode: a copy of the package with every .pyc compiled, as after a first run;
- no bytecode: a copy with no .pyc and PYTHONDONTWRITEBYTECODE=1, so every pyfast module
  is compiled from source on every import (a read-only or fresh checkout).

    python benchmarks/bench_import.py [--repeats 20] [--package-dir DIR]

``--package-dir`` times another tree's pyfast (for example an older commit's). The
``-X importtime`` lines of the slowest pyfast modules are printed too. Not a pytest
benchmark: timings belong here, never in a test.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

STATEMENTS = {
    "python": "pass",
    "numpy": "import numpy",
    "pyfast": "import pyfast",
    "pyfast + first pf.ops": "import pyfast; pyfast.ops",
    "pyfast + first pf.nn": "import pyfast; pyfast.nn",
    "pyfast + every submodule": "import pyfast as pf; [getattr(pf, n) for n in pf.__all__]",
}


def _copy_package(source, dest, compiled):
    shutil.copytree(source, os.path.join(dest, "pyfast"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if compiled:
        compileall.compile_dir(os.path.join(dest, "pyfast"), quiet=1)


def _time_once(code, env):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=env["PYTHONPATH"])
    return time.perf_counter() - start


def _environment(path, compiled):
    # runs with cwd=path too: `python -c` puts the working directory first on sys.path
    env = dict(os.environ, PYTHONPATH=path)
    if compiled:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _importtime(env, top=8):
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pyfast"], env=env,
                         capture_output=True, text=True, check=True,
                         cwd=env["PYTHONPATH"]).stderr
    rows = []
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and m.group(4).startswith("pyfast"):
            rows.append((int(m.group(2)), int(m.group(1)), m.group(4)))
    return sorted(rows, reverse=True)[:top]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--package-dir", default=os.path.join(os.path.dirname(HERE), "pyfast"),
                        help="the pyfast package folder to time (default: this checkout's)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}; {args.repeats} runs each, interleaved; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs; package {args.package_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        for compiled in (True, False):
            path = os.path.join(tmp, "compiled" if compiled else "source")
            _copy_package(args.package_dir, path, compiled)
            env = _environment(path, compiled)
            times = {name: [] for name in STATEMENTS}
            for name, code in STATEMENTS.items():   # warm the page cache
                _time_once(code, env)
            for _ in range(args.repeats):
                for name, code in STATEMENTS.items():
                    times[name].append(_time_once(code, env))
            label = "bytecode" if compiled else "no bytecode (PYTHONDONTWRITEBYTECODE=1)"
            base = statistics.median(times["numpy"])
            base_min = min(times["numpy"])
            print(f"\n{label}:\n  {'statement':<26} {'median':>8} {'min':>8} "
                  f"{'median - numpy':>15} {'min - numpy':>12}")
            for name, ts in times.items():
                med, low = statistics.median(ts), min(ts)
                print(f"  {name:<26} {med * 1e3:>6.1f}ms {low * 1e3:>6.1f}ms "
                      f"{(med - base) * 1e3:>+13.1f}ms {(low - base_min) * 1e3:>+10.1f}ms")
            print("  -X importtime of `import pyfast`, slowest pyfast modules (cumulative us):")
            for cumulative, own, module in _importtime(env):
                print(f"    {cumulative:>8} {own:>8}  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
