"""Numba CUDA kernels of the softmax_xent family: softmax, log-softmax, softmax
cross-entropy, BCE-with-logits and MSE, each loss with its gradient in one pass.

The design of csrc/cuda/softmax_xent.cu: plain rows (s == 1) take one block of THREADS
threads per row; each thread keeps a running (max, sum of exp(x - max)) over its strided
elements, the block merges them by a tree in shared memory, a second pass writes the
gradient a exp(x - m) - b w and sums w (x - m) for label smoothing (another tree), and
thread 0 writes the label's gradient and the loss. Positions (s > 1) take one thread each,
neighbouring threads on neighbouring positions. Intermediate values are float64 (Python
float literals promote them; the GPU is memory-bound here either way) and stored as the
arrays' dtype. A label outside [0, C) that is not ignore_index is never used as an index:
that position's loss and gradient are NaN.

Kernels take cupy arrays (numpy arrays under NUMBA_ENABLE_CUDASIM=1, staged through device
copies) and launch on CuPy's current stream.
"""

import math

import numpy as np
from numba import cuda, float64

THREADS = 128          # threads per row block (a power of two: tree reductions)
POINTWISE_THREADS = 256
MAX_BLOCKS = 1 << 16   # grid-stride loops cover the rest
LOWEST = -3.4028234663852886e38  # float32 lowest: comparable with float32 and float64 values alike


@cuda.jit(device=True, inline=True)
def _merge(m, s, om, os):
    """(max, sum of exp(x - max)) of two sets from theirs."""
    mm = om if om > m else m
    return mm, s * math.exp(m - mm) + os * math.exp(om - mm)


@cuda.jit(device=True, inline=True)
def _running_max_sum(m, s, v):
    """(max, sum of exp(x - max)) with one more element v: one exp per element."""
    if v > m:
        return v, s * math.exp(m - v) + 1.0
    return m, s + math.exp(v - m)


@cuda.jit(device=True, inline=True)
def _block_max_sum(m, s, shared_m, shared_s):
    tid = cuda.threadIdx.x
    shared_m[tid] = m
    shared_s[tid] = s
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if tid < stride:
            mm, ss = _merge(shared_m[tid], shared_s[tid], shared_m[tid + stride],
                            shared_s[tid + stride])
            shared_m[tid] = mm
            shared_s[tid] = ss
        cuda.syncthreads()
        stride //= 2
    m, s = shared_m[0], shared_s[0]
    cuda.syncthreads()  # before the shared arrays are reused
    return m, s


@cuda.jit(device=True, inline=True)
def _block_sum(v, shared):
    tid = cuda.threadIdx.x
    shared[tid] = v
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if tid < stride:
            shared[tid] += shared[tid + stride]
        cuda.syncthreads()
        stride //= 2
    v = shared[0]
    cuda.syncthreads()
    return v


@cuda.jit(device=True, inline=True)
def _gradient_terms(w, has_w, y, smoothing, e_over_c, wsum, scale, s):
    """(w_y, hard = (1 - smoothing) w_y, coef, b): class i's gradient is
    coef exp(x_i - m) - b w_i, the label's own then rewritten by _label_terms."""
    w_y = w[y] if has_w else 1.0
    hard = (1.0 - smoothing) * w_y
    return w_y, hard, scale * (hard + e_over_c * wsum) / s, scale * e_over_c


@cuda.jit(device=True, inline=True)
def _label_terms(scale, hard, e_over_c, wsum, w_y, d_y, s, tw):
    """(the label's gradient, the loss) from p_y = exp(d_y) / s, in float64."""
    p = math.exp(d_y) / s
    log_s = math.log(s)
    grad = scale * (hard * (p - 1.0) + e_over_c * (wsum * p - w_y))
    loss = hard * (log_s - d_y)
    if e_over_c != 0:  # tw is -inf with a masked (-inf) class: no 0 * inf
        loss += e_over_c * (wsum * log_s - tw)
    return grad, loss


@cuda.jit(cache=True)
def xent_rows(x, labels, w, has_w, ignore_index, smoothing, scale, wsum, g, losses, n, c):
    shared_m = cuda.shared.array(THREADS, dtype=float64)
    shared_s = cuda.shared.array(THREADS, dtype=float64)
    tid = cuda.threadIdx.x
    e_over_c = smoothing / c
    row = cuda.blockIdx.x
    while row < n:
        base = row * c
        y = labels[row]
        if y == ignore_index or y < 0 or y >= c:  # the same branch for the whole block
            fill = 0.0 if y == ignore_index else math.nan
            for i in range(tid, c, THREADS):
                g[base + i] = fill
            if tid == 0:
                losses[row] = fill
            row += cuda.gridDim.x
            continue
        xy = x[base + y]  # every thread reads it before any writes this row (in place)
        m, s = LOWEST, 0.0
        for i in range(tid, c, THREADS):
            m, s = _running_max_sum(m, s, x[base + i])
        m, s = _block_max_sum(m, s, shared_m, shared_s)
        w_y, hard, coef, b = _gradient_terms(w, has_w, y, smoothing, e_over_c, wsum, scale, s)
        tw = 0.0
        for i in range(tid, c, THREADS):
            d = x[base + i] - m
            wi = w[i] if has_w else 1.0
            tw += wi * d
            g[base + i] = coef * math.exp(d) - b * wi
        tw = _block_sum(tw, shared_s)  # also orders pass 2's writes before thread 0's
        if tid == 0:
            grad, loss = _label_terms(scale, hard, e_over_c, wsum, w_y, xy - m, s, tw)
            g[base + y] = grad
            losses[row] = loss
        row += cuda.gridDim.x


@cuda.jit(cache=True)
def xent_positions(x, labels, w, has_w, ignore_index, smoothing, scale, wsum, g, losses, n, c,
                   sp):
    e_over_c = smoothing / c
    idx = cuda.grid(1)
    while idx < n * sp:
        item, pos = idx // sp, idx % sp
        base = item * c * sp + pos
        y = labels[idx]
        if y == ignore_index or y < 0 or y >= c:
            fill = 0.0 if y == ignore_index else math.nan
            for j in range(c):
                g[base + j * sp] = fill
            losses[idx] = fill
            idx += cuda.gridsize(1)
            continue
        xy = x[base + y * sp]
        m, s = LOWEST, 0.0
        for j in range(c):
            m, s = _running_max_sum(m, s, x[base + j * sp])
        w_y, hard, coef, b = _gradient_terms(w, has_w, y, smoothing, e_over_c, wsum, scale, s)
        tw = 0.0
        for j in range(c):
            d = x[base + j * sp] - m
            wj = w[j] if has_w else 1.0
            tw += wj * d
            g[base + j * sp] = coef * math.exp(d) - b * wj
        grad, loss = _label_terms(scale, hard, e_over_c, wsum, w_y, xy - m, s, tw)
        g[base + y * sp] = grad
        losses[idx] = loss
        idx += cuda.gridsize(1)


@cuda.jit(cache=True)
def softmax_rows(x, out, rows, c, log):
    shared_m = cuda.shared.array(THREADS, dtype=float64)
    shared_s = cuda.shared.array(THREADS, dtype=float64)
    tid = cuda.threadIdx.x
    row = cuda.blockIdx.x
    while row < rows:
        base = row * c
        m, s = LOWEST, 0.0
        for i in range(tid, c, THREADS):
            m, s = _running_max_sum(m, s, x[base + i])
        m, s = _block_max_sum(m, s, shared_m, shared_s)
        log_s = math.log(s)
        for i in range(tid, c, THREADS):
            d = x[base + i] - m
            out[base + i] = d - log_s if log else math.exp(d) / s
        row += cuda.gridDim.x


@cuda.jit(cache=True)
def softmax_positions(x, out, a, c, b, log):
    idx = cuda.grid(1)
    while idx < a * b:
        base = (idx // b) * c * b + idx % b
        m, s = LOWEST, 0.0
        for j in range(c):
            m, s = _running_max_sum(m, s, x[base + j * b])
        log_s = math.log(s)
        for j in range(c):
            d = x[base + j * b] - m
            out[base + j * b] = d - log_s if log else math.exp(d) / s
        idx += cuda.gridsize(1)


@cuda.jit(cache=True)
def bce_kernel(x, y, w, w_period, has_w, pw, pw_period, has_pw, scale, grad, losses, keep,
               partial):
    """Per element; each thread's loss sum goes to partial[thread] when not keep."""
    idx = cuda.grid(1)
    acc = 0.0
    i = idx
    while i < x.size:
        xv, yv = x[i], y[i]
        # log(1 + e^-x) = max(-x, 0) + log1p(e^-|x|); sigmoid(-x) from the same e^-|x|
        t = math.exp(-abs(xv))
        softplus = (-xv if xv < 0 else 0.0) + math.log1p(t)
        sig_neg = (t if xv >= 0 else 1.0) / (1.0 + t)
        lw = 1.0 + (pw[i % pw_period] - 1.0) * yv if has_pw else 1.0
        wi = w[i % w_period] if has_w else 1.0
        loss = ((1.0 - yv) * xv + lw * softplus) * wi
        grad[i] = ((1.0 - yv) - lw * sig_neg) * wi * scale
        if keep:
            losses[i] = loss
        else:
            acc += loss
        i += cuda.gridsize(1)
    if not keep:
        partial[idx] = acc


@cuda.jit(cache=True)
def mse_kernel(x, y, scale, grad, losses, keep, partial):
    idx = cuda.grid(1)
    acc = 0.0
    i = idx
    while i < x.size:
        d = x[i] - y[i]
        grad[i] = 2.0 * scale * d
        if keep:
            losses[i] = d * d
        else:
            acc += d * d
        i += cuda.gridsize(1)
    if not keep:
        partial[idx] = acc


# ---------------------------------------------------------------------------- launching

class _Launch:
    """Arguments of one kernel launch, for cupy arrays (viewed in place, on CuPy's current
    stream) or numpy arrays (the simulator: copied to the device and the written ones back)."""

    def __init__(self, like):
        self.host = isinstance(like, np.ndarray)
        self.copies = []
        if not self.host:
            import cupy
            self.stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)

    def arg(self, a, written=False):
        if self.host:
            d = cuda.to_device(a)
            if written:
                self.copies.append((d, a))
            return d
        return cuda.as_cuda_array(a, sync=False)  # ordered by the stream cupy already uses

    def __call__(self, kernel, grid, block, *args):
        if self.host:
            kernel[grid, block](*args)
            for d, a in self.copies:
                d.copy_to_host(a)
        else:
            kernel[grid, block, self.stream](*args)


def _grid(items, block):
    return max(1, min(MAX_BLOCKS, -(-items // block)))


def softmax(x, out, log):
    """out = softmax (log: log-softmax) of x over axis 1; x, out (A, C, B) C-contiguous."""
    a, c, b = x.shape
    run = _Launch(x)
    args = (run.arg(x.reshape(-1)), run.arg(out.reshape(-1), written=True))
    if b == 1:
        run(softmax_rows, min(a, MAX_BLOCKS), THREADS, *args, a, c, bool(log))
    else:
        run(softmax_positions, _grid(a * b, POINTWISE_THREADS), POINTWISE_THREADS, *args, a, c, b,
            bool(log))


def softmax_xent(logits, labels, weight, ignore_index, smoothing, grad_scale, dlogits, losses):
    """Per-position cross-entropy losses (N, S) and grad_scale * their gradient (N, C, S).
    dlogits may share memory with logits: the kernels read each element before writing it."""
    n, c, s = logits.shape
    run = _Launch(logits)
    w = logits.reshape(-1)[:1] if weight is None else weight  # a placeholder when unused
    wsum = float(c) if weight is None else float(weight.sum(dtype=np.float64))
    args = (run.arg(logits.reshape(-1)), run.arg(labels.reshape(-1)), run.arg(w),
            weight is not None, int(ignore_index), float(smoothing), float(grad_scale), wsum,
            run.arg(dlogits.reshape(-1), written=True), run.arg(losses.reshape(-1), written=True))
    if s == 1:
        run(xent_rows, min(n, MAX_BLOCKS), THREADS, *args, n, c)
    else:
        run(xent_positions, _grid(n * s, POINTWISE_THREADS), POINTWISE_THREADS, *args, n, c, s)


def _loss_sum_buffers(run, x, losses):
    """(losses or a placeholder, keep, per-thread partial sums) for a pointwise kernel."""
    keep = losses is not None
    grid = _grid(x.size, POINTWISE_THREADS)
    xp = np if run.host else __import__("cupy")
    partial = xp.zeros(1 if keep else grid * POINTWISE_THREADS, np.float64)
    return grid, (run.arg(losses if keep else x[:1], written=keep), keep,
                  run.arg(partial, written=not keep)), partial


def bce_with_logits(x, y, weight, pos_weight, grad_scale, grad, losses):
    """BCE with logits over flat (M,) arrays and grad_scale * its gradient; weight and
    pos_weight (P,) with element i taking [i % P]. Returns the loss sum when losses is None."""
    run = _Launch(x)
    w = x[:1] if weight is None else weight            # placeholders when unused
    pw = x[:1] if pos_weight is None else pos_weight
    grid, tail, partial = _loss_sum_buffers(run, x, losses)
    run(bce_kernel, grid, POINTWISE_THREADS, run.arg(x), run.arg(y), run.arg(w), w.size,
        weight is not None, run.arg(pw), pw.size, pos_weight is not None, float(grad_scale),
        run.arg(grad, written=True), *tail)
    return None if losses is not None else float(partial.sum())


def mse(x, y, grad_scale, grad, losses):
    """(x - y)^2 over flat (M,) arrays and grad_scale * its gradient; returns the loss sum
    when losses is None."""
    run = _Launch(x)
    grid, tail, partial = _loss_sum_buffers(run, x, losses)
    run(mse_kernel, grid, POINTWISE_THREADS, run.arg(x), run.arg(y), float(grad_scale),
        run.arg(grad, written=True), *tail)
    return None if losses is not None else float(partial.sum())
