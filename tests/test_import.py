"""`import pyfast` is near-free (docs/architecture.md rule 6): no heavy dependency, and no
submodule until it is used (PEP 562), while every public name stays reachable."""

import json
import subprocess
import sys

LAZY = ("pyfast.ops", "pyfast.backends", "pyfast.tensor", "pyfast.nn", "pyfast.optim",
        "pyfast.train", "pyfast.data", "pyfast.models", "pyfast.io", "pyfast.distributed",
        "pyfast.memory", "pyfast.amp", "pyfast.torch", "pyfast.jax", "pyfast.cli",
        "pyfast.bench", "pyfast._C", "pyfast._cuda")
HEAVY = ("numba", "cupy", "torch", "jax", "mpi4py", "sklearn", "safetensors")

# docs/api.md section 1 and the names that were importable from the package before it was lazy.
PUBLIC = ("__version__", "backends", "ops", "use_backend", "set_num_threads", "get_num_threads",
          "manual_seed", "Tensor", "tensor", "from_dlpack", "cat", "stack", "no_grad",
          "enable_grad", "set_grad_enabled", "nn", "optim", "train", "save", "load", "data",
          "models", "distributed", "io")


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_import_loads_no_submodule_and_no_heavy_module():
    loaded = _run("import sys, json, pyfast; print(json.dumps(sorted(sys.modules)))")
    assert [m for m in LAZY + HEAVY if m in loaded] == []


def test_every_public_name_resolves_and_is_listed():
    result = _run(
        "import json, sys, types, pyfast as pf\n"
        f"names = {PUBLIC!r}\n"
        "kinds = {n: type(getattr(pf, n)).__name__ for n in names}\n"
        "print(json.dumps({'dir': dir(pf), 'all': pf.__all__, 'kinds': kinds,\n"
        "                  'torch': 'torch' in sys.modules}))")
    assert set(PUBLIC) <= set(result["dir"])
    assert set(PUBLIC) <= set(result["all"])
    kinds = result["kinds"]
    assert kinds["ops"] == kinds["nn"] == kinds["data"] == "module"
    assert kinds["Tensor"] == "type" and kinds["tensor"] == "function"
    assert not result["torch"]   # resolving every name still leaves torch alone


def test_first_use_loads_only_what_it_needs():
    loaded = _run("import sys, json, pyfast as pf; pf.ops.matmul; "
                  "print(json.dumps(sorted(sys.modules)))")
    assert "pyfast.ops" in loaded
    assert [m for m in ("pyfast.nn", "pyfast.train", "pyfast.data", "pyfast.models")
            if m in loaded] == []


def test_tensor_stays_the_constructor_after_the_submodule_loads():
    # importing pyfast.tensor sets it as a package attribute; pf.tensor must stay the function
    kind = _run("import json, pyfast as pf, pyfast.nn\n"
                "t = pf.tensor([1.0, 2.0])\n"
                "print(json.dumps([type(pf.tensor).__name__, type(t).__name__]))")
    assert kind == ["function", "Tensor"]


def test_unknown_attribute_raises_attribute_error():
    result = _run("import json, pyfast as pf\n"
                  "try:\n    pf.no_such_name\nexcept AttributeError as e:\n    r = str(e)\n"
                  "print(json.dumps([r, hasattr(pf, 'torch'), hasattr(pf, 'jax')]))")
    assert "no_such_name" in result[0]
    assert result[1:] == [False, False]   # frameworks load only through an explicit import
