// Fused optimizer steps on the CPU: SGD (momentum, dampening, Nesterov), RMSprop (centered,
// momentum) and Adam/AdamW (AMSGrad), with torch.optim's single-tensor update rules in
// torch's order of operations.
//
// Memory-bound by design: each element's parameter, gradient and state are read once and
// written once (Adam: 16 bytes in and 12 out per float32 parameter) and everything else
// lives in registers. A list of tensors is one parallel region: the tensors are laid end to
// end in one index space that is cut into equal, 64-byte aligned ranges, one per thread, so
// a thread may finish one tensor and start the next and 100 small tensors balance as well
// as one large one. Vector code per ISA (vec_math.h's dispatch); the last partial vector of
// a range goes through the same vector code on a padded copy, so an element's result never
// depends on where a thread range or a tensor ended (a list call equals per-tensor calls
// bit for bit, on any thread count). The rules are common/optim_rules.h's, shared with the
// CUDA kernel and instantiated here on the vectors. Plain stores: every line written was
// just read, so non-temporal stores would save nothing.

#include "cpu/optim.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "common/runtime.h"
#include "cpu/vec_math.h"

namespace pyfast {
namespace {

using std::int64_t;

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 16;
// Thread ranges start on multiples of this many elements (a 64-byte line of float32).
constexpr int64_t kSplitQuantum = 16;

// Elements [i0, i1) of one tensor. States that are nullptr are neither read nor written.
template <class S, class Rule, typename T, class K>
PYFAST_INLINE void update_range(const OptimTensor<T>& x, int64_t i0, int64_t i1, const K& k) {
    using V = typename S::V;
    constexpr int L = S::lanes;
    T* const s0 = x.state[0];
    T* const s1 = x.state[1];
    T* const s2 = x.state[2];
    int64_t i = i0;
    for (; i + L <= i1; i += L) {
        V p = S::load(x.param + i);
        const V g = S::load(x.grad + i);
        V a = s0 ? S::load(s0 + i) : V{}, b = s1 ? S::load(s1 + i) : V{};
        V c = s2 ? S::load(s2 + i) : V{};
        Rule::template update<S>(p, g, a, b, c, k);
        S::store(x.param + i, p);
        if (s0) S::store(s0 + i, a);
        if (s1) S::store(s1 + i, b);
        if (s2) S::store(s2 + i, c);
    }
    if (i < i1) {
        // Padded lanes hold zeros; whatever they compute (0/0 with eps = 0) is never stored.
        const int n = static_cast<int>(i1 - i);
        V p = S::load_partial(x.param + i, n, T(0));
        const V g = S::load_partial(x.grad + i, n, T(0));
        V a = s0 ? S::load_partial(s0 + i, n, T(0)) : V{};
        V b = s1 ? S::load_partial(s1 + i, n, T(0)) : V{};
        V c = s2 ? S::load_partial(s2 + i, n, T(0)) : V{};
        Rule::template update<S>(p, g, a, b, c, k);
        S::store_partial(x.param + i, p, n);
        if (s0) S::store_partial(s0 + i, a, n);
        if (s1) S::store_partial(s1 + i, b, n);
        if (s2) S::store_partial(s2 + i, c, n);
    }
}

// Thread tid's share of the concatenated index space [0, prefix.back()).
template <class Rule, typename T, class K>
struct ListJob {
    template <int Bytes>
    static PYFAST_INLINE void run(const std::vector<OptimTensor<T>>& tensors,
                                  const std::vector<int64_t>& prefix, const K& k, const int& tid,
                                  const int& nth) {
        using S = Simd<T, Bytes>;
        const int64_t total = prefix.back();
        const auto split = [&](int64_t t) {
            return t == nth ? total : total * t / nth / kSplitQuantum * kSplitQuantum;
        };
        int64_t lo = split(tid);
        const int64_t hi = split(tid + 1);
        if (lo >= hi) return;
        size_t t = std::upper_bound(prefix.begin(), prefix.end(), lo) - prefix.begin() - 1;
        while (lo < hi) {
            const int64_t end = std::min(hi, prefix[t + 1]);
            if (end > lo)
                update_range<S, Rule>(tensors[t], lo - prefix[t], end - prefix[t], k);
            lo = std::max(lo, end);
            ++t;
        }
    }
};

template <class Rule, typename T, class K>
void run_lists(const std::vector<OptimTensor<T>>& tensors, const K& k) {
    std::vector<int64_t> prefix(tensors.size() + 1, 0);
    for (size_t t = 0; t < tensors.size(); ++t) prefix[t + 1] = prefix[t] + tensors[t].size;
    const int64_t total = prefix.back();
    if (total == 0) return;
    const int threads = total < kParallelMin ? 1 : num_threads();
#pragma omp parallel num_threads(threads)
    simd_dispatch<ListJob<Rule, T, K>>(tensors, prefix, k, omp_get_thread_num(),
                                       omp_get_num_threads());
}

}  // namespace

template <typename T>
void sgd_step(const std::vector<OptimTensor<T>>& tensors, const SgdHyper& h) {
    run_lists<SgdRule>(tensors, step_scalars<T>(h));
}

template <typename T>
void rmsprop_step(const std::vector<OptimTensor<T>>& tensors, const RmspropHyper& h) {
    run_lists<RmspropRule>(tensors, step_scalars<T>(h));
}

template <typename T>
void adam_step(const std::vector<OptimTensor<T>>& tensors, const AdamHyper& h) {
    run_lists<AdamRule>(tensors, step_scalars<T>(h));
}

template void sgd_step<float>(const std::vector<OptimTensor<float>>&, const SgdHyper&);
template void sgd_step<double>(const std::vector<OptimTensor<double>>&, const SgdHyper&);
template void rmsprop_step<float>(const std::vector<OptimTensor<float>>&, const RmspropHyper&);
template void rmsprop_step<double>(const std::vector<OptimTensor<double>>&, const RmspropHyper&);
template void adam_step<float>(const std::vector<OptimTensor<float>>&, const AdamHyper&);
template void adam_step<double>(const std::vector<OptimTensor<double>>&, const AdamHyper&);

}  // namespace pyfast
