"""DataLoader: batching, len, drop_last, shuffle determinism per (seed, epoch), the global
generator without a seed, resuming from state_dict, generic datasets, transforms, errors."""

import numpy as np
import pytest

import pyfast as pf


def dataset(n=10, y=True):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return pf.data.ArrayDataset(x, np.arange(n, dtype=np.int64) if y else None)


class ListDataset:
    """Not an ArrayDataset: samples built one at a time."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.full((2, 3), i, np.float32), i


def order(loader):
    return np.concatenate([y for _, y in loader]) if len(loader) else np.empty(0)


@pytest.mark.parametrize("n,bs,drop_last,sizes", [
    (10, 3, False, [3, 3, 3, 1]), (10, 3, True, [3, 3, 3]), (9, 3, False, [3, 3, 3]),
    (2, 5, False, [2]), (2, 5, True, []), (0, 4, False, []), (10, 10, True, [10])])
def test_batches_len_and_drop_last(n, bs, drop_last, sizes):
    loader = pf.data.DataLoader(dataset(n), bs, drop_last=drop_last)
    assert len(loader) == len(sizes)
    batches = list(loader)
    assert [len(x) for x, _ in batches] == sizes
    for x, y in batches:
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape[1:] == (2,)
        np.testing.assert_array_equal(x[:, 0], 2 * y)
    assert list(order(loader)) == list(range(sum(sizes)))


def test_batches_are_copies():
    ds = dataset(4)
    x, _ = next(iter(pf.data.DataLoader(ds, 2)))
    x[:] = -1
    assert ds.x.min() == 0


def test_seeded_shuffle_is_a_function_of_seed_and_epoch():
    ds = dataset(50)
    a = pf.data.DataLoader(ds, 8, shuffle=True, seed=7)
    b = pf.data.DataLoader(ds, 8, shuffle=True, seed=7)
    e0, e1 = order(a), order(a)
    assert sorted(e0) == list(range(50)) and sorted(e1) == list(range(50))
    assert not np.array_equal(e0, e1)  # a new order every epoch
    np.testing.assert_array_equal(order(b), e0)
    b.set_epoch(1)
    np.testing.assert_array_equal(order(b), e1)
    assert b.epoch == 2
    pf.manual_seed(123)  # the global generator plays no part with a seed
    c = pf.data.DataLoader(ds, 8, shuffle=True, seed=7)
    np.testing.assert_array_equal(order(c), e0)
    assert not np.array_equal(order(pf.data.DataLoader(ds, 8, shuffle=True, seed=8)), e0)


def test_unseeded_shuffle_follows_manual_seed():
    ds = dataset(40)
    pf.manual_seed(5)
    first = [order(pf.data.DataLoader(ds, 7, shuffle=True)) for _ in range(2)]
    pf.manual_seed(5)
    again = [order(pf.data.DataLoader(ds, 7, shuffle=True)) for _ in range(2)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])


def test_no_shuffle_draws_nothing_from_the_global_generator():
    pf.manual_seed(9)
    list(pf.data.DataLoader(dataset(10), 3))
    after = pf._random.generator().random()
    pf.manual_seed(9)
    assert pf._random.generator().random() == after


@pytest.mark.parametrize("seed", [3, None])
def test_resume_mid_epoch_reproduces_the_rest(seed):
    ds = dataset(30)
    aug = pf.data.transforms.GaussianNoise(std=1.0, clip=None)
    pf.manual_seed(1)
    full = pf.data.DataLoader(ds, 4, shuffle=True, seed=seed, transform=aug)
    list(full)  # epoch 0
    reference = [(x.copy(), y.copy()) for x, y in full]  # epoch 1

    pf.manual_seed(1)
    run = pf.data.DataLoader(ds, 4, shuffle=True, seed=seed, transform=aug)
    list(run)
    it = iter(run)
    head = [next(it) for _ in range(3)]
    state = run.state_dict()
    assert state["epoch"] == 1 and state["batch"] == 3

    resumed = pf.data.DataLoader(ds, 4, shuffle=True, seed=seed, transform=aug)
    resumed.load_state_dict(state)
    tail = list(resumed)
    got = head + tail
    assert len(got) == len(reference) == 8
    for (x, y), (rx, ry) in zip(got, reference):
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(x, rx)
    assert resumed.state_dict() == {"epoch": 2, "batch": 0, "draw": -1}


def test_state_after_a_finished_pass_points_at_the_next_epoch():
    loader = pf.data.DataLoader(dataset(6), 3, shuffle=True, seed=0)
    assert loader.state_dict() == {"epoch": 0, "batch": 0, "draw": -1}
    it = iter(loader)
    next(it), next(it)  # every batch taken, StopIteration not yet seen
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0
    with pytest.raises(ValueError):
        loader.load_state_dict({"epoch": 0})


def test_unsupervised_batches_share_input_and_target():
    x, y = next(iter(pf.data.DataLoader(dataset(5, y=False), 2, shuffle=True, seed=0)))
    assert y is x
    noisy = pf.data.DataLoader(dataset(5, y=False), 5, transform=pf.data.GaussianNoise(0.5))
    x, y = next(iter(noisy))
    np.testing.assert_array_equal(y, dataset(5).x)  # the clean target of a denoiser
    assert not np.array_equal(x, y)


@pytest.mark.parametrize("shuffle", [False, True])
def test_generic_dataset_matches_array_dataset(shuffle):
    generic = pf.data.DataLoader(ListDataset(11), 4, shuffle=shuffle, seed=2)
    batches = list(generic)
    assert len(batches) == len(generic) == 3
    x, y = batches[0]
    assert x.shape == (4, 2, 3) and x.dtype == np.float32 and y.dtype.kind == "i"
    np.testing.assert_array_equal(x[:, 0, 0], y)
    arrays = pf.data.ArrayDataset(np.arange(11), np.arange(11))
    ours = order(pf.data.DataLoader(arrays, 4, shuffle=shuffle, seed=2))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), ours)


def test_generic_dataset_errors_name_the_problem():
    class Bad(ListDataset):
        def __getitem__(self, i):
            return np.zeros(2)

    with pytest.raises(TypeError, match=r"Bad\[0\] must be a pair"):
        next(iter(pf.data.DataLoader(Bad(3), 2)))

    class Ragged(ListDataset):
        def __getitem__(self, i):
            return np.zeros(i + 1), 0

    with pytest.raises(ValueError, match="shapes differ"):
        next(iter(pf.data.DataLoader(Ragged(3), 2)))


def test_transform_gets_batches_and_a_private_generator():
    seen = []

    def record(x, y, rng):
        seen.append(rng.random())
        return x * 2, y

    loader = pf.data.DataLoader(dataset(6), 3, seed=0, transform=record)
    x, _ = next(iter(loader))
    np.testing.assert_array_equal(x, dataset(6).x[:3] * 2)
    list(loader)
    loader.set_epoch(0)
    list(loader)
    # epoch 0 batch 0, epoch 1 batches 0-1, epoch 0 again batches 0-1
    assert len(seen) == 5 and seen[3] == seen[0]
    assert len({seen[1], seen[2], seen[3], seen[4]}) == 4


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.5), ValueError, "batch_size"),
    (dict(batch_size=2, seed=-1), ValueError, "seed"),
    (dict(batch_size=2, device="tpu"), ValueError, "device"),
    (dict(batch_size=2, transform=3), TypeError, "transform")])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        pf.data.DataLoader(dataset(4), **kwargs)
    with pytest.raises(TypeError, match="len"):
        pf.data.DataLoader(object(), 2)


def test_cuda_without_cupy_says_so():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="needs CuPy"):
        pf.data.DataLoader(dataset(4), 2, device="cuda")


@pytest.mark.cuda
def test_cuda_batches_are_cupy():
    import cupy
    loader = pf.data.DataLoader(dataset(5), 2, shuffle=True, seed=0, device="cuda")
    x, y = next(iter(loader))
    assert isinstance(x, cupy.ndarray) and isinstance(y, cupy.ndarray)
    on_gpu = pf.data.ArrayDataset(cupy.asarray(dataset(5).x), cupy.arange(5))
    x, y = next(iter(pf.data.DataLoader(on_gpu, 2, shuffle=True, seed=0, device="cpu")))
    assert isinstance(x, np.ndarray)
