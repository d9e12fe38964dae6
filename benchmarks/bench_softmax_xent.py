"""softmax_xent with pytest-benchmark: the cases of ``pyfast bench softmax_xent`` (pyfast
backends against torch and the copy floor, allocating and in place), without the
8192 x 50000 shape (1.6 GB of logits), so ``pytest benchmarks --benchmark-only`` takes
minutes on a 2-core CPU."""

from pyfast import bench
from pyfast.bench import softmax_xent

CASES = list(softmax_xent.cases(
    bench.Options(), shapes=tuple(s for s in softmax_xent.SHAPES if s != softmax_xent.HEAVY)))


def test_softmax_xent(run_case, case, threads):
    run_case(case, threads)
