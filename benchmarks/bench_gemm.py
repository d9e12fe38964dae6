"""gemm with pytest-benchmark: the cases of ``pyfast bench gemm`` (pyfast backends against
numpy and torch, plain and with the fused bias+ReLU epilogue), sizes up to 1024 so that
``pytest benchmarks --benchmark-only`` takes minutes on a 2-core CPU."""

from pyfast import bench
from pyfast.bench import gemm

CASES = list(gemm.cases(bench.Options(), sizes=tuple(n for n in gemm.SIZES if n <= 1024)))


def test_gemm(run_case, case, threads):
    run_case(case, threads)
