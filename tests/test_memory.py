"""pf.memory: the caching allocator (pyfast._alloc, a NumPy memory handler) and the scope
pyfast's hot paths enter. The pool is process-wide and other tests' arrays live in it, so
these tests compare deltas of stats() rather than absolute values."""

import gc
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

import pyfast as pf
from pyfast import _memory

pytestmark = pytest.mark.skipif(_memory.native is None,
                                reason="pyfast._alloc not built or PYFAST_ALLOCATOR=0")

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import get_handler_name

OURS = "pyfast_caching"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def capacity(nbytes):
    return _memory.native.class_capacity(nbytes)


def test_class_rounding_bounds_waste():
    previous = 0
    for n in list(range(0, 3000, 7)) + [2**k + d for k in range(10, 40) for d in (-1, 0, 1)]:
        c = capacity(n)
        assert c % 64 == 0 and c >= max(n, 1)
        assert c <= max(64, n + 63) if n <= 1024 else c <= 1.25 * n + 64
        assert c >= previous or n < previous   # monotone in n
        previous = c


def test_stats_move_and_empty_cache_releases():
    nbytes = 3 << 20
    before = pf.memory.stats()
    with _memory.scope():
        a = np.empty(nbytes, np.uint8)
    assert get_handler_name(a) == OURS
    mid = pf.memory.stats()
    assert mid["in_use"] - before["in_use"] == capacity(nbytes)
    assert mid["peak"] >= mid["in_use"]
    del a                                 # freed outside the scope: still to the cache
    after = pf.memory.stats()
    assert after["in_use"] == before["in_use"]
    assert after["held"] - after["in_use"] >= capacity(nbytes)
    pf.memory.empty_cache()
    emptied = pf.memory.stats()
    assert emptied["held"] == emptied["in_use"]
    assert set(emptied) == {"held", "in_use", "peak"}


def test_alignment_64():
    sizes = [0, 1, 7, 63, 64, 65, 1000, 1023, 1024, 1025, 4097, 100_000, 300_000, 5 << 20]
    with _memory.scope():
        arrays = [np.empty(n, np.uint8) for n in sizes]
    for n, a in zip(sizes, arrays):
        assert get_handler_name(a) == OURS
        assert a.ctypes.data % 64 == 0, n


def test_reuses_blocks_and_calloc_zeroes():
    n = 1 << 16
    with _memory.scope():
        a = np.empty(n, np.float32)
        a.fill(np.nan)
        address = a.ctypes.data
        del a
        b = np.zeros(n, np.float32)        # the same block back (LIFO), zeroed by calloc
    assert b.ctypes.data == address
    assert not b.any()
    with _memory.scope():
        big = np.zeros(3 << 20, np.uint8)   # mmap'ed, fresh or reused: zero either way
        big[:] = 7
        del big
        big = np.zeros(3 << 20, np.uint8)
    assert not big.any()


def test_arrays_cross_the_scope_both_ways():
    outside = np.arange(10_000, dtype=np.float64)
    assert get_handler_name(outside) != OURS
    before = pf.memory.stats()["in_use"]
    with _memory.scope():
        inside = outside * 2               # made inside: ours
        del outside                        # made outside, freed inside: NumPy's own free
        assert get_handler_name(inside) == OURS
    assert get_handler_name() != OURS      # the scope restored the default
    assert pf.memory.stats()["in_use"] == before + capacity(inside.nbytes)
    np.testing.assert_array_equal(inside, np.arange(10_000) * 2.0)
    del inside
    assert pf.memory.stats()["in_use"] == before


def test_realloc_paths():
    with _memory.scope():
        a = np.arange(1000, dtype=np.float64)
    # ndarray.resize reallocates with the array's own handler, here outside the scope:
    # within the block's class, then across classes and into mmap'ed sizes
    for n in (1010, 5000, 100_000, 500, 3):
        old = a[:min(n, a.size)].copy()
        a.resize(n, refcheck=False)
        assert get_handler_name(a) == OURS and a.ctypes.data % 64 == 0
        np.testing.assert_array_equal(a[:old.size], old)
        assert not a[old.size:].any()      # resize zero-fills what it adds
    with _memory.scope():
        r = np.resize(np.arange(5.0), (7,))
        grown = np.fromiter((i * 0.5 for i in range(50_000)), np.float64)  # grows by realloc
    np.testing.assert_array_equal(r, [0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(grown, np.arange(50_000) * 0.5)
    assert get_handler_name(grown) == OURS


def test_threads_allocate_and_free_across_each_other():
    gc.collect()
    before = pf.memory.stats()["in_use"]
    handoff, errors = [], []
    lock = threading.Lock()

    def work(seed):
        try:
            rng = np.random.default_rng(seed)
            for i in range(200):
                with _memory.scope():
                    a = np.ones(int(rng.integers(1, 50_000)), np.float32)
                    b = a * 2                 # the ufunc may drop the GIL while it runs
                assert get_handler_name(b) == OURS and float(b[-1]) == 2.0
                with lock:
                    handoff.append(b)         # another thread frees it
                    if len(handoff) > 8:
                        handoff.pop(0)
                del a
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    handoff.clear()
    assert pf.memory.stats()["in_use"] == before


def test_scope_survives_errors_and_nests():
    assert get_handler_name() != OURS
    with pytest.raises(ValueError, match="x must be"):
        pf.ops.conv2d(np.zeros((2, 3), np.float32), np.zeros((1, 3, 1, 1), np.float32))
    assert get_handler_name() != OURS
    outer = _memory.scope_enter()
    assert _memory.scope_enter() is None       # nested: nothing to restore
    _memory.scope_exit(None)
    assert get_handler_name() == OURS
    _memory.scope_exit(outer)
    assert get_handler_name() != OURS


def test_fronts_stay_functions():
    import inspect
    assert pickle.loads(pickle.dumps(pf.ops.conv2d)) is pf.ops.conv2d
    assert pf.ops.conv2d is pf.ops.conv.conv2d
    assert "bias" in inspect.signature(pf.ops.conv2d).parameters
    assert pf.ops.relu.__doc__ and pf.ops.relu.__name__ == "relu"


def _tiny_resnet():
    """Stem, one residual block (conv-BN-ReLU twice plus the skip), pooling, linear head."""
    nn = pf.nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + x)

    pf.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(), Block(8), nn.MaxPool2d(2), Block(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_training_step_is_steady_and_uses_the_pool():
    from pyfast.nn import functional as F
    model = _tiny_resnet()
    model.train()
    opt = pf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = pf.data.DataLoader(
        pf.data.ArrayDataset(np.random.default_rng(0).standard_normal((8, 3, 8, 8))
                             .astype(np.float32), np.arange(8) % 10), batch_size=4)
    batch_x, _ = next(iter(loader))
    assert get_handler_name(batch_x) == OURS
    assert get_handler_name(opt._buckets[0].data) == OURS
    del batch_x

    def step(x, y):
        out = model(x)
        assert get_handler_name(out.data) == OURS
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    stats = []
    for epoch in range(4):
        for x, y in loader:
            step(x, y)
        del x, y
        stats.append(pf.memory.stats())
    assert get_handler_name(opt._buckets[0].grad) == OURS   # each .grad is a view of it
    # after warm-up the live bytes come back to the same value and nothing more is taken
    assert stats[1]["in_use"] == stats[2]["in_use"] == stats[3]["in_use"]
    assert stats[1]["held"] == stats[2]["held"] == stats[3]["held"]
    assert get_handler_name() != OURS


def test_disabled_by_environment():
    code = ("import numpy as np, pyfast as pf\n"
            "from numpy._core.multiarray import get_handler_name\n"
            "y = pf.ops.relu(np.ones(10, np.float32))\n"
            "print(pf.memory.enabled(), pf.memory.stats(), get_handler_name(y))\n")
    env = dict(os.environ, PYFAST_ALLOCATOR="0",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "False" and out[-1] != OURS
    pf.memory.empty_cache()   # a no-op here, as there


def test_switch_off_in_process():
    was = _memory.native.set_enabled(False)
    try:
        assert get_handler_name(pf.ops.relu(np.ones(10, np.float32))) != OURS
    finally:
        _memory.native.set_enabled(was)
    assert get_handler_name(pf.ops.relu(np.ones(10, np.float32))) == OURS
