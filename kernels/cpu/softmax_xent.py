"""Numba CPU kernels of the softmax_xent family: softmax, log-softmax, softmax cross-entropy,
BCE-with-logits and MSE, each loss returned with its gradient from one pass over memory.

The passes are those of csrc/cpu/softmax_xent.cpp. Plain rows (s == 1): the row's max (the
one read from memory), e = exp(x - m) into a per-thread scratch row (summed in a second,
cache-resident loop), then the gradient a e - b w from the scratch row, with the label's own
entry recomputed in float64 (see label_grad); the next row is prefetched into L2 during the
exp pass so memory streams while this row computes, and a large output leaves in whole
64-byte non-temporal stores (_stream_line). Positions (s > 1): tiles of TILE positions walk
the classes with the position loop innermost and contiguous. error_model="numpy" keeps
divisions free of per-element zero checks (which stop vectorisation).

Numba has no vector exp here (no SVML), so exp and log are polynomials with the exponent
built in the float's bits (llvmlite intrinsics below), which LLVM vectorises. Three things
keep it vectorising and right: loops index slices (xs = x[i0:i1]; xs[j]), never flat
offsets, because numba's wraparound of negative indices hides the unit stride (gathers
instead of loads); the exp loops carry no "reassoc" flag, which would fold the rounding
trick (x log2e + M) - M back into x log2e, so sums are separate reassociating loops; and
only the max pass has "nnan", so NaN and inf logits propagate as they do in torch.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable

from .optim import threads_for

# fastmath flag sets: _EXACT for loops with exp (no reassociation, no approximate
# division), _SUM adds "reassoc" for vectorised sums; the max pass takes every flag (its
# reduction vectorises only with "nnan")
_EXACT = {"contract", "nsz"}
_SUM = _EXACT | {"reassoc"}
_JIT = dict(cache=True, nogil=True, error_model="numpy")  # IEEE division: no zero check per element

CHUNK = 256       # elements per inner loop of a row pass (the prefetch granularity)
TILE = 64         # positions per tile when s > 1
SEGMENT = 1024    # elements per inner loop of the pointwise losses
LINE = 64         # bytes per cache line
MAX_LANES = 256   # running maxima in row_max (a long loop: the loop vectoriser takes it)
STREAM_MIN_BYTES = 16 << 20  # outputs this large are written with non-temporal stores


# ---------------------------------------------------------------------------- intrinsics

@intrinsic
def _prefetch(typingctx, arr, index):
    """Prefetch the line holding arr[index] into L2 (no fault past the end: a hint)."""
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return types.none(arr, index), codegen


@intrinsic
def _stream_line(typingctx, dst, dst_index, src, src_index):
    """dst[dst_index:dst_index + 64 / itemsize] = src[src_index:...] as one non-temporal
    64-byte store (vmovntps/vmovntpd); &dst[dst_index] must be 64-byte aligned. LLVM does
    not vectorise per-element non-temporal stores (it emits scalar movntss), so the whole
    line is one vector store here."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.dtype == src.dtype and isinstance(dst.dtype, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        elem = context.get_value_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        vec = ir.VectorType(elem, LINE // size)
        d = context.make_array(sig.args[0])(context, builder, args[0])
        s = context.make_array(sig.args[2])(context, builder, args[2])
        src_ptr = builder.bitcast(builder.gep(s.data, [args[3]]), vec.as_pointer())
        dst_ptr = builder.bitcast(builder.gep(d.data, [args[1]]), vec.as_pointer())
        store = builder.store(builder.load(src_ptr, align=size), dst_ptr, align=LINE)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.none(dst, dst_index, src, src_index), codegen


@intrinsic
def _store_fence(typingctx):
    """Orders this thread's non-temporal stores before what follows (mfence)."""
    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


def _int_layout(bitwidth):
    """(integer type, exponent bias, mantissa bits, bits of 1.5 * 2^mantissa)"""
    if bitwidth == 32:
        return ir.IntType(32), 127, 23, 0x4B400000
    return ir.IntType(64), 1023, 52, 0x4338000000000000


@intrinsic
def _pow2_of_rounded(typingctx, t):
    """For t = v + 1.5 * 2^mantissa (the low bits of t hold round(v)): 2^round(v)."""
    if not isinstance(t, types.Float):
        return None

    def codegen(context, builder, sig, args):
        it, bias, mant, magic = _int_layout(sig.args[0].bitwidth)
        e = builder.add(builder.sub(builder.bitcast(args[0], it), it(magic)), it(bias))
        return builder.bitcast(builder.shl(e, it(mant)), context.get_value_type(sig.args[0]))

    return t(t), codegen


@intrinsic
def _exponent(typingctx, x):
    """The unbiased binary exponent of a positive normal float, as that float type."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        it, bias, mant, _ = _int_layout(sig.args[0].bitwidth)
        mask = 0xFF if sig.args[0].bitwidth == 32 else 0x7FF
        bits = builder.bitcast(args[0], it)
        k = builder.sub(builder.and_(builder.lshr(bits, it(mant)), it(mask)), it(bias))
        return builder.sitofp(k, context.get_value_type(sig.args[0]))

    return x(x), codegen


@intrinsic
def _mantissa(typingctx, x):
    """x with its exponent replaced by 0: the significand in [1, 2)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        it, bias, mant, _ = _int_layout(sig.args[0].bitwidth)
        bits = builder.bitcast(args[0], it)
        f = builder.or_(builder.and_(bits, it((1 << mant) - 1)), it(bias << mant))
        return builder.bitcast(f, context.get_value_type(sig.args[0]))

    return x(x), codegen


# ---------------------------------------------------------------------------- exp, log

def vexp(x):
    """exp(x) for float x, vectorisable; 0 below the smallest normal result, NaN stays NaN."""
    return math.exp(x)


def vlog1p(t):
    """log(1 + t) for t >= 0 (or NaN), vectorisable."""
    return math.log1p(t)


def vlog(x):
    """log(x) for positive normal x (or NaN), vectorisable."""
    return math.log(x)


def _exp_constants(f, degree):
    lo = f(-87.3365) if f is np.float32 else f(-708.39)
    hi = f(88.0) if f is np.float32 else f(709.0)
    magic = f(1.5 * 2.0 ** (23 if f is np.float32 else 52))
    # ln 2 in two parts: the first with few bits, so n * part is exact
    ln2 = (f(0.693359375), f(-2.12194440e-4)) if f is np.float32 else \
        (f(6.93147180369123816490e-01), f(1.90821492927058770002e-10))
    coef = tuple(f(1.0 / math.factorial(k)) for k in range(degree, -1, -1))
    return lo, hi, f(1.4426950408889634074), magic, ln2, coef


# The polynomials, one per float type (the degree fits its mantissa), written out for the
# vectoriser; the range reduction around them is shared (_exp_impl, _log_impl).
@register_jitable(inline="always")
def _exp_poly32(r, c):
    c7, c6, c5, c4, c3, c2, c1, c0 = c
    return ((((((c7 * r + c6) * r + c5) * r + c4) * r + c3) * r + c2) * r + c1) * r + c0


@register_jitable(inline="always")
def _exp_poly64(r, c):
    c13, c12, c11, c10, c9, c8, c7, c6, c5, c4, c3, c2, c1, c0 = c
    p = c13 * r + c12
    p = ((((p * r + c11) * r + c10) * r + c9) * r + c8) * r + c7
    return ((((((p * r + c6) * r + c5) * r + c4) * r + c3) * r + c2) * r + c1) * r + c0


@register_jitable(inline="always")
def _log_poly32(u2, c):
    c4, c3, c2, c1, c0 = c
    return (((c4 * u2 + c3) * u2 + c2) * u2 + c1) * u2 + c0


@register_jitable(inline="always")
def _log_poly64(u2, c):
    c11, c10, c9, c8, c7, c6, c5, c4, c3, c2, c1, c0 = c
    p = ((((c11 * u2 + c10) * u2 + c9) * u2 + c8) * u2 + c7) * u2 + c6
    return (((((p * u2 + c5) * u2 + c4) * u2 + c3) * u2 + c2) * u2 + c1) * u2 + c0


def _exp_impl(f):
    single = f is np.float32
    lo, hi, log2e, magic, (ln2_hi, ln2_lo), c = _exp_constants(f, 7 if single else 13)
    poly = _exp_poly32 if single else _exp_poly64
    zero = f(0)

    def exp(x):
        xc = lo if x < lo else x  # comparisons are false for NaN: NaN passes
        xc = hi if xc > hi else xc
        t = xc * log2e + magic
        n = t - magic
        r = (xc - n * ln2_hi) - n * ln2_lo
        y = poly(r, c) * _pow2_of_rounded(t)
        return zero if x < lo else y
    return exp


def _per_float(impl, x):
    """impl(np.float32) or impl(np.float64) for numba type x: an overload's implementation;
    None (no overload) for any other type."""
    if x == types.float32:
        return impl(np.float32)
    if x == types.float64:
        return impl(np.float64)
    return None


@overload(vexp, inline="always")
def _vexp_overload(x):
    return _per_float(_exp_impl, x)


def _log_impl(f):
    one, half, two = f(1), f(0.5), f(2)
    sqrt2 = f(1.41421356237309504880)
    terms = 4 if f is np.float32 else 11  # odd series of atanh to u^(2 terms + 1)
    coef = tuple(f(1.0 / (2 * k + 1)) for k in range(terms, -1, -1))
    ln2_hi, ln2_lo = _exp_constants(f, 1)[4]  # ln 2 = hi + lo, k hi exact
    poly = _log_poly32 if f is np.float32 else _log_poly64

    def log(x):
        k = _exponent(x)
        m = _mantissa(x)
        big = m > sqrt2
        m = m * half if big else m
        k = k + one if big else k
        u = (m - one) / (m + one)
        y = k * ln2_hi + (two * u * poly(u * u, coef) + k * ln2_lo)
        return x if x != x else y
    return log


@overload(vlog, inline="always")
def _vlog_overload(x):
    return _per_float(_log_impl, x)


@overload(vlog1p, inline="always")
def _vlog1p_overload(t):
    if not isinstance(t, types.Float):
        return None
    one = np.float32(1) if t == types.float32 else 1.0

    def log1p(t):
        # log(u) t / (u - 1) with u = 1 + t rounded cancels u's rounding error
        u = one + t
        d = u - one
        return t if d == 0 else vlog(u) * (t / d)
    return log1p


def cast_like(value, arr):
    """value as arr's element type (float32 arithmetic stays float32)."""
    return value


@overload(cast_like, inline="always")
def _cast_like_overload(value, arr):
    if arr.dtype == types.float32:
        return lambda value, arr: np.float32(value)
    return lambda value, arr: np.float64(value)


# ---------------------------------------------------------------------------- row passes

@njit(fastmath=True, **_JIT)
def row_max(x):
    """max of a row; a NaN may be skipped here, the exp pass turns it into a NaN sum.

    LLVM does not vectorise a max reduction as numba emits it, so MAX_LANES running
    maxima are kept explicitly: an elementwise max, which it does vectorise."""
    n = x.size
    acc = np.empty(MAX_LANES, x.dtype)
    acc[:] = x[0]
    for i0 in range(0, n - MAX_LANES + 1, MAX_LANES):
        xs = x[i0:i0 + MAX_LANES]
        for q in range(MAX_LANES):
            v = xs[q]
            acc[q] = v if v > acc[q] else acc[q]
    m = acc[0]
    for q in range(MAX_LANES):
        m = acc[q] if acc[q] > m else m
    for j in range(n - n % MAX_LANES, n):
        m = x[j] if x[j] > m else m
    return m


@njit(fastmath=_EXACT, **_JIT)
def exp_shifted(x, m, e, nxt, line):
    """e[:x.size] = exp(x - m); nxt (the next row, possibly empty) is prefetched meanwhile,
    one line per `line` elements."""
    n = x.size
    for i0 in range(0, n, CHUNK):
        if nxt.size:
            for b in range(0, CHUNK, line):
                _prefetch(nxt, i0 + b)
        xs = x[i0:i0 + CHUNK]
        es = e[i0:i0 + CHUNK]
        for j in range(xs.size):
            es[j] = vexp(xs[j] - m)


@njit(fastmath=_SUM, **_JIT)
def sums(e, x, m, w):
    """sum(e) and sum(w (x - m)) over a row."""
    s = cast_like(0.0, e)
    t = cast_like(0.0, e)
    for j in range(x.size):
        s += e[j]
        t += w[j] * (x[j] - m)
    return s, t


@njit(**_JIT)
def copy_row(dst, src, stream):
    """dst[:] = src[:dst.size]; with `stream`, whole aligned lines go out non-temporally
    (no read-for-ownership of dst: the ideal one read + one write of the row)."""
    n = dst.size
    i = 0
    if stream:
        line = LINE // dst.itemsize
        head = min(n, (-(dst.ctypes.data // dst.itemsize)) % line)
        for j in range(head):
            dst[j] = src[j]
        i = head
        while i + line <= n:
            _stream_line(dst, i, src, i)
            i += line
    for j in range(i, n):
        dst[j] = src[j]


@njit(fastmath=_EXACT, **_JIT)
def tile_max(x, base, stride, c, mv):
    """mv[q] = max over the classes j < c of x[base + j * stride + q], q < mv.size: a tile's
    per-position maxima, walking the classes with the positions innermost and contiguous."""
    mv[:] = cast_like(-np.inf, x)
    for j in range(c):
        row = x[base + j * stride:base + j * stride + mv.size]
        for q in range(mv.size):
            mv[q] = max(mv[q], row[q])


@njit(**_JIT)
def label_grad(scale, hard, e_over_c, wsum, w_y, d_y, s):
    """The label's gradient in float64 from p_y = exp(x_y - m) / s: in float, a e_y - b
    minus the one-hot term cancels catastrophically when p_y is near 1."""
    p = math.exp(float(d_y)) / float(s)
    return scale * (hard * (p - 1.0) + e_over_c * (wsum * p - float(w_y)))


@njit(parallel=True, fastmath=_EXACT, **_JIT)
def xent_rows(x, labels, w, ignore_index, smoothing, scale, wsum, g, losses, c, chunks, line,
              stream):
    n = labels.size
    e_over_c = smoothing / c
    for ch in prange(chunks):
        e = np.empty(c, x.dtype)
        r1 = (ch + 1) * n // chunks
        for r in range(ch * n // chunks, r1):
            xr = x[r * c:(r + 1) * c]
            gr = g[r * c:(r + 1) * c]
            y = labels[r]
            if y == ignore_index:
                losses[r] = 0
                e[:] = 0
                copy_row(gr, e, stream)
                continue
            m = row_max(xr)
            exp_shifted(xr, m, e, x[(r + 1) * c:(r + 2) * c] if r + 1 < r1 else x[:0], line)
            s, t = sums(e, xr, m, w)
            xy = xr[y]  # before the gradient overwrites it (in place)
            hard = (1.0 - smoothing) * float(w[y])
            a = cast_like(scale * (hard + e_over_c * wsum) / float(s), x)
            b = cast_like(scale * e_over_c, x)
            if stream:  # the gradient in the scratch row, then out in whole lines
                for j in range(c):
                    e[j] = a * e[j] - b * w[j]
                copy_row(gr, e, True)
            else:
                for j in range(c):
                    gr[j] = a * e[j] - b * w[j]
            gr[y] = label_grad(scale, hard, e_over_c, wsum, w[y], xy - m, s)
            log_s = math.log(float(s))
            loss = hard * (log_s + float(m - xy))
            if smoothing != 0:  # t is -inf with a masked (-inf) class: no 0 * inf
                loss += e_over_c * (wsum * log_s - float(t))
            losses[r] = loss
        if stream:
            _store_fence()


@njit(parallel=True, fastmath=_EXACT, **_JIT)
def xent_tiles(x, labels, w, ignore_index, smoothing, scale, wsum, g, losses, n, c, sp, chunks):
    tiles = (sp + TILE - 1) // TILE
    e_over_c = smoothing / c
    for ch in prange(chunks):
        e = np.empty(c * TILE, x.dtype)
        m = np.empty(TILE, x.dtype)
        s = np.empty(TILE, x.dtype)
        tw = np.empty(TILE, x.dtype)
        a = np.empty(TILE, x.dtype)
        b = np.empty(TILE, x.dtype)
        dy = np.empty(TILE, x.dtype)
        for t in range(ch * n * tiles // chunks, (ch + 1) * n * tiles // chunks):
            item, s0 = t // tiles, (t % tiles) * TILE
            cnt = min(TILE, sp - s0)
            base = item * c * sp + s0
            mv, sv, twv, av, bv = m[:cnt], s[:cnt], tw[:cnt], a[:cnt], b[:cnt]
            tile_max(x, base, sp, c, mv)
            sv[:] = 0
            twv[:] = 0
            for j in range(c):
                row = x[base + j * sp:base + j * sp + cnt]
                es = e[j * TILE:j * TILE + cnt]
                wj = w[j]
                for q in range(cnt):
                    d = row[q] - mv[q]
                    ev = vexp(d)
                    es[q] = ev
                    sv[q] += ev
                    twv[q] += wj * d
            labs = labels[item * sp + s0:item * sp + s0 + cnt]
            dyv = dy[:cnt]
            for q in range(cnt):
                y = labs[q]
                if y == ignore_index:  # b < 0 marks the position ignored
                    av[q] = 0
                    bv[q] = -1
                    dyv[q] = 0
                else:
                    hard = (1.0 - smoothing) * float(w[y])
                    av[q] = scale * (hard + e_over_c * wsum) / float(sv[q])
                    bv[q] = scale * e_over_c
                    dyv[q] = x[base + y * sp + q] - mv[q]  # before the gradient overwrites it
            zero = cast_like(0.0, x)
            for j in range(c):
                grow = g[base + j * sp:base + j * sp + cnt]
                es = e[j * TILE:j * TILE + cnt]
                wj = w[j]
                for q in range(cnt):  # ignored positions: exactly 0, NaN logits or not
                    grow[q] = av[q] * es[q] - bv[q] * wj if bv[q] >= zero else zero
            out = losses[item * sp + s0:item * sp + s0 + cnt]
            for q in range(cnt):
                y = labs[q]
                if y == ignore_index:
                    out[q] = 0
                    continue
                hard = (1.0 - smoothing) * float(w[y])
                log_s = math.log(float(sv[q]))
                g[base + y * sp + q] = label_grad(scale, hard, e_over_c, wsum, w[y], dyv[q], sv[q])
                loss = hard * (log_s - float(dyv[q]))
                if smoothing != 0:
                    loss += e_over_c * (wsum * log_s - float(twv[q]))
                out[q] = loss


@njit(fastmath=_SUM, **_JIT)
def total(e, n):
    s = cast_like(0.0, e)
    for j in range(n):
        s += e[j]
    return s


@njit(parallel=True, fastmath=_EXACT, **_JIT)
def softmax_rows(x, out, rows, c, log, chunks, line, stream):
    for ch in prange(chunks):
        e = np.empty(c, x.dtype)
        r1 = (ch + 1) * rows // chunks
        for r in range(ch * rows // chunks, r1):
            xr = x[r * c:(r + 1) * c]
            o = out[r * c:(r + 1) * c]
            m = row_max(xr)
            exp_shifted(xr, m, e, x[(r + 1) * c:(r + 2) * c] if r + 1 < r1 else x[:0], line)
            s = total(e, c)
            if log:
                log_s = cast_like(math.log(float(s)), x)
                for j in range(c):
                    e[j] = (xr[j] - m) - log_s
            else:
                inv = cast_like(1.0 / float(s), x)
                for j in range(c):
                    e[j] = e[j] * inv
            copy_row(o, e, stream)
        if stream:
            _store_fence()


@njit(parallel=True, fastmath=_EXACT, **_JIT)
def softmax_tiles(x, out, a, c, b, log, chunks):
    tiles = (b + TILE - 1) // TILE
    for ch in prange(chunks):
        e = np.empty(c * TILE, x.dtype)
        m = np.empty(TILE, x.dtype)
        s = np.empty(TILE, x.dtype)
        for t in range(ch * a * tiles // chunks, (ch + 1) * a * tiles // chunks):
            item, s0 = t // tiles, (t % tiles) * TILE
            cnt = min(TILE, b - s0)
            base = item * c * b + s0
            mv, sv = m[:cnt], s[:cnt]
            tile_max(x, base, b, c, mv)
            sv[:] = 0
            for j in range(c):
                row = x[base + j * b:base + j * b + cnt]
                es = e[j * TILE:j * TILE + cnt]
                for q in range(cnt):
                    d = row[q] - mv[q]
                    ev = vexp(d)
                    es[q] = d if log else ev
                    sv[q] += ev
            for q in range(cnt):
                sv[q] = vlog(sv[q]) if log else 1 / sv[q]
            for j in range(c):
                orow = out[base + j * b:base + j * b + cnt]
                es = e[j * TILE:j * TILE + cnt]
                if log:
                    for q in range(cnt):
                        orow[q] = es[q] - sv[q]
                else:
                    for q in range(cnt):
                        orow[q] = es[q] * sv[q]


@njit(parallel=True, fastmath=_EXACT, **_JIT)
def bce_kernel(x, y, w, w_span, pw, pw_span, scale, grad, losses, m, chunks, partial):
    one = cast_like(1.0, x)
    zero = cast_like(0.0, x)
    sc = cast_like(scale, x)
    keep = losses.size > 0
    for ch in prange(chunks):
        buf = np.empty(SEGMENT, x.dtype)
        acc = 0.0
        i, end = ch * m // chunks, (ch + 1) * m // chunks
        while i < end:
            wi, pi = i % w_span, i % pw_span
            n = min(end - i, SEGMENT, w_span - wi, pw_span - pi)
            xs, ys, gs = x[i:i + n], y[i:i + n], grad[i:i + n]
            ws, pws = w[wi:wi + n], pw[pi:pi + n]
            ls = losses[i:i + n] if keep else buf[:n]
            for j in range(n):
                xv, yv = xs[j], ys[j]
                # log(1 + e^-x) = max(-x, 0) + log1p(e^-|x|); sigmoid(-x) from the same e^-|x|
                t = vexp(-abs(xv))
                softplus = max(-xv, zero) + vlog1p(t)
                inv = one / (one + t)
                sig_neg = t * inv if xv >= zero else inv
                lw = one + (pws[j] - one) * yv
                ls[j] = ((one - yv) * xv + lw * softplus) * ws[j]
                gs[j] = ((one - yv) - lw * sig_neg) * ws[j] * sc
            if not keep:
                acc += float(total(ls, n))
            i += n
        partial[ch] = acc


@njit(parallel=True, fastmath=_SUM, **_JIT)
def mse_kernel(x, y, scale, grad, losses, m, chunks, partial):
    sc = cast_like(2.0 * scale, x)
    keep = losses.size > 0
    for ch in prange(chunks):
        acc = 0.0
        for i in range(ch * m // chunks, (ch + 1) * m // chunks, SEGMENT):
            end = min(i + SEGMENT, (ch + 1) * m // chunks)
            xs, ys, gs = x[i:end], y[i:end], grad[i:end]
            part = cast_like(0.0, x)
            if keep:
                ls = losses[i:end]
                for j in range(end - i):
                    d = xs[j] - ys[j]
                    gs[j] = sc * d
                    ls[j] = d * d
            else:
                for j in range(end - i):
                    d = xs[j] - ys[j]
                    gs[j] = sc * d
                    part += d * d
            acc += float(part)
        partial[ch] = acc


# ---------------------------------------------------------------------------- entry points

def _streams(out, x):
    """Whether out is written with non-temporal stores: when it is too large to stay in the
    caches for its reader anyway, and is not x itself (whose lines are already cached)."""
    return out.nbytes >= STREAM_MIN_BYTES and not np.shares_memory(out, x)


def softmax(x, out, log):
    """out = softmax (log: log-softmax) of x over axis 1; x, out (A, C, B) C-contiguous."""
    a, c, b = x.shape
    flat, out_flat = x.reshape(-1), out.reshape(-1)
    with threads_for(x.size) as threads:
        if b == 1:
            softmax_rows(flat, out_flat, a, c, bool(log), min(threads, a), LINE // x.itemsize,
                         _streams(out, x))
        else:
            softmax_tiles(flat, out_flat, a, c, b, bool(log), min(threads, a * -(-b // TILE)))


def softmax_xent(logits, labels, weight, ignore_index, smoothing, grad_scale, dlogits, losses):
    """Per-position cross-entropy losses (N, S) and grad_scale * their gradient (N, C, S);
    labels (N, S) int64, already checked by pf.ops (in [0, C) or ignore_index)."""
    n, c, s = logits.shape
    w = np.ones(c, logits.dtype) if weight is None else weight
    wsum = float(c) if weight is None else float(weight.sum(dtype=np.float64))
    args = (logits.reshape(-1), labels.reshape(-1), w, int(ignore_index), float(smoothing),
            float(grad_scale), wsum, dlogits.reshape(-1), losses.reshape(-1))
    with threads_for(logits.size) as threads:
        if s == 1:
            xent_rows(*args, c, min(threads, n), LINE // logits.itemsize,
                      _streams(dlogits, logits))
        else:
            xent_tiles(*args, n, c, s, min(threads, n * -(-s // TILE)))


def _periodic(arr, like):
    """An operand that element i reads at [i % P], as (values, span): repeated to at least
    SEGMENT values (span a multiple of P) so inner loops see long runs; ones when None."""
    if arr is None:
        return np.ones(SEGMENT, like.dtype), SEGMENT
    if arr.size >= SEGMENT:
        return arr, arr.size
    reps = -(-SEGMENT // arr.size)
    return np.tile(arr, reps), arr.size * reps


def _pointwise(kernel, x, args, losses):
    with threads_for(x.size) as chunks:
        partial = np.zeros(chunks)
        kernel(*args, losses if losses is not None else x[:0], x.size, chunks, partial)
    return None if losses is not None else float(partial.sum())


def bce_with_logits(x, y, weight, pos_weight, grad_scale, grad, losses):
    """BCE with logits over flat (M,) arrays and grad_scale * its gradient; weight and
    pos_weight (P,) with element i taking [i % P]. Returns the loss sum when losses is None."""
    w, w_span = _periodic(weight, x)
    pw, pw_span = _periodic(pos_weight, x)
    return _pointwise(bce_kernel, x, (x, y, w, w_span, pw, pw_span, float(grad_scale), grad),
                      losses)


def mse(x, y, grad_scale, grad, losses):
    """(x - y)^2 over flat (M,) arrays and grad_scale * its gradient; returns the loss sum
    when losses is None."""
    return _pointwise(mse_kernel, x, (x, y, float(grad_scale), grad), losses)
