// The fused optimizer steps (torch.optim's SGD, RMSprop, Adam/AdamW) in one place: their
// hyperparameters, the per-step scalars derived from them (so that both backends round the
// same numbers the same way) and the per-element update rules, which the CPU loop
// (cpu/optim.cpp, on SIMD vectors) and the CUDA kernel (cuda/optim.cu, on scalars) both
// call. Plain C++ that g++ and nvcc both read; the scalar structs are passed by value to
// the CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

// A function both host and device code call, always inlined: the CPU rules must inline into
// the ISA-targeted loops of cpu/optim.cpp to take their vector ISA.
#ifdef __CUDACC__
#define PYFAST_HD __host__ __device__ __forceinline__
#else
#define PYFAST_HD inline __attribute__((always_inline))
#endif

namespace pyfast {

// Tensor states: SGD {momentum_buf}; RMSprop {square_avg, momentum_buf, grad_avg};
// Adam {exp_avg, exp_avg_sq, max_exp_avg_sq}.
struct SgdHyper {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
    bool first;            // step 1: the momentum buffer takes the gradient
};

struct RmspropHyper {
    double lr, alpha, eps, weight_decay, momentum;
    bool centered;
};

struct AdamHyper {
    double lr, beta1, beta2, eps, weight_decay;
    std::int64_t step;     // >= 1
    bool decoupled;        // AdamW
    bool amsgrad;
};

// Scalars of one step in the element type, and the switches of the rule.
template <typename T>
struct SgdK {
    T lr, momentum, one_minus_dampening, weight_decay;
    bool decay, has_momentum, nesterov, first;
};

template <typename T>
struct RmspropK {
    T lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
    bool decay, has_momentum, centered, lerp_from_start;
};

template <typename T>
struct AdamK {
    T lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay_factor,
        step_size, bias_correction2_sqrt;
    bool decay, decoupled, amsgrad, lerp_from_start;
};

template <typename T>
SgdK<T> step_scalars(const SgdHyper& h) {
    SgdK<T> k;
    k.lr = static_cast<T>(h.lr);
    k.momentum = static_cast<T>(h.momentum);
    k.one_minus_dampening = static_cast<T>(1 - h.dampening);
    k.weight_decay = static_cast<T>(h.weight_decay);
    k.decay = h.weight_decay != 0;
    k.has_momentum = h.momentum != 0;
    k.nesterov = h.nesterov;
    k.first = h.first;
    return k;
}

template <typename T>
RmspropK<T> step_scalars(const RmspropHyper& h) {
    RmspropK<T> k;
    k.lr = static_cast<T>(h.lr);
    k.alpha = static_cast<T>(h.alpha);
    k.one_minus_alpha = static_cast<T>(1 - h.alpha);
    k.eps = static_cast<T>(h.eps);
    k.weight_decay = static_cast<T>(h.weight_decay);
    k.momentum = static_cast<T>(h.momentum);
    k.decay = h.weight_decay != 0;
    k.has_momentum = h.momentum > 0;
    k.centered = h.centered;
    k.lerp_from_start = 1 - h.alpha < 0.5;
    return k;
}

template <typename T>
AdamK<T> step_scalars(const AdamHyper& h) {
    // The bias corrections in double, as torch computes them from Python floats.
    const double step = static_cast<double>(h.step);
    const double bias_correction1 = 1 - std::pow(h.beta1, step);
    const double bias_correction2 = 1 - std::pow(h.beta2, step);
    AdamK<T> k;
    k.lr = static_cast<T>(h.lr);
    k.beta1 = static_cast<T>(h.beta1);
    k.one_minus_beta1 = static_cast<T>(1 - h.beta1);
    k.beta2 = static_cast<T>(h.beta2);
    k.one_minus_beta2 = static_cast<T>(1 - h.beta2);
    k.eps = static_cast<T>(h.eps);
    k.weight_decay = static_cast<T>(h.weight_decay);
    k.decay_factor = static_cast<T>(1 - h.lr * h.weight_decay);
    k.step_size = static_cast<T>(h.lr / bias_correction1);
    k.bias_correction2_sqrt = static_cast<T>(std::sqrt(bias_correction2));
    k.decay = h.weight_decay != 0;
    k.decoupled = h.decoupled;
    k.amsgrad = h.amsgrad;
    k.lerp_from_start = 1 - h.beta1 < 0.5;
    return k;
}

// ---- the per-element rules ------------------------------------------------------------
// Each Rule::update<M>(p, g, s0, s1, s2, k) updates one parameter p (gradient g) and its
// three state slots in place, in torch's order of operations. V is the value: a scalar T on
// the GPU, a SIMD vector of T on the CPU (the arithmetic is the same; T * V broadcasts);
// M supplies sqrt and max for V (cpu/vec_math.h's Simd, or ScalarMath). A state the options
// leave off is neither read nor meant to be stored.

// sqrt and max of scalars, on the host and on the device.
struct ScalarMath {
    static PYFAST_HD float sqrt(float x) { return sqrtf(x); }
    static PYFAST_HD double sqrt(double x) { return ::sqrt(x); }
    template <typename T>
    static PYFAST_HD T max(T a, T b) { return a > b ? a : b; }
};

// torch.lerp(start, end, w): start + w (end - start) for w < 0.5, else end - (end - start)(1 - w)
template <class V, typename T>
PYFAST_HD V torch_lerp(V start, V end, T w, bool from_start) {
    return from_start ? start + w * (end - start) : end - (end - start) * (T(1) - w);
}

// States {momentum_buf}.
struct SgdRule {
    template <class M, class V, typename T>
    static PYFAST_HD void update(V& p, V g, V& buf, V&, V&, const SgdK<T>& k) {
        if (k.decay) g = g + k.weight_decay * p;
        if (k.has_momentum) {
            buf = k.first ? g : buf * k.momentum + k.one_minus_dampening * g;
            g = k.nesterov ? g + k.momentum * buf : buf;
        }
        p = p - k.lr * g;
    }
};

// States {square_avg, momentum_buf, grad_avg}.
struct RmspropRule {
    template <class M, class V, typename T>
    static PYFAST_HD void update(V& p, V g, V& sq, V& buf, V& gavg, const RmspropK<T>& k) {
        if (k.decay) g = g + k.weight_decay * p;
        sq = sq * k.alpha + k.one_minus_alpha * g * g;
        V avg;
        if (k.centered) {
            gavg = torch_lerp(gavg, g, k.one_minus_alpha, k.lerp_from_start);
            avg = M::sqrt(sq - gavg * gavg) + k.eps;
        } else {
            avg = M::sqrt(sq) + k.eps;
        }
        if (k.has_momentum) {
            buf = buf * k.momentum + g / avg;
            p = p - k.lr * buf;
        } else {
            p = p - k.lr * (g / avg);
        }
    }
};

// States {exp_avg, exp_avg_sq, max_exp_avg_sq}; AdamW when k.decoupled.
struct AdamRule {
    template <class M, class V, typename T>
    static PYFAST_HD void update(V& p, V g, V& m, V& v, V& vmax, const AdamK<T>& k) {
        if (k.decay) {
            if (k.decoupled)
                p = p * k.decay_factor;
            else
                g = g + k.weight_decay * p;
        }
        m = torch_lerp(m, g, k.one_minus_beta1, k.lerp_from_start);
        v = v * k.beta2 + k.one_minus_beta2 * g * g;
        V second = v;
        if (k.amsgrad) {
            vmax = M::max(vmax, v);
            second = vmax;
        }
        const V denom = M::sqrt(second) / k.bias_correction2_sqrt + k.eps;
        p = p - k.step_size * (m / denom);
    }
};

}  // namespace pyfast
