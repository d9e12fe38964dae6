"""What `pyfast info` and the `pyfast bench` header say about the machine: the core by
cpuid family/model, its ISA flags and caches, the per-family code paths, and OpenBLAS's
core type with a warning when OPENBLAS_CORETYPE forces it."""

import pytest

from pyfast import bench


@pytest.mark.parametrize("vendor, family, model, name", [
    ("AuthenticAMD", 0x19, 0x01, "Zen 3"), ("AuthenticAMD", 0x19, 0x11, "Zen 4"),
    ("AuthenticAMD", 0x19, 0x61, "Zen 4"), ("AuthenticAMD", 0x1a, 0x02, "Zen 5"),
    ("AuthenticAMD", 0x17, 0x31, "Zen 2"), ("GenuineIntel", 6, 0x8f, "Sapphire Rapids"),
    ("GenuineIntel", 6, 0x01, "family 0x6 model 0x1"), ("Other", 1, 2, "family 0x1 model 0x2")])
def test_microarchitecture_names(vendor, family, model, name):
    assert bench.microarchitecture(vendor, family, model) == name


def test_blas_header_warns_only_when_the_core_type_is_forced():
    lib = {"internal_api": "openblas", "version": "0.3", "prefix": "libopenblas",
           "architecture": "SkylakeX", "threading_layer": "pthreads"}
    plain = bench.blas_header({"libraries": [lib], "openblas_coretype": None})
    assert "core type SkylakeX" in plain and "WARNING" not in plain
    forced = bench.blas_header({"libraries": [lib], "openblas_coretype": "Haswell"})
    assert "WARNING: OPENBLAS_CORETYPE=Haswell" in forced


def test_blas_info_reads_the_environment(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
    assert bench.blas_info()["openblas_coretype"] == "Zen"
    assert any("OPENBLAS_CORETYPE=Zen" in note for note in bench.notes())
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert bench.blas_info()["openblas_coretype"] is None


def test_info_report_names_the_core_flags_caches_and_code_paths(capsys):
    pytest.importorskip("pyfast._C")
    from pyfast import cli
    report = cli._info_report()
    ident = report["cpu_identity"]
    assert ident["family"] > 0 and ident["core"]
    assert {"avx2", "avx512f", "avx512_bf16", "amx_tile"} <= set(ident["flags"])
    assert ident["caches"]["l1d"] > 0 and ident["caches"]["l2"] > 0
    assert set(report["code_paths"]) == set(report["families"])
    assert "KC" in report["code_paths"]["gemm"]
    assert all(v > 0 for v in report["fma_peak_gflops"].values())
    cli._print_info(report)
    out = capsys.readouterr().out
    for line in ("core ", "caches ", "FMA peak", "BLAS ", "paths    gemm"):
        assert line in out
