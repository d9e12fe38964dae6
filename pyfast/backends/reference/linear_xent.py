"""Reference fused linear + softmax cross-entropy (NumPy or CuPy): the classifier product
and the cross-entropy of ``workspace``'s rows at a time, so the (N, V) logits are never
whole in memory, written with plain array expressions and the reference softmax_xent.

For a block of rows r: z = h[r] @ w.T + b; g = grad_scale * dloss/dz (softmax_xent in
place); dh[r] = g @ w; dw += g.T @ h[r]; db += g summed over rows.
"""

from .softmax_xent import softmax_xent


def linear_xent(h, w, bias, labels, ignore_index, smoothing, grad_scale, losses, dh, dw, db,
                workspace):
    n, rows = h.shape[0], workspace.shape[0]
    dw[...] = 0
    if db is not None:
        db[...] = 0
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        z = workspace[:r1 - r0]
        z[...] = h[r0:r1] @ w.T
        if bias is not None:
            z += bias
        z3 = z[:, :, None]
        softmax_xent(z3, labels[r0:r1, None], None, ignore_index, smoothing, grad_scale, z3,
                     losses[r0:r1, None])
        dh[r0:r1] = z @ w
        dw += z.T @ h[r0:r1]
        if db is not None:
            db += z.sum(axis=0)
