// Softmax cross-entropy (and softmax, BCE-with-logits, MSE) on the CPU: the loss and its
// gradient from one read of the logits from memory and one write of the gradient.
//
// Plain rows (s == 1), three passes per row, only the first touching memory:
//   1. the row's max m (the one read from DRAM; the row then sits in L1/L2: a 50000-class
//      row is 200 KB);
//   2. e = exp(x - m) into a per-thread scratch row that stays in L2, summed to s, and for
//      label smoothing sum_c w_c (x_c - m), a sum of same-signed terms without cancellation;
//   3. the gradient from the scratch row,
//          g_c = grad_scale [(1 - e) w_y (p_c - [c == y]) + e / C (W p_c - w_c)]
//              = a e_c - b w_c  (a, b per row),
//      then the label's own entry recomputed in double (see label_grad).
// So exp runs once per element and the probabilities never reach memory. A large gradient
// is written with non-temporal stores: a plain store would first read each line of dlogits
// from memory (read-for-ownership), half again the traffic of the ideal one read + one
// write. With dlogits == logits (in place) the lines are already cached and plain stores
// cost nothing extra; each element is read before it is overwritten.
//
// Positions (s > 1, logits (N, C, H, W)): the s axis is contiguous, so a tile of one vector
// of positions walks the classes (stride s) with every lane an independent row, the same
// three passes over a C x lanes scratch tile.
//
// exp and log are the vectorised polynomials of vec_math.h, compiled per ISA (generic,
// AVX2+FMA, AVX-512) through the target-attribute dispatch of csrc/cpu/gemm.cpp. OpenMP
// splits rows (or tiles, or elements) into equal contiguous ranges.

#include "cpu/softmax_xent.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/runtime.h"
#include "common/thread_buffer.h"
#include "cpu/vec_math.h"

namespace pyfast {
namespace {

using std::int64_t;

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
// Outputs at least this large are written with non-temporal stores: they cannot stay in
// the caches for their reader anyway, so skipping the read-for-ownership is pure gain.
constexpr int64_t kStreamMinBytes = int64_t{16} << 20;

int threads_for(int64_t elements) { return elements < kParallelMin ? 1 : num_threads(); }

// [begin, end) of `count` items for thread tid of nth.
PYFAST_INLINE void share(int64_t count, int tid, int nth, int64_t* begin, int64_t* end) {
    *begin = count * tid / nth;
    *end = count * (tid + 1) / nth;
}

template <typename T>
constexpr T lowest() { return std::numeric_limits<T>::lowest(); }

thread_local ThreadBuffer t_scratch;

// Whether to write `bytes` of output at p (unless it aliases the input) with streaming stores.
template <typename T>
bool streams(const T* out, const void* in, int64_t bytes) {
    return bytes >= kStreamMinBytes && static_cast<const void*>(out) != in &&
           reinterpret_cast<uintptr_t>(out) % sizeof(T) == 0;
}

template <class S, typename T>
PYFAST_INLINE typename S::V load_n(const T* p, int count, T fill) {
    return count == S::lanes ? S::load(p) : S::load_partial(p, count, fill);
}

// Elements of a row at p before p + head is aligned for streaming stores (< lanes).
template <class S, typename T>
PYFAST_INLINE int64_t stream_head(const T* p, int64_t c) {
    constexpr uintptr_t bytes = sizeof(typename S::V);
    const uintptr_t off = reinterpret_cast<uintptr_t>(p) % bytes;
    return std::min<int64_t>(c, off ? static_cast<int64_t>((bytes - off) / sizeof(T)) : 0);
}

// Writes the row o[0, c) from value(i, n), the vector of elements [i, i + n): n is the lane
// count but at the row's ends, where lanes past n are dropped (value may read them partially).
// With `stream`, streaming stores from the first aligned element on, the head before it
// stored partially. The lambdas passed in are always_inline, so each loop sees its value as
// if written in place.
template <class S, typename T, class F>
PYFAST_INLINE void write_row(T* o, int64_t c, bool stream, F&& value) {
    constexpr int L = S::lanes;
    int64_t i = 0;
    if (stream) {
        const int64_t head = stream_head<S>(o, c);
        if (head) {
            S::store_partial(o, value(int64_t(0), static_cast<int>(head)), static_cast<int>(head));
            i = head;
        }
        for (; i + L <= c; i += L) S::stream(o + i, value(i, L));
    } else {
        for (; i + L <= c; i += L) S::store(o + i, value(i, L));
    }
    if (i < c) S::store_partial(o + i, value(i, static_cast<int>(c - i)), static_cast<int>(c - i));
}

// ---------------------------------------------------------------------------- row passes

// Pass 1: the max of a contiguous row (four chains, so the loop runs at load speed).
template <class S, typename T>
PYFAST_INLINE T row_max(const T* x, int64_t c) {
    using V = typename S::V;
    constexpr int L = S::lanes;
    // Lanes start at the lowest finite value, not -inf, so that a row of -inf logits gives
    // exp(-inf - m) = 0 rather than exp(NaN).
    V m0 = S::splat(lowest<T>()), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    for (; i + 4 * L <= c; i += 4 * L) {
        m0 = S::max(m0, S::load(x + i));
        m1 = S::max(m1, S::load(x + i + L));
        m2 = S::max(m2, S::load(x + i + 2 * L));
        m3 = S::max(m3, S::load(x + i + 3 * L));
    }
    for (; i < c; i += L)
        m0 = S::max(m0, load_n<S>(x + i, static_cast<int>(std::min<int64_t>(L, c - i)), lowest<T>()));
    return S::hmax(S::max(S::max(m0, m1), S::max(m2, m3)));
}

// Pass 2: e = exp(x - m) into `e` (when not nullptr), returning the sum of e; *tw gets
// sum w (x - m) when Smooth. A NaN logit makes the sum NaN. `next` (the next row, or
// nullptr) is prefetched into L2 at the pace of this pass, so that memory streams in the
// next row while this one computes, instead of idling until its pass 1.
template <class S, bool Smooth, bool Weighted, typename T>
PYFAST_INLINE T exp_sum(const T* x, int64_t c, T m, const T* w, T* e, T* tw, const T* next) {
    using V = typename S::V;
    constexpr int L = S::lanes;
    constexpr int kStepBytes = 2 * L * static_cast<int>(sizeof(T));
    const V vm = S::splat(m);
    V s0 = V{}, s1 = V{}, t0 = V{};
    int64_t i = 0;
    for (; i + 2 * L <= c; i += 2 * L) {
        if (next)
            for (int b = 0; b < kStepBytes; b += 64)
                __builtin_prefetch(reinterpret_cast<const char*>(next + i) + b, 0, 2);
        const V d0 = S::load(x + i) - vm, d1 = S::load(x + i + L) - vm;
        const V e0 = S::exp(d0), e1 = S::exp(d1);
        if (e) {
            S::store(e + i, e0);
            S::store(e + i + L, e1);
        }
        s0 += e0;
        s1 += e1;
        if constexpr (Smooth) t0 += Weighted ? S::load(w + i) * d0 + S::load(w + i + L) * d1 : d0 + d1;
    }
    for (; i < c; i += L) {  // padded lanes read x = m: d = 0, and their e is dropped
        const int count = static_cast<int>(std::min<int64_t>(L, c - i));
        const V d = load_n<S>(x + i, count, m) - vm;
        const V ev = S::exp(d);
        if (e) S::store(e + i, ev);  // scratch rows have room for a whole last vector
        s0 += count == L ? ev : S::keep_first(ev, count);
        if constexpr (Smooth) t0 += Weighted ? load_n<S>(w + i, count, T(0)) * d : d;
    }
    if constexpr (Smooth) *tw = S::hsum(t0);
    return S::hsum(s0 + s1);
}

// Pass 3 of a cross-entropy row: g = a e - b w (b alone unless weighted and smoothed), from
// the scratch row e. Streaming stores when `stream`.
template <class S, bool WeightedSmooth, typename T>
PYFAST_INLINE void xent_write_row(const T* e, const T* w, T* g, int64_t c, T a, T b, bool stream) {
    using V = typename S::V;
    const V va = S::splat(a), vb = S::splat(b);
    // e is a scratch row with room for a whole last vector; w is the caller's, read partially
    write_row<S>(g, c, stream, [&](int64_t i, int n) __attribute__((always_inline)) {
        const V wv = WeightedSmooth ? load_n<S>(w + i, n, T(0)) : S::splat(T(1));
        return va * S::load(e + i) - vb * wv;
    });
}

// A row of zeros (ignored labels).
template <class S, typename T>
PYFAST_INLINE void zero_row(T* g, int64_t c, bool stream) {
    using V = typename S::V;
    write_row<S>(g, c, stream, [](int64_t, int) __attribute__((always_inline)) { return V{}; });
}

// Per-call constants of the cross-entropy formulas.
template <typename T>
struct XentConsts {
    T scale;       // grad_scale
    T hard;        // 1 - smoothing
    T e_over_c;    // smoothing / C
    T wsum;        // W: sum of the class weights (C without weights)
    bool stream;   // streaming stores for dlogits
};

// The label's own gradient, grad_scale [(1 - e) w_y (p_y - 1) + e / C (W p_y - w_y)],
// recomputed in double from p_y = exp(x_y - m) / s over what pass 3 wrote there: in float,
// a exp(x_y - m) - b minus the one-hot term cancels catastrophically when the row is
// confidently right (p_y near 1), which is the common case late in training.
template <typename T>
PYFAST_INLINE T label_grad(const XentConsts<T>& k, T hard, T w_y, T d_y, T s) {
    const double p = std::exp(static_cast<double>(d_y)) / static_cast<double>(s);
    return static_cast<T>(static_cast<double>(k.scale) *
                          (static_cast<double>(hard) * (p - 1) +
                           static_cast<double>(k.e_over_c) *
                               (static_cast<double>(k.wsum) * p - static_cast<double>(w_y))));
}

// Each job's run<Bytes>(args, tid, nth) does thread tid's share of the work.

template <typename T, bool Weighted, bool Smooth>
struct XentRows {
    template <int Bytes>
    static PYFAST_INLINE void run(const XentArgs<T>& a, const XentConsts<T>& k, const int& tid,
                                  const int& nth) {
        using S = Simd<T, Bytes>;
        constexpr int L = S::lanes;
        const int64_t c = a.c;
        int64_t r0, r1;
        share(a.n, tid, nth, &r0, &r1);
        T* e = t_scratch.get<T>((c + L - 1) / L * L);
        for (int64_t r = r0; r < r1; ++r) {
            const T* x = a.logits + r * c;
            T* g = a.dlogits + r * c;
            const int64_t y = a.labels[r];
            if (y == a.ignore_index) {
                a.losses[r] = T(0);
                zero_row<S>(g, c, k.stream);
                continue;
            }
            const T m = row_max<S>(x, c);
            T tw = 0;
            const T s = exp_sum<S, Smooth, Weighted>(x, c, m, a.weight, e, &tw,
                                                     r + 1 < r1 ? x + c : nullptr);
            const T log_s = std::log(s);
            const T xy = x[y];  // before the gradient overwrites it
            const T w_y = Weighted ? a.weight[y] : T(1);
            const T hard = k.hard * w_y;
            const T coef = k.scale * (hard + (Smooth ? k.e_over_c * k.wsum : T(0))) / s;
            xent_write_row<S, Weighted && Smooth>(e, a.weight, g, c, coef,
                                                  Smooth ? k.scale * k.e_over_c : T(0), k.stream);
            g[y] = label_grad(k, hard, w_y, xy - m, s);
            T loss = hard * (log_s + (m - xy));
            if (Smooth) loss += k.e_over_c * (k.wsum * log_s - tw);
            a.losses[r] = loss;
        }
        if (k.stream) S::stream_fence();
    }
};

// One vector of positions at a time; every lane is an independent row walking the classes.
template <typename T, bool Weighted, bool Smooth>
struct XentTiles {
    template <int Bytes>
    static PYFAST_INLINE void run(const XentArgs<T>& a, const XentConsts<T>& k, const int& tid,
                                  const int& nth) {
        using S = Simd<T, Bytes>;
        using V = typename S::V;
        using IV = typename S::IV;
        using Int = typename S::Int;
        constexpr int L = S::lanes;
        const int64_t c = a.c, sp = a.s, tiles_per_item = (sp + L - 1) / L;
        int64_t t0, t1;
        share(a.n * tiles_per_item, tid, nth, &t0, &t1);
        T* e = t_scratch.get<T>(c * L);
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t item = t / tiles_per_item, s0 = (t % tiles_per_item) * L;
            const int count = static_cast<int>(std::min<int64_t>(L, sp - s0));
            const T* x = a.logits + item * c * sp + s0;
            T* g = a.dlogits + item * c * sp + s0;
            alignas(64) T hard_l[L], valid_l[L], xy_l[L];
            alignas(64) Int label_l[L];
            for (int l = 0; l < L; ++l) {
                const int64_t y = l < count ? a.labels[item * sp + s0 + l] : a.ignore_index;
                const bool valid = y != a.ignore_index;
                label_l[l] = valid ? static_cast<Int>(y) : Int(-1);
                valid_l[l] = valid ? T(1) : T(0);
                hard_l[l] = valid ? k.hard * (Weighted ? a.weight[y] : T(1)) : T(0);
                xy_l[l] = valid ? x[y * sp + l] : T(0);  // before the gradient overwrites it
            }
            const V hard = S::load(hard_l), valid = S::load(valid_l);
            IV label;
            std::memcpy(&label, label_l, sizeof(IV));
            const auto is_valid = label >= 0;
            // Padded lanes (past the last position) read zeros and are never stored.
            V m = S::splat(lowest<T>());
            for (int64_t j = 0; j < c; ++j) m = S::max(m, load_n<S>(x + j * sp, count, T(0)));
            V s = V{}, tw = V{};
            for (int64_t j = 0; j < c; ++j) {
                const V d = load_n<S>(x + j * sp, count, T(0)) - m;
                const V ej = S::exp(d);
                S::store(e + j * L, ej);
                s += ej;
                if constexpr (Smooth) tw += (Weighted ? a.weight[j] : T(1)) * d;
            }
            const V log_s = S::log(s);
            const V coef = k.scale * (hard + (Smooth ? k.e_over_c * k.wsum : T(0)) * valid) / s;
            const V b = (Smooth ? k.scale * k.e_over_c : T(0)) * valid;
            for (int64_t j = 0; j < c; ++j) {
                V gv = coef * S::load(e + j * L) - b * (Weighted ? a.weight[j] : T(1));
                gv = is_valid ? gv : V{};  // ignored positions get exactly 0, NaN logits or not
                if (count == L)
                    S::store(g + j * sp, gv);
                else
                    S::store_partial(g + j * sp, gv, count);
            }
            for (int l = 0; l < count; ++l)
                if (label_l[l] >= 0) {
                    const T w_y = Weighted ? a.weight[label_l[l]] : T(1);
                    g[label_l[l] * sp + l] = label_grad(k, hard_l[l], w_y, xy_l[l] - m[l], s[l]);
                }
            V loss = hard * (log_s + (m - S::load(xy_l)));
            if (Smooth) loss += k.e_over_c * valid * (k.wsum * log_s - tw);
            loss = is_valid ? loss : V{};
            S::store_partial(a.losses + item * sp + s0, loss, count);
        }
    }
};

template <typename T, bool Weighted, bool Smooth>
void xent_parallel(const XentArgs<T>& a, const XentConsts<T>& k) {
#pragma omp parallel num_threads(threads_for(a.n * a.c * a.s))
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        if (a.s == 1)
            simd_dispatch<XentRows<T, Weighted, Smooth>>(a, k, tid, nth);
        else
            simd_dispatch<XentTiles<T, Weighted, Smooth>>(a, k, tid, nth);
    }
}

// ---------------------------------------------------------------------------- softmax

template <typename T>
struct SoftmaxRows {
    template <int Bytes>
    static PYFAST_INLINE void run(const T* const& x, T* const& out, const int64_t& rows,
                                  const int64_t& c, const bool& log, const bool& stream,
                                  const int& tid, const int& nth) {
        using S = Simd<T, Bytes>;
        using V = typename S::V;
        constexpr int L = S::lanes;
        int64_t r0, r1;
        share(rows, tid, nth, &r0, &r1);
        T* e = log ? nullptr : t_scratch.get<T>((c + L - 1) / L * L);
        for (int64_t r = r0; r < r1; ++r) {
            const T* xr = x + r * c;
            T* o = out + r * c;
            const T m = row_max<S>(xr, c);
            T unused;
            const T s = exp_sum<S, false, false>(xr, c, m, static_cast<const T*>(nullptr), e,
                                                 &unused, r + 1 < r1 ? xr + c : nullptr);
            // softmax: e / s from the scratch row; log-softmax: (x - m) - log s from x
            const T* src = log ? xr : e;
            const V shift = S::splat(log ? m : T(0));
            const V f = S::splat(log ? std::log(s) : T(1) / s);
            write_row<S>(o, c, stream, [&](int64_t i, int n) __attribute__((always_inline)) {
                const V v = load_n<S>(src + i, n, T(0)) - shift;
                return log ? v - f : v * f;
            });
        }
        if (stream) S::stream_fence();
    }
};

template <typename T>
struct SoftmaxTiles {
    template <int Bytes>
    static PYFAST_INLINE void run(const T* const& x, T* const& out, const int64_t& a,
                                  const int64_t& c, const int64_t& b, const bool& log,
                                  const int& tid, const int& nth) {
        using S = Simd<T, Bytes>;
        using V = typename S::V;
        constexpr int L = S::lanes;
        const int64_t tiles_per_item = (b + L - 1) / L;
        int64_t t0, t1;
        share(a * tiles_per_item, tid, nth, &t0, &t1);
        T* e = t_scratch.get<T>(c * L);
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t item = t / tiles_per_item, s0 = (t % tiles_per_item) * L;
            const int count = static_cast<int>(std::min<int64_t>(L, b - s0));
            const T* xt = x + item * c * b + s0;
            T* o = out + item * c * b + s0;
            V m = S::splat(lowest<T>());
            for (int64_t j = 0; j < c; ++j) m = S::max(m, load_n<S>(xt + j * b, count, T(0)));
            V s = V{};
            for (int64_t j = 0; j < c; ++j) {
                const V d = load_n<S>(xt + j * b, count, T(0)) - m;
                const V ej = S::exp(d);
                S::store(e + j * L, log ? d : ej);
                s += ej;
            }
            const V f = log ? S::log(s) : T(1) / s;
            for (int64_t j = 0; j < c; ++j) {
                const V v = S::load(e + j * L);
                const V r = log ? v - f : v * f;
                if (count == L)
                    S::store(o + j * b, r);
                else
                    S::store_partial(o + j * b, r, count);
            }
        }
    }
};

// ---------------------------------------------------------------------------- pointwise losses

// Element i of a flat array takes per_index[i % period]. A period under kMinSpan is
// repeated into a buffer whose length `span` is a multiple of it, so the inner loops always
// see runs of at least kMinSpan contiguous values.
constexpr int64_t kMinSpan = 1024;

template <typename T>
struct Periodic {
    const T* values = nullptr;  // span values, element i taking values[i % span]
    int64_t span = 0;
    std::vector<T> repeated;

    Periodic(const T* v, int64_t period) {
        if (!v) return;
        if (period >= kMinSpan) {
            values = v;
            span = period;
            return;
        }
        span = (kMinSpan + period - 1) / period * period;
        repeated.resize(static_cast<size_t>(span));
        for (int64_t i = 0; i < span; ++i) repeated[i] = v[i % period];
        values = repeated.data();
    }
};

// Segments [i, i + len) inside [begin, end): no longer than kMinSpan and not crossing a
// multiple of either span, so each periodic operand is contiguous within a segment.
template <typename T>
PYFAST_INLINE int64_t segment(int64_t i, int64_t end, const Periodic<T>& w, const Periodic<T>& pw) {
    int64_t len = std::min(end - i, kMinSpan);
    if (w.values) len = std::min(len, w.span - i % w.span);
    if (pw.values) len = std::min(len, pw.span - i % pw.span);
    return len;
}

template <typename T>
struct BceJob {
    template <int Bytes>
    static PYFAST_INLINE double run(const BceArgs<T>& a, const Periodic<T>& w,
                                    const Periodic<T>& pw, const int& tid, const int& nth) {
        using S = Simd<T, Bytes>;
        using V = typename S::V;
        constexpr int L = S::lanes;
        int64_t begin, end;
        share(a.m, tid, nth, &begin, &end);
        const V scale = S::splat(static_cast<T>(a.grad_scale)), one = S::splat(T(1));
        double total = 0;
        for (int64_t i = begin; i < end;) {
            const int64_t len = segment(i, end, w, pw);
            const T* x = a.x + i;
            const T* y = a.y + i;
            const T* wv = w.values ? w.values + i % w.span : nullptr;
            const T* pwv = pw.values ? pw.values + i % pw.span : nullptr;
            V acc = V{};
            for (int64_t j = 0; j < len; j += L) {
                const int count = static_cast<int>(std::min<int64_t>(L, len - j));
                const bool full = count == L;
                const V xv = load_n<S>(x + j, count, T(0));
                const V yv = load_n<S>(y + j, count, T(0));
                // log(1 + e^-x) = max(-x, 0) + log1p(e^-|x|); sigmoid(-x) from the same e^-|x|
                const V t = S::exp(-S::abs(xv));
                const V softplus = S::max(-xv, V{}) + S::log1p(t);
                const V inv = one / (one + t);
                const V sig_neg = xv >= V{} ? t * inv : inv;
                V lw = one;
                if (pwv) lw = one + (load_n<S>(pwv + j, count, T(0)) - one) * yv;
                V loss = (one - yv) * xv + lw * softplus;
                V gr = (one - yv) - lw * sig_neg;
                if (wv) {
                    const V wj = load_n<S>(wv + j, count, T(0));
                    loss *= wj;
                    gr *= wj;
                }
                if (full) {
                    S::store(a.grad + i + j, gr * scale);
                    if (a.losses)
                        S::store(a.losses + i + j, loss);
                    else
                        acc += loss;
                } else {
                    S::store_partial(a.grad + i + j, gr * scale, count);
                    if (a.losses) {
                        S::store_partial(a.losses + i + j, loss, count);
                    } else {
                        for (int l = 0; l < count; ++l) total += loss[l];
                    }
                }
            }
            total += S::hsum(acc);
            i += len;
        }
        return total;
    }
};

template <typename T>
struct MseJob {
    template <int Bytes>
    static PYFAST_INLINE double run(const T* const& x, const T* const& y, const double& grad_scale,
                                    T* const& grad, T* const& losses, const int64_t& m,
                                    const int& tid, const int& nth) {
        using S = Simd<T, Bytes>;
        using V = typename S::V;
        constexpr int L = S::lanes;
        int64_t begin, end;
        share(m, tid, nth, &begin, &end);
        const V scale2 = S::splat(static_cast<T>(2 * grad_scale));
        double total = 0;
        for (int64_t i = begin; i < end;) {
            const int64_t len = std::min(end - i, kMinSpan);
            V acc = V{};
            for (int64_t j = i; j < i + len; j += L) {
                const int count = static_cast<int>(std::min<int64_t>(L, i + len - j));
                if (count == L) {
                    const V d = S::load(x + j) - S::load(y + j);
                    S::store(grad + j, scale2 * d);
                    if (losses)
                        S::store(losses + j, d * d);
                    else
                        acc += d * d;
                } else {
                    const V d = S::load_partial(x + j, count, T(0)) - S::load_partial(y + j, count, T(0));
                    S::store_partial(grad + j, scale2 * d, count);
                    if (losses)
                        S::store_partial(losses + j, d * d, count);
                    else
                        acc += d * d;  // padded lanes are 0 - 0
                }
            }
            total += S::hsum(acc);
            i += len;
        }
        return total;
    }
};

}  // namespace

template <typename T>
void softmax_xent(const XentArgs<T>& a) {
    if (a.n == 0 || a.s == 0) return;
    XentConsts<T> k;
    k.scale = static_cast<T>(a.grad_scale);
    k.hard = static_cast<T>(1 - a.smoothing);
    k.e_over_c = static_cast<T>(a.smoothing / static_cast<double>(a.c));
    double wsum = static_cast<double>(a.c);
    if (a.weight) {
        wsum = 0;
        for (int64_t j = 0; j < a.c; ++j) wsum += a.weight[j];
    }
    k.wsum = static_cast<T>(wsum);
    k.stream = a.s == 1 && streams(a.dlogits, a.logits, a.n * a.c * static_cast<int64_t>(sizeof(T)));
    const bool smooth = a.smoothing != 0;
    if (a.weight)
        smooth ? xent_parallel<T, true, true>(a, k) : xent_parallel<T, true, false>(a, k);
    else
        smooth ? xent_parallel<T, false, true>(a, k) : xent_parallel<T, false, false>(a, k);
}

int64_t first_bad_label(const int64_t* labels, int64_t count, int64_t c, int64_t ignore_index) {
    int64_t first = count;
#pragma omp parallel num_threads(threads_for(count)) reduction(min : first)
    {
        int64_t begin, end;
        share(count, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        for (int64_t i = begin; i < end; ++i) {
            const int64_t y = labels[i];
            if ((y < 0 || y >= c) && y != ignore_index) {
                first = i;
                break;
            }
        }
    }
    return first == count ? -1 : first;
}

template <typename T>
void softmax(const T* x, T* out, int64_t a, int64_t c, int64_t b, bool log) {
    if (a == 0 || b == 0 || c == 0) return;
    const bool stream = streams(out, x, a * b * c * static_cast<int64_t>(sizeof(T)));
#pragma omp parallel num_threads(threads_for(a * b * c))
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        if (b == 1)
            simd_dispatch<SoftmaxRows<T>>(x, out, a, c, log, stream, tid, nth);
        else
            simd_dispatch<SoftmaxTiles<T>>(x, out, a, c, b, log, tid, nth);
    }
}

template <typename T>
double bce_with_logits(const BceArgs<T>& a) {
    const Periodic<T> w(a.weight, a.weight_period), pw(a.pos_weight, a.pos_weight_period);
    double total = 0;
#pragma omp parallel num_threads(threads_for(a.m)) reduction(+ : total)
    total += simd_dispatch<BceJob<T>>(a, w, pw, omp_get_thread_num(), omp_get_num_threads());
    return total;
}

template <typename T>
double mse(const T* x, const T* y, double grad_scale, T* grad, T* losses, int64_t m) {
    double total = 0;
#pragma omp parallel num_threads(threads_for(m)) reduction(+ : total)
    total += simd_dispatch<MseJob<T>>(x, y, grad_scale, grad, losses, m, omp_get_thread_num(),
                                 omp_get_num_threads());
    return total;
}

template void softmax_xent<float>(const XentArgs<float>&);
template void softmax_xent<double>(const XentArgs<double>&);
template void softmax<float>(const float*, float*, int64_t, int64_t, int64_t, bool);
template void softmax<double>(const double*, double*, int64_t, int64_t, int64_t, bool);
template double bce_with_logits<float>(const BceArgs<float>&);
template double bce_with_logits<double>(const BceArgs<double>&);
template double mse<float>(const float*, const float*, double, float*, float*, int64_t);
template double mse<double>(const double*, const double*, double, double*, double*, int64_t);

}  // namespace pyfast
