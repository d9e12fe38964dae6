"""DataParallel on two ranks against one process of the global batch, the collectives, the
sampler's shards through real ranks, fit's reduced history, resume on 1 and 2 ranks, and a
rank that dies, raises or hangs."""

import numpy as np
import pytest

import pyfast as pf
from pyfast.nn import functional as F

from . import _worker as W
from .conftest import needs_mpi, run_ranks

pytestmark = needs_mpi


def _load(out, name, rank=0):
    suffix = "" if rank == 0 else f".rank{rank}"
    with np.load(out / f"{name}{suffix}.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    out = tmp_path_factory.mktemp("checks")
    proc, _ = run_ranks(2, "checks", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _load(out, "checks", 0), _load(out, "checks", 1)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_collectives(checks):
    r0, r1 = checks
    assert int(r0["world"]) == 2
    for res in checks:
        np.testing.assert_array_equal(res["sum_f32"], np.arange(6, dtype=np.float32) * 3)
        assert res["sum_f32"].dtype == np.float32
        np.testing.assert_array_equal(res["mean_f64"], np.full(3, 1.5))
        np.testing.assert_array_equal(res["max_i64"], [1, 0])
        np.testing.assert_array_equal(res["bcast"], np.ones(4))
    errors = list(r0["errors"])
    assert errors[0].startswith("ValueError") and "C-contiguous" in errors[0]
    assert errors[1].startswith("ValueError") and "'min'" in errors[1]
    assert errors[2].startswith("TypeError") and "mean" in errors[2]
    assert errors[3].startswith("TypeError") and "numpy or cupy" in errors[3]
    assert errors[4].startswith("ValueError") and "root" in errors[4]


def test_gradients_equal_single_process_of_global_batch(checks):
    model = W.build_cnn()
    x, y = W.batch(0)
    F.cross_entropy(model(x), y).backward()
    ref = W.grads_of(model)
    for res in checks:
        for tag in ("small", "default"):
            for name, g in ref.items():
                _close(res[f"grad_{tag}/{name}"], g)
    r0 = checks[0]
    assert int(r0["buckets_small"]) > 1 and int(r0["buckets_default"]) == 1


def test_wrapping_keeps_state_dict_and_broadcasts_rank0(checks):
    r0, r1 = checks
    assert list(r0["state_keys"]) == list(W.build_cnn().state_dict())
    assert bool(r0["broadcast_params"]) and bool(r1["broadcast_params"])


def test_parameter_shape_mismatch_is_caught_at_wrap_time(checks):
    for res in checks:
        msg = str(res["mismatch"])
        assert "differs across ranks" in msg and "(5, 144)" in msg and "(6, 144)" in msg


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_twenty_steps_equal_one_process(checks, kind):
    model = W.build_cnn()
    opt = W.make_optimizer(kind, model.parameters())
    W.train_steps(model, opt, 20, 0, 1)
    for res in checks:
        for name, p in W.params_of(model).items():
            np.testing.assert_allclose(res[f"{kind}/{name}"], p, rtol=1e-4, atol=1e-5)


def test_sync_batchnorm_equals_global_batch(checks):
    model = W.build_cnn(batchnorm=True)
    for step in range(2):
        model.zero_grad()
        x, y = W.batch(step)
        F.cross_entropy(model(x), y).backward()
    for res in checks:
        for name, g in W.grads_of(model).items():
            _close(res[f"syncbn_grad/{name}"], g)
        _close(res["syncbn_running_mean"], model[1].running_mean.numpy())
        _close(res["syncbn_running_var"], model[1].running_var.numpy())


def test_sampler_shards_through_ranks_are_disjoint_and_complete(checks):
    r0, r1 = checks
    for epoch in range(2):
        a, b = r0[f"shard_epoch{epoch}"], r1[f"shard_epoch{epoch}"]
        assert len(a) == len(b) == 12                     # 23 samples padded to 24
        assert set(a) | set(b) == set(range(23))
        assert len(set(a) & set(b)) <= 1                  # the one padded repeat
    assert not np.array_equal(r0["shard_epoch0"], r0["shard_epoch1"])


def test_fit_history_is_reduced_over_ranks(checks):
    r0, r1 = checks
    np.testing.assert_array_equal(r0["history_loss"], r1["history_loss"])
    np.testing.assert_array_equal(r0["history_acc"], r1["history_acc"])
    # the reduced validation accuracy is that of the whole data set, as one process sees it
    assert all(0.0 <= a <= 1.0 and a * 96 == round(a * 96) for a in r0["history_acc"])


def test_resume_from_rank0_checkpoint_on_two_and_one_ranks(tmp_path):
    proc, _ = run_ranks(2, "resume", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    two = _load(tmp_path, "resume")
    assert bool(two["is_writer"]) and not bool(_load(tmp_path, "resume", 1)["is_writer"])
    names = [k.split("/", 1)[1] for k in two if k.startswith("straight/")]
    for name in names:      # same world size: the uninterrupted run, bit for bit
        np.testing.assert_array_equal(two[f"resumed/{name}"], two[f"straight/{name}"])
    assert len(two["history_loss"]) == 3
    proc, _ = run_ranks(0, "resume1", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one = _load(tmp_path, "resume1")
    for name in names:      # one rank with the global batch: the same steps, other rounding
        np.testing.assert_allclose(one[f"resumed/{name}"], two[f"straight/{name}"],
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(one["history_loss"][:2], two["history_loss"][:2])


@pytest.mark.parametrize("fail", ["kill", "raise", "hang"])
def test_a_failing_rank_ends_the_job_with_an_error(tmp_path, fail):
    proc, seconds = run_ranks(2, fail, tmp_path, env={"PYFAST_DIST_TIMEOUT": "3"}, timeout=60)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "rank 0 finished" not in text
    assert seconds < 30, text
    if fail == "raise":
        assert "[rank 1]" in text and "RuntimeError: rank 1 fails on purpose" in text
    if fail == "hang":
        assert "did not complete within 3 s" in text
