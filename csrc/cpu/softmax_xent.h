// Softmax, log-softmax and the fused losses of the softmax_xent family on the CPU: each
// returns its gradient with the loss, in one pass over memory (see softmax_xent.cpp).
// csrc/bindings/cpu_softmax_xent.cpp validates the arguments; these functions only compute.
#pragma once

#include <cstdint>

namespace pyfast {

// Softmax cross-entropy of (n, c, s) logits against (n, s) labels, torch semantics.
template <typename T>
struct XentArgs {
    const T* logits;              // (n, c, s) C-contiguous
    const std::int64_t* labels;   // (n, s), each in [0, c) or ignore_index
    const T* weight;              // (c) class weights, or nullptr for ones
    std::int64_t ignore_index;
    double smoothing;             // in [0, 1]
    double grad_scale;            // dlogits = grad_scale * d(sum of losses) / d logits
    T* dlogits;                   // (n, c, s); may be logits itself (written in place)
    T* losses;                    // (n, s): per-position losses, 0 where ignored
    std::int64_t n, c, s;         // c < 2^31
};

template <typename T>
void softmax_xent(const XentArgs<T>& args);

// Index (in labels' flat order) of the first label outside [0, c) that is not ignore_index,
// or -1 when all are fine.
std::int64_t first_bad_label(const std::int64_t* labels, std::int64_t count, std::int64_t c,
                             std::int64_t ignore_index);

// out = softmax (or log-softmax) of x over axis 1 of (a, c, b), both C-contiguous.
template <typename T>
void softmax(const T* x, T* out, std::int64_t a, std::int64_t c, std::int64_t b, bool log);

// Binary cross-entropy with logits, torch.nn.functional semantics: loss and gradient per
// element of flat (m) arrays; element i takes weight[i % weight_period] and
// pos_weight[i % pos_weight_period] when those are given.
template <typename T>
struct BceArgs {
    const T* x;
    const T* y;
    const T* weight;              // or nullptr
    std::int64_t weight_period;
    const T* pos_weight;          // or nullptr
    std::int64_t pos_weight_period;
    double grad_scale;
    T* grad;                      // (m)
    T* losses;                    // (m), or nullptr: the sum is returned instead
    std::int64_t m;
};

// Returns the sum of the losses when args.losses is nullptr, else 0.
template <typename T>
double bce_with_logits(const BceArgs<T>& args);

// (x - y)^2 and its gradient 2 (x - y) grad_scale; the sum of the losses is returned when
// losses is nullptr.
template <typename T>
double mse(const T* x, const T* y, double grad_scale, T* grad, T* losses, std::int64_t m);

}  // namespace pyfast
