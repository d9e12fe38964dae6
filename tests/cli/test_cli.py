"""The pyfast command: exit codes, one-line errors, the info grid and bench's JSON."""

import json
import subprocess
import sys

import pytest


def pyfast(*args):
    return subprocess.run([sys.executable, "-m", "pyfast.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_info_prints_the_backend_grid():
    run = pyfast("info")
    assert run.returncode == 0, run.stderr
    assert "backend" in run.stdout and "gemm" in run.stdout
    assert "reference/cpu" in run.stdout
    report = json.loads(pyfast("info", "--json").stdout)
    assert report["backends"]["reference"]["families"]["cpu"][0] == "gemm"


@pytest.mark.parametrize("args", [("bench", "nosuch"), ("bench", "gemm", "--threads", "0"),
                                  ("bench", "gemm", "--backend", "fast"), ("frobnicate",)])
def test_usage_errors_are_one_line_and_exit_2(args):
    run = pyfast(*args)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr


def test_bench_writes_checked_results_as_json(tmp_path):
    path = tmp_path / "gemm.json"
    run = pyfast("bench", "gemm", "--quick", "--threads", "1", "--backend", "reference",
                 "--budget", "0.02", "--json", str(path))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert "vs numpy" in run.stdout
    data = json.loads(path.read_text())
    rows = [r for r in data["rows"] if r["impl"] == "pyfast-reference"]
    assert rows and all(r["threads"] == 1 and r["median_s"] > 0 for r in rows)
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left no temporary behind
