"""conv with pytest-benchmark: the cases of ``pyfast bench conv`` (pyfast backends against
torch, forward and forward+backward on ResNet and U-Net layer shapes). The reference backend
is left out here (it takes seconds per call); ``pyfast bench conv`` times it."""

from pyfast import bench
from pyfast.bench import conv

CASES = list(conv.cases(bench.Options(backends=("native", "numba"))))


def test_conv(run_case, case, threads):
    run_case(case, threads)


# ---- Winograd vs the direct kernels vs torch channels_last, one run ---------------------------
# python benchmarks/bench_conv.py --winograd [--threads N] [--repeats R]
# The 3x3 stride-1 layers of ResNet-18 at 32x32 (batch 64) and of U-Net at 64x64 (batch 8),
# forward and input gradient, and the whole backward of the planned paths: pyfast's native
# kernels with each path forced (winograd, direct, implicit_gemm where they fit) against torch
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
    print(f"{'layer':20s} {'pass':9s} {'path':18s} {'best':>7s} {'median':>7s} {'%peak':>6s} "
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

        def pf_all():  # the planned paths: forward, then both gradients
            _C.conv2d(x, w, None, y, *one[:3], 1, False)
            _C.conv2d_backward(gy, x, w, gx, gw, None, *one)

        def torch_all():
            torch_fwd()
            torch_bwd([True, True, False])()

        rows = {("fwd", "torch_cl"): torch_fwd,
                ("igrad", "torch_cl"): torch_bwd([True, False, False]),
                ("fwd+bwd", "torch_cl"): torch_all, ("fwd+bwd", "planned"): pf_all}
        for algo in ("winograd", "direct", "implicit_gemm"):
            rows[("fwd", algo)] = pf_fwd(algo)
            rows[("igrad", algo)] = pf_igrad(algo)
        times = {key: [] for key in rows}
        for fn in rows.values():
            fn()  # warm-up: buffers, packed weights, page faults
        for _ in range(repeats):
            for key, fn in rows.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        flops = 2.0 * n * k * c * 9 * hw * hw
        planned = pf_fwd(None)(), pf_igrad(None)()[0]
        for pass_, passes in (("fwd", 1), ("igrad", 1), ("fwd+bwd", 3)):
            base = min(times[(pass_, "torch_cl")])
            for (p, algo), ts in times.items():
                if p != pass_:
                    continue
                best, med = min(ts), float(np.median(ts))
                label = algo
                if pass_ == "fwd+bwd" and algo == "planned":
                    label = f"{planned[0]}/{planned[1]}"
                print(f"{name:20s} {pass_:9s} {label:18s} {passes * flops / best / 1e9:7.1f} "
                      f"{passes * flops / med / 1e9:7.1f} {100 * passes * flops / best / 1e9 / peak:5.0f}% "
                      f"{base / best:7.2f}x")
        print(flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--winograd", action="store_true", help="the Winograd table (above)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.winograd:
        parser.error("run the cases with pytest (see the README); --winograd prints the table")
    _winograd_table(args.threads, args.repeats)
