"""conv with pytest-benchmark: the cases of ``pyfast bench conv`` (pyfast backends against
torch, forward and forward+backward on ResNet and U-Net layer shapes). The reference backend
is left out here (it takes seconds per call); ``pyfast bench conv`` times it."""

from pyfast import bench
from pyfast.bench import conv

CASES = list(conv.cases(bench.Options(backends=("native", "numba"))))


def test_conv(run_case, case, threads):
    run_case(case, threads)


# ---- channels-last vs NCHW, interleaved (python benchmarks/bench_conv.py --help) -----------
# Not a pytest-benchmark case: every variant of a layer is timed in turn, repeat after repeat,
# so that a shared machine's load falls on all of them alike. Variants: pyfast on NCHW arrays
# (the planned paths), on channels-last arrays (the implicit path reads and writes NHWC as it
# is, the others convert), channels-last with the implicit path forced for the forward and the
# input gradient, and torch on NCHW and channels_last tensors.

# ResNet-18 (32x32 input) 3x3 stride-1 layers: (name, C = K, H = W)
RESNET18_3X3 = (("conv2_x", 64, 32), ("conv3_x", 128, 16), ("conv4_x", 256, 8),
                ("conv5_x", 512, 4))


def _variants(n, c, hw, seed=0):
    import numpy as np
    import torch

    import pyfast as pf
    from pyfast._arrays import CHANNELS_LAST, to_memory_format

    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, c, hw, hw)).astype(np.float32)
    w = (rng.uniform(-1, 1, (c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.uniform(-1, 1, c).astype(np.float32)
    gy = rng.uniform(-1, 1, (n, c, hw, hw)).astype(np.float32)
    xc, gyc = to_memory_format(x, CHANNELS_LAST), to_memory_format(gy, CHANNELS_LAST)
    kw = dict(padding=1)

    def pyfast_fwd(xa, algo=None):
        return lambda: pf.ops.conv2d(xa, w, b, algo=algo, **kw)

    def pyfast_bwd(xa, ga, algo=None):
        def run():  # the gradients (gx, gw, gb)
            pf.ops.conv2d(xa, w, b, algo=algo, **kw)
            if algo is None:
                return pf.ops.conv2d_backward(ga, xa, w, **kw)
            gx, _, gb = pf.ops.conv2d_backward(ga, xa, w, needs=("x", "b"), algo=algo, **kw)
            return gx, pf.ops.conv2d_backward(ga, xa, w, needs=("w",), **kw)[1], gb
        return run

    def torch_fwd(fmt):
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
        tx = tx.contiguous(memory_format=fmt)
        return lambda: torch.nn.functional.conv2d(tx, tw, tb, **kw)

    def torch_bwd(fmt):
        tx = torch.from_numpy(x).contiguous(memory_format=fmt).requires_grad_()
        tw, tb = (torch.from_numpy(a).requires_grad_() for a in (w, b))
        tg = torch.from_numpy(gy).contiguous(memory_format=fmt)

        def run():
            y = torch.nn.functional.conv2d(tx, tw, tb, **kw)
            return torch.autograd.grad(y, (tx, tw, tb), tg)
        return run

    cl = torch.channels_last
    return {
        "fwd": {"pyfast NCHW": pyfast_fwd(x), "pyfast channels_last": pyfast_fwd(xc),
                "pyfast channels_last, implicit forced": pyfast_fwd(xc, "implicit_gemm"),
                "torch NCHW": torch_fwd(torch.contiguous_format),
                "torch channels_last": torch_fwd(cl)},
        "fwd+bwd": {"pyfast NCHW": pyfast_bwd(x, gy), "pyfast channels_last": pyfast_bwd(xc, gyc),
                    "pyfast channels_last, implicit forced": pyfast_bwd(xc, gyc, "implicit_gemm"),
                    "torch NCHW": torch_bwd(torch.contiguous_format),
                    "torch channels_last": torch_bwd(cl)},
    }


def channels_last_table(batch=32, threads=(1,), repeats=7, layers=RESNET18_3X3):
    """Markdown rows: per layer, op and variant, the median and min time (ms), and the
    effective rate (direct FLOP count / median)."""
    import statistics
    import time

    import numpy as np
    import torch

    import pyfast as pf

    rows = ["| layer | threads | op | variant | median ms | min ms | GFLOP/s (median) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for t in threads:
        pf.set_num_threads(t)
        torch.set_num_threads(t)
        for name, c, hw in layers:
            flops = 2.0 * batch * c * c * 9 * hw * hw
            for op, variants in _variants(batch, c, hw).items():
                # every variant agrees with the first (y, or gx and gw) before any is timed
                first = None
                for fn in variants.values():
                    out = fn()
                    outs = [np.asarray(o) for o in (out[:2] if op == "fwd+bwd" else (out,))]
                    if first is None:
                        first = outs
                    for got, want in zip(outs, first):
                        np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-3)
                times = {v: [] for v in variants}
                for _ in range(repeats):
                    for v, fn in variants.items():
                        start = time.perf_counter()
                        fn()
                        times[v].append(time.perf_counter() - start)
                work = flops * (3 if op == "fwd+bwd" else 1)
                for v, ts in times.items():
                    med = statistics.median(ts)
                    rows.append(f"| {name} N{batch} {c}ch {hw}x{hw} | {t} | {op} | {v} | "
                                f"{med * 1e3:.2f} | {min(ts) * 1e3:.2f} | {work / med * 1e-9:.0f} |")
                print("\n".join(rows[-len(times):]), flush=True)
    return rows


# ---- Winograd vs the direct kernels vs torch channels_last, one run ---------------------------
# python benchmarks/bench_conv.py --winograd [--threads 1,2] [--repeats R]
# The 3x3 stride-1 layers of ResNet-18 at 32x32 (batch 64) and of U-Net at 64x64 (batch 8),
# forward, input gradient and weight gradient, and all three on the planned paths: pyfast's
# native kernels with each path forced (winograd, direct, implicit_gemm where they fit) against torch
# channels_last, interleaved in one process on the same threads. Effective GFLOP/s count the
# direct convolution's 2*N*K*C*9*OH*OW flops per pass (Winograd does fewer); "% peak" is that
# rate over pyfast's measured float32 FMA peak at the same thread count.

WINOGRAD_LAYERS = (  # (name, N, C, H=W, K)
    ("resnet18 64@32x32", 64, 64, 32, 64),
    ("resnet18 128@16x16", 64, 128, 16, 128),
    ("resnet18 256@8x8", 64, 256, 8, 256),
    ("resnet18 512@4x4", 64, 512, 4, 512),
    ("unet 64@64x64", 8, 64, 64, 64),
    ("unet 128@32x32", 8, 128, 32, 128),
    ("unet 256@16x16", 8, 256, 16, 256),
    ("unet 512@8x8", 8, 512, 8, 512),
)


def _winograd_table(threads, repeats):
    import time

    import numpy as np
    import torch

    from pyfast import _C

    _C.set_num_threads(threads)
    torch.set_num_threads(threads)
    peak = max(_C.fma_peak_gflops(threads) for _ in range(3))  # a busy host lowers a probe
    rng = np.random.default_rng(0)
    print(f"ISA {_C.isa()}, {threads} thread(s), float32 FMA peak {peak:.1f} GFLOP/s "
          f"(measured now); best / median of {repeats} interleaved rounds, effective GFLOP/s "
          f"(direct flop count) and % of peak of the best")
    print(f"{'layer':20s} {'pass':9s} {'path':26s} {'best':>7s} {'median':>7s} {'%peak':>6s} "
          f"{'vs torch':>8s}")
    for name, n, c, hw, k in WINOGRAD_LAYERS:
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        w = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        gy = rng.standard_normal((n, k, hw, hw)).astype(np.float32)
        y, gx, gw = np.empty_like(gy), np.empty_like(x), np.empty_like(w)
        one = ((1, 1), (1, 1), (1, 1), 1)
        xt, wt, gyt = (torch.from_numpy(a).to(memory_format=torch.channels_last)
                       for a in (x, w, gy))
        aten_bwd = torch.ops.aten.convolution_backward

        def torch_fwd():
            with torch.no_grad():
                torch.nn.functional.conv2d(xt, wt, padding=1)

        def torch_bwd(mask):
            return lambda: aten_bwd(gyt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0],
                                    1, mask)

        def pf_fwd(algo):
            return lambda: _C.conv2d(x, w, None, y, *one[:3], 1, False, algo=algo)

        def pf_igrad(algo):
            return lambda: _C.conv2d_backward(gy, None, w, gx, None, None, *one, algo=algo)

        def pf_wgrad(algo):
            return lambda: _C.conv2d_backward(gy, x, w, None, gw, None, *one, algo=algo)

        def pf_all():  # the planned paths: forward, then both gradients
            _C.conv2d(x, w, None, y, *one[:3], 1, False)
            _C.conv2d_backward(gy, x, w, gx, gw, None, *one)

        def torch_all():
            torch_fwd()
            torch_bwd([True, True, False])()

        rows = {("fwd", "torch_cl"): torch_fwd,
                ("igrad", "torch_cl"): torch_bwd([True, False, False]),
                ("wgrad", "torch_cl"): torch_bwd([False, True, False]),
                ("fwd+bwd", "torch_cl"): torch_all, ("fwd+bwd", "planned"): pf_all}
        for algo in ("winograd", "direct", "implicit_gemm"):
            rows[("fwd", algo)] = pf_fwd(algo)
            rows[("igrad", algo)] = pf_igrad(algo)
            if algo != "implicit_gemm":  # it has no weight gradient
                rows[("wgrad", algo)] = pf_wgrad(algo)
        times = {key: [] for key in rows}
        for fn in rows.values():
            fn()  # warm-up: buffers, packed weights, page faults
        for _ in range(repeats):
            for key, fn in rows.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        flops = 2.0 * n * k * c * 9 * hw * hw
        planned = pf_fwd(None)(), pf_igrad(None)()[0], pf_wgrad(None)()[1]
        for pass_, passes in (("fwd", 1), ("igrad", 1), ("wgrad", 1), ("fwd+bwd", 3)):
            base = min(times[(pass_, "torch_cl")])
            for (p, algo), ts in times.items():
                if p != pass_:
                    continue
                best, med = min(ts), float(np.median(ts))
                label = algo
                if pass_ == "fwd+bwd" and algo == "planned":
                    label = "/".join(planned)
                print(f"{name:20s} {pass_:9s} {label:26s} {passes * flops / best / 1e9:7.1f} "
                      f"{passes * flops / med / 1e9:7.1f} {100 * passes * flops / best / 1e9 / peak:5.0f}% "
                      f"{base / best:7.2f}x")
        print(flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="ResNet-18 3x3 layers: pyfast NCHW vs "
                                     "channels-last vs torch, interleaved")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--winograd", action="store_true",
                        help="the Winograd table instead (winograd vs direct vs implicit vs "
                        "torch channels_last, ResNet-18 and U-Net 3x3 layers)")
    args = parser.parse_args()
    if args.winograd:
        for t in args.threads.split(","):
            _winograd_table(int(t), args.repeats)
        raise SystemExit(0)
    table = channels_last_table(args.batch, tuple(int(t) for t in args.threads.split(",")),
                                args.repeats)
    print("\n".join(table))
