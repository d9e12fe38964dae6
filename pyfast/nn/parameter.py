"""Parameter: a Tensor that a Module registers as trainable (a leaf with requires_grad)."""

import numpy as np

from pyfast.tensor import Tensor, as_data


class Parameter(Tensor):
    """A leaf tensor that requires grad by default and is registered by the Module it is
    assigned to. Wraps ``data`` without copying."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.empty((0,), np.float32)
        super().__init__(as_data(data), requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter containing:\n{self._data!r}"
