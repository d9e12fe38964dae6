"""optim with pytest-benchmark: the cases of ``pyfast bench optim`` (pyfast backends against
torch fused, foreach and the per-parameter loop) on 10M parameters, flat and as 100 tensors
of mixed sizes; 1M (cache-resident) and 100M (2.8 GB of buffers) run in ``pyfast bench``."""

from pyfast import bench
from pyfast.bench import optim

CASES = list(optim.cases(bench.Options(), shapes=optim.BENCH_SHAPES))


def test_optim(run_case, case, threads):
    run_case(case, threads)
