"""The memory-format helpers every channels-last kernel path relies on (torch's convention:
NCHW shape, NHWC memory)."""

import numpy as np
import pytest

from pyfast import _arrays as A


def test_channels_last_roundtrip_keeps_values_and_shape():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    cl = A.to_memory_format(x, A.CHANNELS_LAST)
    assert cl.shape == x.shape and np.array_equal(cl, x)
    assert A.is_channels_last(cl) and not A.is_channels_last(x)
    assert cl.transpose(0, 2, 3, 1).flags.c_contiguous
    assert A.to_memory_format(cl, A.CHANNELS_LAST) is cl
    back = A.to_memory_format(cl, A.CONTIGUOUS)
    assert back.flags.c_contiguous and np.array_equal(back, x)


@pytest.mark.parametrize("shape", [(2, 1, 4, 5), (2, 3, 1, 1), (1, 1, 1, 1)])
def test_arrays_both_layouts_describe_count_as_contiguous(shape):
    x = np.zeros(shape, np.float32)
    assert A.memory_format(x) == A.CONTIGUOUS
    assert A.to_memory_format(x, A.CHANNELS_LAST) is x


def test_strided_views_are_not_channels_last():
    cl = A.to_memory_format(np.zeros((2, 4, 3, 3), np.float32), A.CHANNELS_LAST)
    assert not A.is_channels_last(cl[:, ::2])
    assert not A.is_channels_last(cl[:, :, 1:])


def test_empty_like_format_follows_the_input():
    cl = A.to_memory_format(np.zeros((2, 3, 4, 5), np.float32), A.CHANNELS_LAST)
    assert A.is_channels_last(A.empty_like_format((2, 7, 4, 5), np.float32, cl))
    assert A.empty_like_format((2, 7, 4, 5), np.float32, np.zeros((2, 3, 4, 5))).flags.c_contiguous
    with pytest.raises(ValueError, match="channels_last"):
        A.to_memory_format(np.zeros((2, 3)), A.CHANNELS_LAST)
