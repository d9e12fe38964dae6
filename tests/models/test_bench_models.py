"""The end-to-end benchmark's machinery: flop counts, the float64 check that guards every
timing, the torch twin as competitor, and the per-family profile (on tiny networks; the
real sizes run in benchmarks/bench_models.py)."""

import pytest

from pyfast import bench
from pyfast.bench import models

pytest.importorskip("torch")

TINY = models.Network("resnet18", 2, (3, 8, 8), "classes")


def test_cases_list_pyfast_and_each_torch_mode_for_each_network():
    cases = [c for c in models.cases(bench.Options()) if isinstance(c, bench.Case)]
    impls = ("pyfast-native", "torch", "torch-channels_last")
    assert {(c.op.split()[0], c.impl) for c in cases} == {
        (n.name, impl) for n in models.NETWORKS for impl in impls}
    assert [c.shape for c in cases][::3] == ["b64x3x32x32", "b32x3x32x32", "b16x1x64x64"]
    compiled = [c for c in models.cases(bench.Options(compile=True)) if isinstance(c, bench.Case)]
    assert {c.impl for c in compiled} == set(impls) | {"torch-compile"}


def test_flops_of_a_resnet18_step():
    # CIFAR-style ResNet-18: 0.556 G multiply-adds per 32x32 image forward; a step is 3x.
    problem = models.Problem(models.Network("resnet18", 1, (3, 32, 32), "classes"))
    assert problem.flops == pytest.approx(3 * 2 * 0.5565e9, rel=0.01)


def test_steps_pass_the_float64_check_and_a_wrong_loss_does_not():
    network = models.Network("unet", 2, (1, 16, 16), "masks", (("base_channels", 4), ("depth", 2)))
    problem = models.Problem(network)
    for step in (models.pyfast_step(problem), models.torch_step(problem),
                 models.torch_step(problem, "channels_last")):
        problem.check(step())          # the first step's loss is the float64 one
        later = step()                 # the weights moved: the loss changed
        with pytest.raises(bench.WrongResult, match="float64 torch"):
            problem.check(later * 1.5 + 1.0)


def test_an_unknown_torch_mode_is_refused():
    problem = models.Problem(TINY)
    with pytest.raises(ValueError, match="channels_last"):
        models.torch_step(problem, "nhwc")


def test_profile_splits_a_step_by_family():
    p = models.profile(TINY, steps=1)
    assert p["conv"] > 0 and p["norm"] > 0 and p["total"] > 0
    assert sum(v for k, v in p.items() if k != "total") == pytest.approx(p["total"])
    with pytest.raises(ValueError, match="unknown network"):
        models.profile("vgg16")
