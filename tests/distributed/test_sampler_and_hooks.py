"""In-process parts of data-parallel training (no MPI here): DistributedSampler, the
DataLoader's sampler=, the tape's gradient hooks, and the error without mpi4py."""

import subprocess
import sys

import numpy as np
import pytest

import pyfast as pf
from pyfast.tensor import register_backward_end_hook


def _shards(n, world, **kw):
    ds = pf.data.ArrayDataset(np.zeros((n, 1), np.float32), np.arange(n))
    return [list(pf.data.DistributedSampler(ds, num_replicas=world, rank=r, **kw))
            for r in range(world)]


@pytest.mark.parametrize("n,world", [(10, 2), (11, 3), (2, 4), (64, 8), (1, 1)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_are_disjoint_and_complete(n, world, shuffle):
    shards = _shards(n, world, shuffle=shuffle, seed=5)
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // world)
    every = [i for s in shards for i in s]
    assert set(every) == set(range(n))
    assert len(every) - n == len(shards[0]) * world - n    # only the padding repeats


def test_drop_last_cuts_to_a_multiple():
    shards = _shards(11, 3, drop_last=True)
    every = [i for s in shards for i in s]
    assert [len(s) for s in shards] == [3, 3, 3] and len(set(every)) == 9


def test_order_depends_on_seed_and_epoch_only():
    ds = pf.data.ArrayDataset(np.zeros((50, 1), np.float32), np.arange(50))
    a = pf.data.DistributedSampler(ds, seed=1, num_replicas=2, rank=0)
    b = pf.data.DistributedSampler(ds, seed=1, num_replicas=2, rank=0)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(pf.data.DistributedSampler(ds, shuffle=False, num_replicas=2, rank=1)) == \
        list(range(1, 50, 2))


def test_sampler_defaults_to_one_process_and_checks_arguments():
    ds = pf.data.ArrayDataset(np.zeros((5, 1), np.float32), np.arange(5))
    s = pf.data.DistributedSampler(ds, shuffle=False)
    assert (s.num_replicas, s.rank, list(s)) == (1, 0, [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="rank"):
        pf.data.DistributedSampler(ds, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        pf.data.DistributedSampler(ds, num_replicas=0, rank=0)


def test_loader_with_sampler_moves_epochs_and_resumes():
    ds = pf.data.ArrayDataset(np.arange(20, dtype=np.float32)[:, None], np.arange(20))
    sampler = pf.data.DistributedSampler(ds, seed=2, num_replicas=2, rank=1)
    loader = pf.data.DataLoader(ds, 3, sampler=sampler)
    assert len(loader) == 4
    passes = [np.concatenate([y for _, y in loader]) for _ in range(3)]
    for epoch, got in enumerate(passes):
        sampler.set_epoch(epoch)
        np.testing.assert_array_equal(got, sampler.indices())
    assert not np.array_equal(passes[0], passes[1])
    sampler.set_epoch(1)       # picks the next pass's order, as torch users do
    np.testing.assert_array_equal(np.concatenate([y for _, y in loader]), passes[1])
    # a restored loader state carries the epoch to the sampler
    state = {"epoch": 2, "batch": 0, "draw": -1}
    fresh = pf.data.DataLoader(ds, 3, sampler=pf.data.DistributedSampler(
        ds, seed=2, num_replicas=2, rank=1))
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate([y for _, y in fresh]), passes[2])
    with pytest.raises(ValueError, match="exclude"):
        pf.data.DataLoader(ds, 3, shuffle=True, sampler=sampler)
    with pytest.raises(TypeError, match="sampler"):
        pf.data.DataLoader(ds, 3, sampler=5)
    with pytest.raises(ValueError, match="outside"):
        list(pf.data.DataLoader(ds, 3, sampler=[0, 20]))
    assert [y.tolist() for _, y in pf.data.DataLoader(ds, 2, sampler=[4, 1, 3])] == [[4, 1], [3]]


def test_post_accumulate_hook_runs_once_when_the_gradient_is_complete():
    w = pf.tensor(np.ones(3, np.float32), requires_grad=True)
    unused = pf.tensor(np.ones(3, np.float32), requires_grad=True)
    seen, ended = [], []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    handle = unused.register_post_accumulate_grad_hook(lambda t: seen.append("unused"))
    end = register_backward_end_hook(lambda: ended.append(len(seen)))
    try:
        y = (w * 2.0).sum() + (w * w).sum() + (unused * 0.0).sum() * 0.0
        y.backward()
        # once for w, after both paths added up (2 + 2w = 4); once for unused
        assert len(seen) == 2 and ended == [2]
        np.testing.assert_array_equal([s for s in seen if not isinstance(s, str)][0],
                                      np.full(3, 4.0))
        handle.remove()
        (w * 3.0).sum().backward()
        assert len(seen) == 3 and ended == [2, 3]
        w.grad = None
        w.backward(np.ones(3, np.float32))      # a leaf as the root
        assert len(seen) == 4 and ended == [2, 3, 4]
    finally:
        end.remove()
    with pytest.raises(RuntimeError, match="leaf"):
        (w * 2.0).register_post_accumulate_grad_hook(lambda t: None)


def test_init_without_mpi4py_names_the_extra(monkeypatch):
    from pyfast.distributed import comm
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(comm, "_group", None)
    with pytest.raises(ImportError, match=r"pyfast\[distributed\]"):
        pf.distributed.init()
    with pytest.raises(RuntimeError, match="init"):
        pf.distributed.all_reduce(np.ones(2))
    assert (pf.distributed.rank(), pf.distributed.world_size()) == (0, 1)
    with pytest.raises(ValueError, match="backend"):
        pf.distributed.init("gloo")


def test_import_pyfast_does_not_import_mpi4py():
    code = "import sys, pyfast; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
