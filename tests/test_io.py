"""pf.save / pf.load: safetensors files, same nesting back, atomic writes, clear errors."""

import os

import numpy as np
import pytest

import pyfast as pf

pytest.importorskip("safetensors")


def _state():
    rng = np.random.default_rng(0)
    return {
        "model": {"conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                  "bn.num_batches_tracked": np.array(7, dtype=np.int64),
                  "empty": np.zeros((0, 5), np.float64)},
        "optimizer": {"state": {0: {"step": 3.0, "exp_avg": np.arange(5.0)},
                                1: {"step": 3.0, "exp_avg": np.ones((2, 2), np.float32)}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "amsgrad": False,
                                        "foreach": None, "params": [0, 1]}]},
        "epoch": 4,
        "history": {"loss": [0.5, 0.25], "val_accuracy": [0.75, float("nan")]},
        "name": "run-1",
        "rng": {"state": {"state": 2 ** 127 + 12345, "inc": 3}},
        "mask": np.array([True, False, True]),
        "strided": np.arange(12.0).reshape(3, 4)[:, ::2],
    }


def _equal(a, b):
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b)
    else:
        assert type(a) is type(b) and a == b


def test_round_trip_keeps_nesting_types_and_values(tmp_path):
    state = _state()
    path = tmp_path / "ckpt.safetensors"
    pf.save(state, path)
    back = pf.load(str(path))
    expected = dict(state, strided=np.ascontiguousarray(state["strided"]))
    _equal(expected, back)
    assert isinstance(next(iter(back["optimizer"]["state"])), int)   # int keys stay ints


def test_tensors_and_numpy_scalars_are_stored(tmp_path):
    t = pf.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    pf.save({"t": t, "p": pf.nn.Parameter(np.ones(3, np.float32)), "s": np.float32(1.5),
             "i": np.int64(3)}, tmp_path / "x.st")
    back = pf.load(tmp_path / "x.st")
    np.testing.assert_array_equal(back["t"], t.numpy())
    np.testing.assert_array_equal(back["p"], np.ones(3, np.float32))
    assert back["s"] == 1.5 and back["i"] == 3 and isinstance(back["i"], int)


def test_torch_tensors_are_stored(tmp_path):
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.randn(3, 2))
    pf.save({"w": w}, tmp_path / "w.st")
    np.testing.assert_array_equal(pf.load(tmp_path / "w.st")["w"], w.detach().numpy())


def test_flat_state_dict_keeps_its_names_for_other_readers(tmp_path):
    from safetensors.numpy import load_file
    sd = {"layer1.0.weight": np.ones((2, 2), np.float32), "fc.bias": np.zeros(2, np.float32)}
    pf.save(sd, tmp_path / "m.safetensors")
    assert sorted(load_file(str(tmp_path / "m.safetensors"))) == sorted(sd)


def test_foreign_safetensors_file_loads_flat(tmp_path):
    from safetensors.numpy import save_file
    save_file({"a": np.arange(3.0)}, str(tmp_path / "other.safetensors"))
    back = pf.load(tmp_path / "other.safetensors")
    assert list(back) == ["a"]
    np.testing.assert_array_equal(back["a"], np.arange(3.0))


def test_colliding_paths_do_not_overwrite(tmp_path):
    state = {"a/b": np.ones(2), "a": {"b": np.zeros(2)}}
    pf.save(state, tmp_path / "c.st")
    _equal(state, pf.load(tmp_path / "c.st"))


@pytest.mark.parametrize("bad, key", [
    ({"x": object()}, "state['x']"),
    ({"x": {"y": [1, {2, 3}]}}, "state['x']['y'][1]"),
    ({"x": np.array(["a", "b"])}, "state['x']"),
    ({"x": np.zeros(2, np.complex128)}, "state['x']"),
    ({(1, 2): 3}, "state"),
    ({True: 3}, "state"),
])
def test_unstorable_values_raise_type_error_naming_the_key(tmp_path, bad, key):
    with pytest.raises(TypeError, match=key.replace("[", r"\[").replace("]", r"\]")):
        pf.save(bad, tmp_path / "bad.st")
    assert not os.listdir(tmp_path)          # nothing half-written, no temporary left


def test_state_must_be_a_dict(tmp_path):
    with pytest.raises(TypeError, match="dict"):
        pf.save([np.ones(2)], tmp_path / "x.st")


def test_crash_during_write_leaves_old_file_intact(tmp_path, monkeypatch):
    import safetensors.numpy
    path = tmp_path / "ckpt.safetensors"
    pf.save({"w": np.ones(3)}, path)
    before = path.read_bytes()

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"w\":")   # a torn header
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        pf.save({"w": np.zeros(3)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    np.testing.assert_array_equal(pf.load(path)["w"], np.ones(3))


def test_crash_at_fsync_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    pf.save({"w": np.ones(3)}, path)

    def failing_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        pf.save({"w": np.zeros(3)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(pf.load(path)["w"], np.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_new_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        pf.save({"w": np.ones(1)}, tmp_path / "p.st")
    finally:
        os.umask(umask)
    assert (os.stat(tmp_path / "p.st").st_mode & 0o777) == 0o644


def test_truncated_file_raises_value_error_naming_it(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    pf.save(_state(), path)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20, 7, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="ckpt.safetensors"):
            pf.load(path)


@pytest.mark.parametrize("content", [
    b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.",        # a pickle
    b"PK\x03\x04" + b"\x00" * 60,                                  # a zip (torch.save)
    b"hello, this is a text file\n",
    b"\xff" * 8 + b"{}",
])
def test_foreign_file_raises_value_error_naming_it(tmp_path, content):
    path = tmp_path / "weights.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="weights.bin"):
        pf.load(path)


def test_corrupt_metadata_raises_value_error(tmp_path):
    from safetensors.numpy import save_file
    path = tmp_path / "c.st"
    tree = '{"d": [["x", {"a": "nope"}]]}'
    save_file({"a": np.ones(2)}, str(path), metadata={"pyfast.format": "1", "pyfast.tree": tree})
    with pytest.raises(ValueError, match="c.st"):
        pf.load(path)
    save_file({"a": np.ones(2)}, str(path), metadata={"pyfast.format": "1", "pyfast.tree": "{"})
    with pytest.raises(ValueError, match="c.st"):
        pf.load(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        pf.load(tmp_path / "nope.st")


def test_a_checkpoint_that_does_not_fit_the_model_names_every_bad_key(tmp_path):
    pf.manual_seed(0)
    pf.save(pf.nn.Sequential(pf.nn.Linear(4, 3), pf.nn.Linear(3, 2)).state_dict(),
            tmp_path / "m.st")
    other = pf.nn.Sequential(pf.nn.Linear(4, 5), pf.nn.ReLU(), pf.nn.Linear(5, 2))
    with pytest.raises(RuntimeError) as err:
        other.load_state_dict(pf.load(tmp_path / "m.st"), strict=True)
    text = str(err.value)
    for key in ("0.weight", "0.bias", "2.weight", "2.bias", "1.weight", "1.bias"):
        assert key in text
    model = pf.nn.Sequential(pf.nn.Linear(4, 3), pf.nn.Linear(3, 2))
    model.load_state_dict(pf.load(tmp_path / "m.st"))
