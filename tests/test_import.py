"""`import pyfast` is near-free: NumPy and pyfast's own modules only (API/ARCHITECTURE rule 6)."""

import subprocess
import sys


def test_import_pulls_in_no_heavy_module():
    code = ("import sys, pyfast; "
            "print(' '.join(m for m in ('numba', 'cupy', 'torch', 'pyfast._cuda', 'pyfast.cli',"
            " 'pyfast.bench') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
