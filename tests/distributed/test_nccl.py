"""The NCCL backend on one GPU with one rank: CuPy collectives and DataParallel gradients
(plain and with synchronised batch norm) against the plain model's. Needs a CUDA GPU."""

import numpy as np
import pytest

from pyfast.nn import functional as F

from . import _worker as W
from .conftest import needs_mpi, run_ranks

pytestmark = [needs_mpi, pytest.mark.cuda]


def test_nccl_one_rank(tmp_path):
    proc, _ = run_ranks(0, "nccl", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(tmp_path / "nccl.npz") as f:
        res = {k: f[k] for k in f.files}
    a = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(res["sum"], a)
    np.testing.assert_array_equal(res["mean"], a)
    np.testing.assert_array_equal(res["bcast"], a)
    np.testing.assert_array_equal(res["host_sum"], np.arange(3.0))
    for tag, bn in (("plain", False), ("syncbn", True)):
        model = W.build_cnn(batchnorm=bn)
        x, y = W.batch(0)
        F.cross_entropy(model(x), y).backward()
        for name, g in W.grads_of(model).items():
            np.testing.assert_allclose(res[f"{tag}/{name}"], g, rtol=1e-4, atol=1e-5)
