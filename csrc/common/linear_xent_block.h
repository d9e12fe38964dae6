// The blocked scheme of linear_xent that both backends run (cpu/linear_xent.cpp,
// cuda/linear_xent.cu): one block of rows' logits z = h[r] @ w.T + bias become dloss/dz in
// place through the family's softmax_xent kernel. Plain C++ that g++ and nvcc both read.
#pragma once

#include <cstdint>

namespace pyfast {

// The softmax_xent arguments of the `rows` rows from r0 whose logits are in z, (rows, v):
// no class weights, one position per row, the block's labels and losses, and the call's
// ignore_index, smoothing and grad_scale unchanged (grad_scale scales the summed losses, so
// the blocks' gradients add up to the whole batch's). Xent is the backend's XentArgs<T>,
// Linear its LinearXentArgs<T>: the two backends' structs have the same fields.
template <class Xent, class Linear, typename T>
Xent block_xent_args(const Linear& a, T* z, std::int64_t r0, std::int64_t rows) {
    Xent x;
    x.logits = z;
    x.labels = a.labels + r0;
    x.weight = nullptr;
    x.ignore_index = a.ignore_index;
    x.smoothing = a.smoothing;
    x.grad_scale = a.grad_scale;
    x.dlogits = z;
    x.losses = a.losses + r0;
    x.n = rows;
    x.c = a.v;
    x.s = 1;
    return x;
}

}  // namespace pyfast
