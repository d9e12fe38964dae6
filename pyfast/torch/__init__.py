"""pyfast as a PyTorch backend: custom operators, autograd-aware functions, drop-in
layers and optimizers (docs/api.md section 10). Importing this module imports torch;
``import pyfast`` alone never does.

    import pyfast.torch as pft
    model = pft.convert(model)                       # Linear/Conv2d/... run pyfast kernels
    opt = pft.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = pft.cross_entropy(model(x), y)

The operators are ``torch.ops.pyfast.<name>``: matmul, conv2d, conv2d_backward,
conv_transpose2d, softmax_cross_entropy, linear_cross_entropy, sgd_step, adam_step,
rmsprop_step.
"""

from . import _ops, functional, nn, optim  # noqa: F401  (_ops registers the operators)
from .functional import (conv2d, conv_transpose2d, cross_entropy, linear,
                         linear_cross_entropy, matmul)
from .nn import convert

__all__ = ["matmul", "linear", "conv2d", "conv_transpose2d", "cross_entropy",
           "linear_cross_entropy", "convert", "nn", "optim", "functional"]
