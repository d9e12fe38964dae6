"""pytest-benchmark glue shared by every benchmarks/bench_<family>.py.

A bench module sets ``CASES`` (from its ``pyfast.bench.<family>.cases``) and has one test
taking ``case`` and ``threads`` and calling the ``run_case`` fixture; this file collects the
bench_*.py files, parametrises the test over every (case, thread count) (GPU cases once,
skips with their reason) and runs a case the way ``pyfast bench`` does: result checked
against the float64 oracle first, every library on the same thread count.

The repository's own ``python -m pytest`` never comes here: its testpaths is ["tests"].
"""

import pytest

import pyfast as pf
from pyfast import bench

THREADS = sorted({1, pf.get_num_threads()})  # docs/benchmarking.md: 1 thread and all cores


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc):
    if not {"case", "threads"} <= set(metafunc.fixturenames):
        return
    params = []
    for item in metafunc.module.CASES:
        if isinstance(item, bench.Skip):
            params.append(pytest.param(None, None, id=f"{item.impl}-{item.device}",
                                       marks=pytest.mark.skip(reason=item.reason)))
        elif item.device == "cpu":
            params += [pytest.param(item, n, id=f"{item.name}-{n}t") for n in THREADS]
        else:
            params.append(pytest.param(item, None, id=item.name))
    metafunc.parametrize(("case", "threads"), params)


@pytest.fixture
def run_case(benchmark):
    """Check a case's result, then time it with pytest-benchmark; GFLOP/s or GB/s of the
    median go to extra_info (when timing is on: not with --benchmark-disable)."""

    def run(case, threads):
        benchmark.group = " ".join([case.family, case.op, case.shape, case.device]
                                   + ([f"{threads}t"] if threads else []))
        benchmark.extra_info.update(impl=case.impl, threads=threads, work=case.work,
                                    unit=case.unit)
        call = case.prepare()
        with bench.limit_threads(threads):
            case.check(call())
            benchmark(bench.blocking(call, case.device))
        if benchmark.stats is not None:
            benchmark.extra_info[bench.RATE_UNITS[case.unit]] = (
                case.work / benchmark.stats.stats.median * 1e-9)

    return run
