"""optim family: fused optimizer updates with torch.optim's update rules (SGD with momentum,
RMSprop, Adam and AdamW), in place, one pass over memory per step.

Each function takes one array per argument or lists of them (one entry per parameter
tensor); either way the backend gets lists and updates all of them in one call (one
parallel region or launch). Every argument is checked before any buffer is touched, so a
bad call changes nothing.

Backend kernels (lists of C-contiguous arrays, validated; hyper-parameters as floats):
    sgd_step(params, grads, momentum_bufs | None, lr, momentum, dampening, nesterov,
             weight_decay, first)            first: step 1, the buffer takes the gradient
    rmsprop_step(params, grads, square_avgs, momentum_bufs | None, grad_avgs | None, lr,
                 alpha, eps, weight_decay, momentum, centered)
    adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs | None, step, lr,
              beta1, beta2, eps, weight_decay, decoupled, amsgrad)
and, optionally, first_overlap(arrays, written) -> (i, j) | None: the aliasing check on
NumPy arrays, in native code (check_no_aliasing). A backend whose step kernels check every
array themselves before writing any (type, dtype, shape, layout, writeability: the native
binding does) and that brings first_overlap may say so with ``optim_checks_arrays = True``;
pf.ops then hands it lists of NumPy arrays unchecked (_self_checking).
"""

import math

import numpy as np

from pyfast import backends
from pyfast._arrays import as_array, contiguous, describe, float_dtype, same_device


def _hyper(value, name, low=0.0, high=math.inf, high_open=False):
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(value) and value >= low
          and (value < high if high_open else value <= high))
    if not ok:
        span = f"[{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {span}, got {value!r}")
    return float(value)


def _step(step):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an int >= 1 (steps count from 1), got {step!r}")
    return int(step)


def _as_list(value, name):
    if isinstance(value, (list, tuple)):
        if all(type(v) is np.ndarray for v in value):  # nothing to convert or name
            return list(value), True
        return [as_array(v, f"{name}[{i}]") for i, v in enumerate(value)], True
    return [as_array(value, name)], False


def _label(name):
    """An entry's name: a string, or (list name, index) formatted only when it is shown."""
    return name if isinstance(name, str) else f"{name[0]}[{name[1]}]"


def _extent(x):
    """(device, first byte, one past the last byte) of the memory ``x`` spans."""
    if isinstance(x, np.ndarray):
        device, ptr = "cpu", x.__array_interface__["data"][0]
    else:  # cupy
        device, ptr = f"cuda:{x.device.id}", x.data.ptr
    if x.flags.c_contiguous:  # every checked buffer: no walk over the strides
        return device, ptr, ptr + x.nbytes
    lo = hi = ptr
    for n, step in zip(x.shape, x.strides):
        reach = (n - 1) * step
        lo, hi = (lo + reach, hi) if reach < 0 else (lo, hi + reach)
    return device, lo, hi + x.itemsize


def _owner_key(x):
    """Equal for any two arrays that may share memory: the NumPy array at the end of the
    base chain when it allocated its own data, else one key for all the rest (memory
    imported through DLPack or a buffer, CuPy arrays), which are compared by address."""
    while isinstance(x, np.ndarray) and x.base is not None:
        x = x.base
    return id(x) if isinstance(x, np.ndarray) and x.flags.owndata else None


def check_no_aliasing(entries, what, kernels=None):
    """Raise ValueError if two of ``entries`` ((name, array, written); name as _label takes
    it) share memory and at least one of them is written: an in-place update through one
    would change the other mid-step. Read-only entries may share with each other.

    ``kernels``, the backend namespace about to run the step, may bring a native
    ``first_overlap(arrays, written)``: it takes NumPy arrays, whose addresses it reads for
    nothing where Python pays about 1 us an array (100 torch tensors' buffers: 0.8 ms a
    step). Otherwise the search below, cheap for any length too: arrays with different
    memory owners cannot overlap, so only entries that share an owner (views of one buffer,
    the same array twice) have their address ranges compared, by one sort."""
    native = getattr(kernels, "first_overlap", None)
    if native is not None and all(type(a) is np.ndarray for _, a, _ in entries):
        pair = native([a for _, a, _ in entries], [w for _, _, w in entries])
    else:
        pair = _first_overlap(entries)
    if pair is not None:
        first, second = pair  # named in argument order
        raise ValueError(
            f"{what}: {_label(entries[first][0])} and {_label(entries[second][0])} share "
            f"memory; every parameter, gradient and state buffer must be a separate array "
            f"(one is updated in place)")
    return entries


def _first_overlap(entries):
    """The first pair (i, j), i < j, of entries whose memory overlaps, one of them written,
    or None: a span overlaps an earlier-starting one exactly when it starts before the
    furthest end reached so far (csrc/bindings/cpu_optim.cpp's first_overlap is the same
    sweep)."""
    by_owner = {}
    for i, (_, a, _) in enumerate(entries):
        by_owner.setdefault(_owner_key(a), []).append(i)
    shared = [i for group in by_owner.values() if len(group) > 1 for i in group]
    spans = sorted((*_extent(entries[i][1]), i, entries[i][2]) for i in shared
                   if entries[i][1].size)
    last_all = last_written = None  # (device, end, entry) reaching furthest so far
    for device, lo, hi, i, written in spans:
        for prior in ((last_all if written else None), last_written):
            if prior is not None and prior[0] == device and lo < prior[1]:
                return tuple(sorted((prior[2], i)))
        if last_all is None or last_all[0] != device or hi > last_all[1]:
            last_all = (device, hi, i)
        if written and (last_written is None or last_written[0] != device
                        or hi > last_written[1]):
            last_written = (device, hi, i)
    return None


class _Buffers:
    """The checked argument lists of one call: params first, then grads and state buffers
    with the params' shapes and dtypes.

    Each array first meets a fast test (a C-contiguous NumPy array of the params' dtype and
    shape, writeable where it is updated): what passes needs no more, and the names that
    error messages use are built only for an array that fails it, which then goes through
    the full checks. A step over 100 tensors checked every one with formatted names:
    10 us per tensor, more than the kernel's own overhead."""

    def __init__(self, param, grad):
        self.params, self.listed = _as_list(param, "param")
        if not self.params:
            raise ValueError("param is an empty list")
        self.device = None
        first = self.params[0]
        self._writable(first, self._name("param", 0))
        self.dtype = first.dtype
        for i, p in enumerate(self.params[1:], 1):  # params differ in shape, not in kind
            if not (type(p) is type(first) is np.ndarray and p.dtype == self.dtype
                    and p.flags.c_contiguous and p.flags.writeable):
                self._writable(p, self._name("param", i))
        if any(p.dtype != self.dtype for p in self.params):
            # one dtype per call, as an optimizer packs one flat buffer per dtype
            float_dtype(**{self._name("param", i): p for i, p in enumerate(self.params)})
        self._named = [(self._key("param", i), p, True) for i, p in enumerate(self.params)]
        self.grads = self.match(grad, "grad", in_place=False)
        self._named += [(self._key("grad", i), g, False) for i, g in enumerate(self.grads)]

    def _name(self, name, i):
        return f"{name}[{i}]" if self.listed else name

    def _key(self, name, i):
        """The entry name check_aliasing shows (formatted only then: see _label)."""
        return (name, i) if self.listed else name

    def _fast(self, x, p, in_place):
        """Whether x passes every check against param p without looking further: NumPy,
        p's dtype and shape, C-contiguous, and writeable if it is updated in place."""
        return (type(x) is np.ndarray and type(p) is np.ndarray and x.dtype == p.dtype
                and x.shape == p.shape and x.flags.c_contiguous
                and (not in_place or x.flags.writeable))

    def _writable(self, x, name):
        float_dtype(**{name: x})
        device = same_device(**{name: x})
        if self.device is None:
            self.device = device
        elif device != self.device:
            raise ValueError(f"{name} is on {device} but param is on {self.device}")
        if not x.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous: it is updated in place "
                             f"(got {describe(x)} with strides {x.strides})")
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            raise ValueError(f"{name} is read-only")

    def match(self, value, name, in_place=True):
        """``value`` as a list matching the params, or raise naming the mismatch."""
        if value is None:
            return None
        values, listed = _as_list(value, name)
        if listed != self.listed or len(values) != len(self.params):
            raise ValueError(f"{name} must be {'a list of ' + str(len(self.params)) if self.listed else 'one array'}"
                             f" like param, got {'a list of ' + str(len(values)) if listed else 'one array'}")
        out = []
        for i, (p, v) in enumerate(zip(self.params, values)):
            if not self._fast(v, p, in_place):
                v = self._check_match(p, v, name, i, in_place)
            if in_place:
                self._named.append((self._key(name, i), v, True))
            out.append(v)
        return out

    def _check_match(self, p, v, name, i, in_place):
        label, plabel = self._name(name, i), self._name("param", i)
        float_dtype(**{plabel: p, label: v})
        if v.shape != p.shape:
            raise ValueError(f"{label} has shape {tuple(v.shape)} but {plabel} has shape "
                             f"{tuple(p.shape)}")
        if in_place:
            self._writable(v, label)
            return v
        same_device(**{plabel: p, label: v})
        return contiguous(v)

    def check_aliasing(self, what, kernels):
        """After every buffer is matched: none written may share memory with another."""
        check_no_aliasing(self._named, what, kernels)

    def required(self, value, name, why):
        if value is None:
            raise ValueError(f"{name} is required {why}")
        return self.match(value, name)


def _kernels(device, backend):
    return backends.select("optim", device, backend)[1]


def _self_checking(param, grad, states, backend):
    """The CPU kernels that may take these lists as they are, or None.

    Where param, grad and every state in use are lists of NumPy arrays and the backend's
    kernels check each array themselves before writing any (``optim_checks_arrays``),
    _Buffers' checks would only repeat them, at about 2 us a tensor (four arrays) in
    Python against the binding's 0.2 (a step over 100 torch tensors spent 0.2 ms there). The aliasing check,
    which no kernel makes, runs here, natively. A call that fails any check goes on to the
    full checks (see _ran), which raise naming the argument as pf.ops does."""
    lists = (param, grad, *states)
    if not all(type(x) in (list, tuple) and all(type(a) is np.ndarray for a in x)
               for x in lists):
        return None
    kernels = _kernels("cpu", backend)
    if not getattr(kernels, "optim_checks_arrays", False):
        return None
    written = [True] * len(param) + [False] * len(grad) + [True] * sum(map(len, states))
    if kernels.first_overlap([a for x in lists for a in x], written) is not None:
        return None
    return kernels


def _ran(kernel, *args):
    """Whether ``kernel(*args)`` ran; False if it refused its arguments (before writing
    anything, as _self_checking's kernels do), for the full checks to name the fault."""
    try:
        kernel(*args)
    except (TypeError, ValueError):
        return False
    return True


def sgd_step(param, grad, momentum_buf=None, *, lr, momentum=0.0, dampening=0.0,
             nesterov=False, weight_decay=0.0, step=1, backend=None):
    """One torch.optim.SGD step in place: weight decay, momentum (the buffer takes the
    gradient at step 1), dampening, Nesterov."""
    lr, momentum = _hyper(lr, "lr"), _hyper(momentum, "momentum")
    dampening, weight_decay = _hyper(dampening, "dampening"), _hyper(weight_decay, "weight_decay")
    step = _step(step)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("nesterov needs momentum > 0 and dampening == 0, got "
                         f"momentum={momentum} and dampening={dampening}")
    args = (lr, momentum, dampening, bool(nesterov), weight_decay, step == 1)
    bufs = momentum_buf if momentum else None
    fast = _self_checking(param, grad, [bufs] if momentum else [], backend)
    if fast is not None and _ran(fast.sgd_step, param, grad, bufs, *args):
        return
    b = _Buffers(param, grad)
    bufs = b.required(momentum_buf, "momentum_buf", f"with momentum={momentum}") \
        if momentum else None
    kernels = _kernels(b.device, backend)
    b.check_aliasing("sgd_step", kernels)
    kernels.sgd_step(b.params, b.grads, bufs, *args)


def rmsprop_step(param, grad, square_avg, *, lr, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, momentum_buf=None, centered=False, grad_avg=None, backend=None):
    """One torch.optim.RMSprop step in place (optionally centered and with momentum)."""
    lr, alpha, eps = _hyper(lr, "lr"), _hyper(alpha, "alpha", 0.0, 1.0), _hyper(eps, "eps")
    weight_decay, momentum = _hyper(weight_decay, "weight_decay"), _hyper(momentum, "momentum")
    args = (lr, alpha, eps, weight_decay, momentum, bool(centered))
    bufs, gavg = momentum_buf if momentum else None, grad_avg if centered else None
    states = [square_avg] + ([bufs] if momentum else []) + ([gavg] if centered else [])
    fast = _self_checking(param, grad, states, backend)
    if fast is not None and _ran(fast.rmsprop_step, param, grad, square_avg, bufs, gavg, *args):
        return
    b = _Buffers(param, grad)
    sq = b.required(square_avg, "square_avg", "")
    bufs = b.required(momentum_buf, "momentum_buf", f"with momentum={momentum}") \
        if momentum else None
    gavg = b.required(grad_avg, "grad_avg", "with centered=True") if centered else None
    kernels = _kernels(b.device, backend)
    b.check_aliasing("rmsprop_step", kernels)
    kernels.rmsprop_step(b.params, b.grads, sq, bufs, gavg, *args)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled=False, amsgrad=False, max_exp_avg_sq=None,
              backend=None):
    """One Adam step in place (``decoupled=True``: AdamW's decoupled weight decay), with
    bias correction and optionally AMSGrad, as torch.optim.Adam / AdamW."""
    step = _step(step)
    lr, eps, weight_decay = _hyper(lr, "lr"), _hyper(eps, "eps"), _hyper(weight_decay,
                                                                        "weight_decay")
    beta1 = _hyper(beta1, "beta1", 0.0, 1.0, high_open=True)
    beta2 = _hyper(beta2, "beta2", 0.0, 1.0, high_open=True)
    args = (step, lr, beta1, beta2, eps, weight_decay, bool(decoupled), bool(amsgrad))
    vmax = max_exp_avg_sq if amsgrad else None
    fast = _self_checking(param, grad, [exp_avg, exp_avg_sq] + ([vmax] if amsgrad else []),
                          backend)
    if fast is not None and _ran(fast.adam_step, param, grad, exp_avg, exp_avg_sq, vmax, *args):
        return
    b = _Buffers(param, grad)
    m = b.required(exp_avg, "exp_avg", "")
    v = b.required(exp_avg_sq, "exp_avg_sq", "")
    vmax = b.required(max_exp_avg_sq, "max_exp_avg_sq", "with amsgrad=True") if amsgrad else None
    kernels = _kernels(b.device, backend)
    b.check_aliasing("adam_step", kernels)
    kernels.adam_step(b.params, b.grads, m, v, vmax, *args)
