"""pyfast's random state: one NumPy Generator behind parameter initialisation, dropout and
data shuffling, seeded by ``pf.manual_seed``.

Code that draws random numbers calls ``generator()`` each time it needs one (never caches
it), so a later ``manual_seed`` takes effect everywhere. ``get_state``/``set_state`` let a
checkpoint capture and restore it, so a resumed run draws what the uninterrupted one did.
"""

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed parameter initialisation, dropout masks and data shuffling."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    """The generator every random draw in pyfast uses."""
    return _generator


def get_state():
    """The generator's state as a JSON-able dict (for checkpoints)."""
    return _generator.bit_generator.state


def set_state(state):
    _generator.bit_generator.state = state
