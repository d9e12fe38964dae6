"""Build pyfast's two native extensions.

pyfast._C     C++17 + OpenMP CPU kernels. Portable by default: the SIMD code paths carry
              their own `target` attributes and are chosen at run time, so the baseline
              flags stay x86-64. PYFAST_NATIVE_ARCH=1 adds -march=native.
pyfast._alloc the caching allocator, a NumPy memory handler (NEP 49) on the plain C API: tiny,
              so the scope pf.ops enters costs no import of the kernels.
pyfast._cuda  CUDA kernels, built whenever nvcc is found (PYFAST_CUDA=0/1 forces it off/on).
              The .cu files are compiled by nvcc for sm_80, sm_90 and PTX, then linked with
              the C++ bindings against the static cudart, so the module imports on a
              machine without a GPU.
"""

import glob
import os
import shutil
import subprocess
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CUDA_ARCHS = ("80", "90")


def _flag(name):
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be 0 or 1, got {os.environ[name]!r}")


def _rel(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def _find_nvcc():
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if nvcc:
        return nvcc
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return None


def _cuda_home(nvcc):
    real = os.path.realpath(nvcc)
    for home in (os.environ.get("CUDA_HOME"), os.path.dirname(os.path.dirname(real)), "/usr/local/cuda"):
        if home and glob.glob(os.path.join(home, "lib*", "libcudart_static.a")):
            return home
    raise SystemExit(f"nvcc found at {nvcc} but no libcudart_static.a next to it; set CUDA_HOME")


cxx_flags = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-fvisibility=hidden", "-Wno-psabi"]
if _flag("PYFAST_NATIVE_ARCH"):
    cxx_flags.append("-march=native")
# PYFAST_SANITIZE=address,undefined: an instrumented _C for .ci/sanitize (-O1 -g: readable
# reports, quicker to build). UBSan reports are made fatal so none can scroll by unnoticed.
sanitize = os.environ.get("PYFAST_SANITIZE", "").strip()
sanitize_flags = []
if sanitize:
    sanitize_flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
    if "undefined" in sanitize.split(","):
        sanitize_flags.append("-fno-sanitize-recover=undefined")
    cxx_flags = [f for f in cxx_flags if f != "-O3"] + ["-O1", "-g"] + sanitize_flags

ALLOCATOR = ["csrc/common/allocator.cpp"]
ext_modules = [
    Pybind11Extension(
        "pyfast._C",
        sources=[s for s in _rel("csrc/common/*.cpp") if s not in ALLOCATOR]
        + _rel("csrc/cpu/*.cpp") + _rel("csrc/cpu/conv/*.cpp")
        + _rel("csrc/bindings/cpu_*.cpp") + ["csrc/bindings.cpp"],
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=cxx_flags + ["-fopenmp"],
        extra_link_args=["-fopenmp"] + sanitize_flags,
    ),
    Pybind11Extension(
        "pyfast._alloc",
        sources=ALLOCATOR + ["csrc/bindings/allocator.cpp"],
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=cxx_flags,
        extra_link_args=sanitize_flags,
    ),
]

want_cuda = _flag("PYFAST_CUDA")
nvcc = _find_nvcc() if want_cuda is not False else None
if want_cuda and not nvcc:
    raise SystemExit("PYFAST_CUDA=1 but nvcc was not found (set NVCC or CUDA_HOME)")
if nvcc:
    home = _cuda_home(nvcc)
    libdir = os.path.dirname(glob.glob(os.path.join(home, "lib*", "libcudart_static.a"))[0])
    cuda_ext = Pybind11Extension(
        "pyfast._cuda",
        sources=_rel("csrc/bindings/cuda_*.cpp") + ["csrc/bindings_cuda.cpp"],
        include_dirs=["csrc", os.path.join(home, "include")],
        cxx_std=17,
        extra_compile_args=["-O3", "-fvisibility=hidden"],
        extra_link_args=[f"-L{libdir}", "-lcudart_static", "-lrt", "-ldl", "-lpthread"],
    )
    cuda_ext.cuda_sources = _rel("csrc/cuda/*.cu")
    ext_modules.append(cuda_ext)


class BuildExt(build_ext):
    """build_ext that first compiles an extension's .cu files with nvcc."""

    def build_extension(self, ext):
        cu = getattr(ext, "cuda_sources", ())
        if cu:
            ext.extra_objects = [self._nvcc(src) for src in cu]
        super().build_extension(ext)

    def _nvcc(self, src):
        obj = os.path.join(self.build_temp, os.path.splitext(src)[0] + ".o")
        os.makedirs(os.path.dirname(obj), exist_ok=True)
        # every header a .cu file can include: its own folder's and the CPU/CUDA shared ones
        deps = [src] + [h for folder in ("cuda", "common") for pattern in ("*.h", "*.cuh")
                        for h in glob.glob(os.path.join(HERE, "csrc", folder, pattern))]
        if not self.force and os.path.exists(obj) and all(
            os.path.getmtime(obj) >= os.path.getmtime(d) for d in deps
        ):
            return obj
        gencode = []
        for arch in CUDA_ARCHS:
            gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        gencode += ["-gencode", f"arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}"]
        cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Icsrc",
               "-Xcompiler", "-fPIC,-fvisibility=hidden", "-cudart=static", *gencode]
        print(" ".join(cmd), file=sys.stderr)
        subprocess.check_call(cmd, cwd=HERE)
        return obj


setup(
    packages=find_packages(include=["pyfast", "pyfast.*"])
    + ["pyfast.kernels" + sub for sub in ("", ".cpu", ".cuda")],
    package_dir={"pyfast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
