"""The shape of one 2-D convolution, shared by the Numba CPU and CUDA kernels
(csrc/common/conv_shape.h's ConvShape is the native kernels' twin).

y = conv2d(x, w): x (n, c, h, w), w (k, c / groups, kh, kw), y (n, k, oh, ow), output row
oh reading input rows oh * sh - ph + i * dh (likewise columns). oh and ow are taken as
given, and padding may be negative (a crop), so the input gradient and the transposed
convolution are phrased as convolutions of other shapes. The jitted kernels take the
fields as separate scalar arguments, in this order (``*shape``)."""

from typing import NamedTuple


class ConvShape(NamedTuple):
    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    oh: int
    ow: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    groups: int

    @classmethod
    def of(cls, x_shape, w_shape, y_shape, stride, padding, dilation, groups):
        """From the shapes of x, w and y (NCHW) and the pairs pf.ops validated."""
        n, c, h, w = x_shape
        k, _, kh, kw = w_shape
        return cls(n, c, h, w, k, kh, kw, y_shape[2], y_shape[3], stride[0], stride[1],
                   padding[0], padding[1], dilation[0], dilation[1], groups)

    @classmethod
    def transposed(cls, x_shape, w_shape, out_shape, stride, padding, dilation, groups):
        """conv_transpose2d(x, w) into out: the convolution (input out, output x, weight w)
        whose input gradient it is."""
        return cls.of(out_shape, w_shape, x_shape, stride, padding, dilation, groups)

    def without_stride(self):
        """The fields less sh and sw, for the kernels that run stride 1 only."""
        return (self.n, self.c, self.h, self.w, self.k, self.kh, self.kw, self.oh, self.ow,
                self.ph, self.pw, self.dh, self.dw, self.groups)
