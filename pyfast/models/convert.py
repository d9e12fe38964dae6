"""Loading PyTorch weights into pyfast models.

pyfast's modules keep torch's state-dict layout, so a torch state dict mostly loads as it
is; ``from_torch_state_dict`` takes care of what differs between checkpoints in the wild:
torch tensors (on any device, with or without grad) become numpy arrays, the ``module.``
prefix of DataParallel/DistributedDataParallel checkpoints is removed, the legacy DenseNet
key pattern (``norm.1`` for ``norm1``, which torchvision renames the same way when it loads
its own old files) is renamed, and batch-norm ``num_batches_tracked`` counters that old
checkpoints lack are set to 0 (as torch's BatchNorm does). torch is not imported unless a
file path is given.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict

import numpy as np

from pyfast._arrays import to_host
from pyfast.nn.module import state_dict_array

__all__ = ["from_torch_state_dict", "torch_state_dict_to_numpy"]

_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
    r"running_var))$")


def _to_numpy(value, key):
    if hasattr(value, "detach"):  # a torch tensor: detached, and to the CPU first
        value = value.detach()
        if getattr(value, "device", None) is not None and str(value.device) != "cpu":
            value = value.cpu()
    return to_host(state_dict_array(value, key))


def _read(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"from_torch_state_dict: no file at {path!r}")
    if path.endswith(".safetensors"):
        from pyfast.io import load
        return load(path)
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"from_torch_state_dict: reading {path!r} needs torch (or give a "
                          f".safetensors file)") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and hasattr(state["state_dict"], "keys"):
        state = state["state_dict"]  # a training checkpoint around the weights
    return state


def torch_state_dict_to_numpy(state_dict):
    """An OrderedDict of numpy arrays with the cleaned-up keys (see the module doc)."""
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = _read(state_dict)
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict must be a mapping of names to tensors or a file path, "
                        f"got {type(state_dict).__name__}")
    keys = list(state_dict.keys())
    strip = bool(keys) and all(k.startswith("module.") for k in keys)
    out = OrderedDict()
    for key, value in state_dict.items():
        name = key[len("module."):] if strip else key
        legacy = _DENSENET_LEGACY.match(name)
        if legacy:
            name = legacy.group(1) + legacy.group(2)
        out[name] = _to_numpy(value, key)
    return out


def from_torch_state_dict(model, state_dict, strict=True):
    """Load a PyTorch state dict (a mapping of names to torch tensors or arrays, or the path
    of a ``.pth``/``.pt``/``.safetensors`` file) into the pyfast ``model`` and return the
    model. Values are copied into the model's existing parameters and buffers; ``strict``
    as in ``load_state_dict`` (every missing, unexpected or mis-shaped key is reported in
    one RuntimeError before anything is copied)."""
    state = torch_state_dict_to_numpy(state_dict)
    own = model.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = np.zeros_like(value)
    model.load_state_dict(state, strict=strict)
    return model
