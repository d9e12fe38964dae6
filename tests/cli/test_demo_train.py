"""pyfast demo and pyfast train from the command line: one-line errors with exit code 2 for
bad input and 1 for an environment that cannot run it, and tiny successful runs that write
their pictures and summaries (the full demo's quality is exercised by running it, not here:
it takes minutes)."""

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

pytest.importorskip("sklearn")   # the digits


def pyfast(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pyfast.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def read_png(path):
    """(width, height, colour type, pixels) of a PNG written by pyfast (filter 0, 8 bit)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3, 6: 4}[colour]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, -1)
    assert (raw[:, 0] == 0).all() and depth == 8
    return w, h, colour, raw[:, 1:].reshape(h, w, channels)


@pytest.mark.parametrize("args, message", [
    (("train", "resnet99", "--data", "digits"), "unknown model 'resnet99'"),
    (("train", "resnet18", "--data", "mnist"), "unknown data set 'mnist'"),
    (("train", "resnet18", "--data", "missing/file.npz"), "no such file"),
    (("train", "unet", "--data", "digits"), "needs masks"),
    (("train", "resnet18", "--data", "breast-cancer"), "is tabular"),
    (("train", "resnet18", "--data", "digits", "--epochs", "0"), "positive integer"),
    (("train", "resnet18", "--data", "digits", "--lr", "-1"), "positive number"),
    (("train", "resnet18"), "required: --data"),
    (("demo", "--tasks", "painting"), "invalid choice"),
    (("demo", "--seed", "-3"), "integer >= 0"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    run = pyfast(*args)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr


def test_unusable_output_folder_is_exit_1(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = pyfast("demo", "--smoke", "--out", str(blocker / "out"))
    assert run.returncode == 1
    assert run.stderr.startswith("pyfast: error: --out") and "Traceback" not in run.stderr


def test_help_of_every_command():
    for command in ("demo", "train"):
        run = pyfast(command, "--help")
        assert run.returncode == 0 and "usage: pyfast " + command in run.stdout


def test_demo_smoke_run_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    run = pyfast("demo", "--smoke", "--out", str(out), "--seed", "1")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for task in ("classification", "segmentation", "anomaly", "synthesis"):
        assert task in run.stdout
    assert "images/s" in run.stdout and "epoch 1/1" in run.stderr   # table; epoch lines
    summary = json.loads((out / "summary.json").read_text())
    assert [r["task"] for r in summary["results"]] == ["classification", "segmentation",
                                                       "anomaly", "synthesis"]
    for r in summary["results"]:
        assert r["seconds"] > 0 and r["images_per_s"] > 0 and r["met"] is None
        assert np.isfinite(r["value"]) or r["task"] == "anomaly"
    w, h, colour, pixels = read_png(out / "dcgan_samples.png")
    assert colour == 0 and w == h and pixels.std() > 0
    w, h, colour, _ = read_png(out / "segmentation_overlays.png")
    assert colour == 2 and w > h
    assert (out / "anomaly_examples.png").exists() and (out / "summary.md").exists()
    assert not list(out.glob(".*.tmp"))   # atomic writes left no temporary files


def test_demo_is_deterministic_per_seed(tmp_path):
    values = []
    for name in ("a", "b"):
        run = pyfast("demo", "--smoke", "--tasks", "segmentation", "--out", str(tmp_path / name),
                     "--seed", "3", "--threads", "1")
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        values.append(summary["results"][0]["history"])
    assert values[0]["loss"] == values[1]["loss"]


def test_train_runs_and_writes_results(tmp_path):
    out = tmp_path / "run"
    run = pyfast("train", "autoencoder", "--data", "breast-cancer", "--epochs", "2",
                 "--normal-class", "1", "--noise", "0.1", "--out", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    assert "anomaly_auroc" in run.stdout and "wrote" in run.stdout
    history = json.loads((out / "history.json").read_text())
    assert len(history["history"]["loss"]) == 2
    assert 0.0 <= history["final"]["anomaly_auroc"] <= 1.0
    assert (out / "model.safetensors").exists()


def test_train_a_gan_on_a_medmnist_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, train_images=rng.integers(0, 255, (24, 12, 12), dtype=np.uint8),
             train_labels=rng.integers(0, 3, (24, 1)),
             val_images=rng.integers(0, 255, (8, 12, 12), dtype=np.uint8),
             val_labels=rng.integers(0, 3, (8, 1)))
    out = tmp_path / "gan"
    run = pyfast("train", "dcgan", "--data", str(path), "--epochs", "1", "--width", "4",
                 "--batch-size", "8", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "zero-padded from 12x12 to 16x16" in run.stdout
    w, h, _, _ = read_png(out / "samples.png")
    assert w == h > 16
