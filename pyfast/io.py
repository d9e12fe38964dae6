"""pf.save / pf.load: checkpoints as safetensors files, never pickle.

A checkpoint is a tree: dicts (str or int keys), lists and tuples, with arrays and plain
values (None, bool, int, float, str) at the leaves. The arrays become the file's tensors,
named by their path ("model/conv1.weight"; a flat model state dict keeps its own keys, so
other safetensors readers see the usual names). The tree's shape and the plain values go
into the header's metadata as JSON under ``pyfast.tree``, so ``load`` rebuilds the same
nesting and loading a file can run no code. A safetensors file without that entry (written
by another tool) loads as a flat ``{name: array}`` dict.

Writes are atomic: the file is written under a temporary name in the same folder, fsynced,
then renamed over the target, so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os

import numpy as np

from pyfast._arrays import is_cupy

__all__ = ["save", "load"]

_TREE_KEY = "pyfast.tree"
_FORMAT_KEY = "pyfast.format"
_FORMAT = "1"
_ARRAY_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
    np.float16, np.float32, np.float64, np.complex64))


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as exc:
        raise ModuleNotFoundError(
            "pf.save/pf.load need the safetensors package (pip install safetensors)") from exc
    return safetensors


def _where(path):
    return "state" + "".join(f"[{k!r}]" for k in path)


def _host_array(value, path):
    """``value`` as a C-contiguous numpy array, or None when it is not array-like."""
    if isinstance(value, np.ndarray):
        arr = value
    elif is_cupy(value):
        arr = value.get()
    elif type(value).__module__.partition(".")[0] == "pyfast" and hasattr(value, "numpy"):
        arr = np.asarray(value.numpy())           # pf.Tensor (numpy() copies from the GPU)
    elif hasattr(value, "__dlpack__"):
        if hasattr(value, "detach"):               # torch refuses to export a tensor in a graph
            value = value.detach()
        if hasattr(value, "cpu"):
            value = value.cpu()
        arr = np.from_dlpack(value)
    else:
        return None
    if arr.dtype not in _ARRAY_DTYPES:
        raise TypeError(f"pf.save: {_where(path)} is an array of dtype {arr.dtype}, which a "
                        f"safetensors file cannot hold (bool, ints, float16/32/64, complex64)")
    # not ascontiguousarray: it turns a 0-d array into shape (1,)
    return arr if arr.flags.c_contiguous else np.array(arr, order="C")


def _encode(value, path, tensors, names):
    """The JSON node for ``value``; arrays are added to ``tensors`` under a unique name."""
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int, np.integer)):
                raise TypeError(f"pf.save: {_where(path)} has a key {key!r} of type "
                                f"{type(key).__name__}; keys must be str or int")
            key = key if isinstance(key, str) else int(key)
            items.append([key, _encode(item, path + (key,), tensors, names)])
        return {"d": items}
    if isinstance(value, (list, tuple)):
        nodes = [_encode(item, path + (i,), tensors, names) for i, item in enumerate(value)]
        return {"t" if isinstance(value, tuple) else "l": nodes}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"v": value}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return {"v": value.item()}
    arr = _host_array(value, path)
    if arr is None:
        raise TypeError(f"pf.save: {_where(path)} is a {type(value).__name__}; a checkpoint "
                        f"holds dicts, lists, tuples, arrays, Tensors, numbers, bools, str and "
                        f"None")
    name = "/".join(str(k) for k in path) or "tensor"
    if name in names:                               # {"a/b": x} beside {"a": {"b": y}}
        n = 1
        while f"{name}~{n}" in names:
            n += 1
        name = f"{name}~{n}"
    names.add(name)
    tensors[name] = arr
    return {"a": name}


def save(state, path):
    """Write ``state`` (a dict, nested dicts/lists allowed, of arrays, Tensors, numbers,
    bools, strings and None) to ``path`` as a safetensors file, atomically.

    Raises TypeError naming the entry that cannot be stored."""
    if not isinstance(state, dict):
        raise TypeError(f"pf.save: state must be a dict, got {type(state).__name__}")
    path = os.fspath(path)
    tensors, names = {}, set()
    tree = _encode(state, (), tensors, names)
    metadata = {_FORMAT_KEY: _FORMAT, _TREE_KEY: json.dumps(tree, separators=(",", ":"))}
    st = _safetensors()
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory,
                       f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    # Created by hand (not mkstemp) to learn the mode the umask gives a new file: safetensors
    # rewrites it as 0600, and a checkpoint should be as readable as any file the user writes.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = os.stat(tmp).st_mode & 0o777
        st.numpy.save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_directory(directory)


def fsync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    try:
        fd = os.open(directory, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _decode(node, tensors, file):
    try:
        if "d" in node:
            return {key: _decode(item, tensors, file) for key, item in node["d"]}
        if "l" in node:
            return [_decode(item, tensors, file) for item in node["l"]]
        if "t" in node:
            return tuple(_decode(item, tensors, file) for item in node["t"])
        if "v" in node:
            return node["v"]
        return tensors[node["a"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"pf.load: {file} is corrupt: its metadata does not match its "
                         f"tensors ({type(exc).__name__}: {exc})") from None


def load(path):
    """Read a file written by ``save``: the same nesting, with numpy arrays for the arrays.

    A safetensors file that ``save`` did not write loads as a flat ``{name: array}`` dict.
    A truncated, corrupt or non-safetensors file raises ValueError naming the file."""
    path = os.fspath(path)
    st = _safetensors()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pf.load: no such file: {path}")
    try:
        with st.safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # SafetensorError and whatever a garbage header provokes
        raise ValueError(f"pf.load: {path} is not a valid safetensors file (truncated, "
                         f"corrupt or another format): {exc}") from None
    if _TREE_KEY not in metadata:
        return tensors
    if metadata.get(_FORMAT_KEY) != _FORMAT:
        raise ValueError(f"pf.load: {path} was written by an unknown pyfast checkpoint format "
                         f"{metadata.get(_FORMAT_KEY)!r} (this version reads {_FORMAT!r})")
    try:
        tree = json.loads(metadata[_TREE_KEY])
    except ValueError as exc:
        raise ValueError(f"pf.load: {path} is corrupt: bad {_TREE_KEY} metadata ({exc})") from None
    if not isinstance(tree, dict) or "d" not in tree:
        raise ValueError(f"pf.load: {path} is corrupt: its {_TREE_KEY} metadata is not a dict")
    return _decode(tree, tensors, path)
