"""GEMM cache blocking: derived from the cache sizes by the formula documented in
csrc/cpu/gemm.cpp, overridable with PYFAST_GEMM_BLOCKS, and correct whatever the blocks
(tiny forced blocks make every loop of the nest run many times on small shapes)."""

import json
import os
import subprocess
import sys

import pytest

_C = pytest.importorskip("pyfast._C")

CHECK = r"""
import json, sys
import numpy as np
import pyfast as pf
from pyfast import _C
rng = np.random.default_rng(0)
worst = 0.0
for m, k, n in [(97, 203, 131), (1, 300, 17), (61, 65, 200), (130, 7, 70)]:
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((k, m)).astype(dtype).T      # a transposed view
        b = rng.standard_normal((k, n)).astype(dtype)
        bias = rng.standard_normal(n).astype(dtype)
        got = pf.ops.matmul(a, b, bias=bias, activation="relu", backend="native")
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        want = np.maximum(a64 @ b64 + bias, 0)
        bound = (k + 2) * np.finfo(dtype).eps * (np.abs(a64) @ np.abs(b64) + np.abs(bias))
        worst = max(worst, float(np.max(np.abs(got - want) / bound)))
print(json.dumps({"f32": dict(_C.gemm_blocking("float32")),
                  "f64": dict(_C.gemm_blocking("float64")), "worst": worst}))
"""


def _run(blocks):
    env = dict(os.environ)
    env.pop("PYFAST_GEMM_BLOCKS", None)
    if blocks is not None:
        env["PYFAST_GEMM_BLOCKS"] = blocks
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def _expected(caches, mr, nr, size):
    """The formula of csrc/cpu/gemm.cpp, written out again."""
    def clamp(v, q, lo, hi):
        return max(lo, min(hi, v // q * q))
    kc = clamp(caches["l1d"] // ((mr + nr) * size) + 32, 64, 64, 1024)   # nearest 64
    mc = clamp(caches["l2"] * 3 // 4 // (kc * size), mr, mr, 1020 // mr * mr)
    share = caches["l3"] // max(1, caches["l3_sharing"]) // 2 if caches["l3"] > 0 else caches["l2"]
    nc = clamp(share // (kc * size), nr, 4 * nr, 4096 // nr * nr)
    return {"mc": mc, "kc": kc, "nc": nc}


def test_derived_blocks_follow_the_cache_formula_and_fit_the_caches():
    result = _run(None)
    caches = dict(_C.cpu_caches())
    for key, size in (("f32", 4), ("f64", 8)):
        b = result[key]
        assert {k: b[k] for k in ("mc", "kc", "nc")} == _expected(caches, b["mr"], b["nr"], size)
        assert (b["mr"] + b["nr"]) * b["kc"] * size <= 1.25 * max(caches["l1d"], 64 * 44 * size)
        assert b["mc"] % b["mr"] == 0 and b["nc"] % b["nr"] == 0
    assert result["worst"] <= 1.0


def test_forced_tiny_blocks_give_the_same_products():
    result = _run("12,40,10")   # rounded up to the minimum: KC 64, NC 4 slivers
    b = result["f32"]
    assert b["kc"] == 64 and b["mc"] == 12 // b["mr"] * b["mr"] and b["nc"] == 4 * b["nr"]
    assert result["worst"] <= 1.0


def test_a_malformed_override_is_ignored():
    assert _run("lots")["f32"] == _run(None)["f32"]


def test_set_gemm_blocks_forces_and_restores():
    derived = dict(_C.gemm_blocking("float32"))
    try:
        _C.set_gemm_blocks(48, 128, 256)
        forced = dict(_C.gemm_blocking("float32"))
        assert (forced["kc"], forced["mc"]) == (128, 48 // forced["mr"] * forced["mr"])
        with pytest.raises(ValueError, match="all be positive"):
            _C.set_gemm_blocks(1, 0, 0)
    finally:
        _C.set_gemm_blocks()
    assert dict(_C.gemm_blocking("float32")) == derived
