"""``pyfast train --nproc 2``: the command relaunches itself under mpiexec and trains
data-parallel; rank 0 alone prints and writes the results."""

import json
import os
import subprocess
import sys

from .conftest import ROOT, needs_mpi, worker_env


@needs_mpi
def test_train_nproc_2(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "pyfast.cli", "train", "autoencoder",
                           "--data", "breast-cancer", "--epochs", "2", "--nproc", "2", "--threads", "1",
                           "--quiet", "--out", str(out)],
                          cwd=ROOT, env=worker_env(), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "launching 2 ranks x 1 thread" in text
    assert text.count("training Autoencoder") == 1 and "on each of 2 ranks" in text
    summary = json.loads((out / "history.json").read_text())
    assert summary["ranks"] == 2 and len(summary["history"]["val_loss"]) == 2
    assert os.path.exists(out / "model.safetensors")


def test_nproc_usage_errors(tmp_path):
    from pyfast.cli import main
    assert main(["train", "autoencoder", "--data", "digits", "--nproc", "0"]) == 2
