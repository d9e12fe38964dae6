"""conv with pytest-benchmark: the cases of ``pyfast bench conv`` (pyfast backends against
torch, forward and forward+backward on ResNet and U-Net layer shapes). The reference backend
is left out here (it takes seconds per call); ``pyfast bench conv`` times it."""

from pyfast import bench
from pyfast.bench import conv

CASES = list(conv.cases(bench.Options(backends=("native", "numba"))))


def test_conv(run_case, case, threads):
    run_case(case, threads)
