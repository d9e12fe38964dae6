"""Thread safety: pf.ops called from several Python threads at once (each kernel releases
the GIL, so they truly overlap, and each calling thread gets its own OpenMP team and
scratch buffers), and pf.set_num_threads changed while kernels run in another thread.
Every result must equal what the same call gives when run alone."""

import threading

import numpy as np
import pytest

import pyfast as pf
from tests.conftest import backend_params

ROUNDS = 24


def workload(seed):
    """Calls across the families, large enough to open parallel regions, with their inputs."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((96, 80)).astype(np.float32)
    b = rng.standard_normal((80, 72)).astype(np.float32)
    bias = rng.standard_normal(72).astype(np.float32)
    x = rng.standard_normal((2, 6, 17, 15)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 8, 17, 15)).astype(np.float32)
    logits = rng.standard_normal((300, 70)).astype(np.float32)
    labels = rng.integers(0, 70, 300)
    p0 = rng.standard_normal(40000).astype(np.float32)
    g = rng.standard_normal(40000).astype(np.float32)
    conv = dict(stride=1, padding=1, groups=2)

    def adam():
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step in (1, 2):
            pf.ops.adam_step(p, g, m, v, step=step, lr=1e-2, weight_decay=0.1)
        return p, m, v

    calls = {
        "matmul": lambda: pf.ops.matmul(a, b, bias=bias, activation="relu"),
        "matmul_t": lambda: pf.ops.matmul(b, a, trans_a=True, trans_b=True),
        "conv2d": lambda: pf.ops.conv2d(x, w, **conv),
        "conv2d_backward": lambda: pf.ops.conv2d_backward(gy, x, w, **conv),
        "xent": lambda: pf.ops.softmax_cross_entropy(logits, labels, label_smoothing=0.1),
        "adam": adam,
        "batch_norm": lambda: pf.ops.batch_norm(x, training=True)[0],
        "max_pool2d": lambda: pf.ops.max_pool2d(x, 3, 2, 1),
    }
    return calls


def flatten(result):
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in flatten(r)]
    return [] if result is None else [np.asarray(result)]


def assert_same(got, want, what):
    for g, w in zip(flatten(got), flatten(want)):
        # the thread count may change the order of a reduction, never the value beyond it
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5, err_msg=what)


def run_threads(targets):
    errors = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # reported in the main thread
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guard(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


@pytest.fixture
def restore_threads():
    before = pf.get_num_threads()
    yield
    pf.set_num_threads(before)


@pytest.mark.parametrize("backend", [p for p in backend_params("gemm", "cpu")
                                     if p.values[0] != "reference"])
def test_kernels_from_several_python_threads(backend, restore_threads):
    pf.set_num_threads(2)
    with pf.use_backend(backend):
        calls = workload(0)
        want = {name: fn() for name, fn in calls.items()}

    def worker(offset):
        def run():
            # contextvars: each thread picks its backend itself
            with pf.use_backend(backend):
                names = list(calls)
                for r in range(ROUNDS):
                    name = names[(r + offset) % len(names)]
                    assert_same(calls[name](), want[name], f"{name} in thread {offset}")
        return run

    run_threads([worker(i) for i in range(4)])


def test_set_num_threads_while_kernels_run(restore_threads):
    """One thread keeps changing the thread count while others run kernels: each call reads
    the count once per parallel region and sizes its per-thread buffers from that same read,
    so results stay right and nothing is written out of bounds."""
    calls = workload(1)
    pf.set_num_threads(1)
    want = {name: fn() for name, fn in calls.items()}
    done = threading.Event()

    def toggler():
        n = 0
        while not done.is_set():
            pf.set_num_threads(1 + n % 4)
            n += 1

    def worker(offset):
        def run():
            names = list(calls)
            try:
                for r in range(ROUNDS * 2):
                    name = names[(r + offset) % len(names)]
                    assert_same(calls[name](), want[name], f"{name} while threads change")
            finally:
                if offset == 0:
                    done.set()
        return run

    run_threads([toggler, worker(0), worker(1)])
