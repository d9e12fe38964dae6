"""pf.optim: SGD, RMSprop, Adam, AdamW over flat parameter buffers, and lr schedulers.

Each optimizer takes torch.optim's constructor arguments and defaults, packs its parameters
into one flat buffer per group (per dtype/device) and steps them with one ``pf.ops`` call.
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "lr_scheduler"]
