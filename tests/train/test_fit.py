"""pf.train.fit / evaluate on a tiny model: history keys and exact epoch values, schedulers,
callbacks (EarlyStopping, Checkpoint), progress output, resuming bitwise, bad input."""

import io
import os

import numpy as np
import pytest

import pyfast as pf
from pyfast.train import Callback, Checkpoint, EarlyStopping

pytest.importorskip("safetensors")

xent = pf.nn.functional.cross_entropy


def blobs(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    shift = 1.5 * y[:, None] * np.array([1, -1, 0.5, 0])
    x = (rng.standard_normal((n, 4)) + shift).astype(np.float32)
    return x, y.astype(np.int64)


def build(seed=0, dropout=0.2, lr=0.05):
    pf.manual_seed(seed)
    model = pf.nn.Sequential(pf.nn.Linear(4, 16), pf.nn.ReLU(), pf.nn.Dropout(dropout),
                             pf.nn.Linear(16, 2))
    return model, pf.optim.Adam(model.parameters(), lr=lr)


def loaders(batch_size=16, shuffle=True, seed=None):
    x, y = blobs()
    train = pf.data.DataLoader(pf.data.ArrayDataset(x[:60], y[:60]), batch_size, shuffle=shuffle,
                               seed=seed)
    val = pf.data.DataLoader(pf.data.ArrayDataset(x[60:], y[60:]), 7)
    return train, val


def weights(model):
    return {k: np.array(v) for k, v in model.state_dict().items()}


def test_history_has_one_value_per_epoch_for_every_key():
    model, opt = build()
    train, val = loaders()
    h = pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=4, val_loader=val,
                     metrics=("accuracy", "auroc"), progress=False)
    assert set(h) == {"loss", "accuracy", "auroc", "val_loss", "val_accuracy", "val_auroc",
                      "lr", "time"}
    assert all(len(v) == 4 for v in h.values())
    for key in ("accuracy", "auroc", "val_accuracy", "val_auroc"):
        assert all(0.0 <= v <= 1.0 for v in h[key]), key
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] > 0.7
    assert all(t > 0 for t in h["time"]) and h["lr"] == [0.05] * 4
    # the last validation is the trained model evaluated in eval mode
    final = pf.train.evaluate(model, val, loss_fn=xent, metrics=("accuracy", "auroc"))
    assert final == {"loss": h["val_loss"][-1], "accuracy": h["val_accuracy"][-1],
                     "auroc": h["val_auroc"][-1]}


def test_epoch_values_are_exact_over_uneven_batches():
    """lr=0 freezes the model, so the epoch's loss and accuracy must equal those of the
    whole training set at once: batch means weighted by batch size, counts summed."""
    model, _ = build(dropout=0.0)
    opt = pf.optim.SGD(model.parameters(), lr=0.0)
    x, y = blobs()
    train = pf.data.DataLoader(pf.data.ArrayDataset(x, y), 32)      # 32, 32, 26
    h = pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=1, progress=False)
    with pf.no_grad():
        out = model(x)
        whole_loss = float(xent(out, y).item())
    assert h["loss"][0] == pytest.approx(whole_loss, rel=1e-6)
    assert h["accuracy"][0] == pytest.approx((out.data.argmax(1) == y).mean())


def test_evaluate_runs_in_eval_mode_without_grad_and_restores_the_mode():
    model, _ = build()
    seen = []

    def spy(out, y):
        seen.append((out.requires_grad, model.training))
        return xent(out, y)

    _, val = loaders()
    model.train()
    result = pf.train.evaluate(model, val, loss_fn=spy, metrics=["accuracy"])
    assert set(result) == {"loss", "accuracy"}
    assert seen and all(s == (False, False) for s in seen)
    assert model.training
    model.eval()
    pf.train.evaluate(model, val, loss_fn=xent, metrics=())
    assert not model.training


def test_epoch_scheduler_steps_per_epoch_and_one_cycle_per_batch():
    model, opt = build()
    train, _ = loaders()
    sched = pf.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    h = pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=5, scheduler=sched,
                     metrics=(), progress=False)
    np.testing.assert_allclose(h["lr"], [0.05, 0.05, 0.005, 0.005, 0.0005])
    model, opt = build()
    sched = pf.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=3,
                                             steps_per_epoch=len(train))
    pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=3, scheduler=sched,
                 metrics=(), progress=False)
    assert sched.last_epoch == 3 * len(train)


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    model, _ = build(dropout=0.0)
    opt = pf.optim.SGD(model.parameters(), lr=0.0)          # val_loss never improves
    train, val = loaders()
    stop = EarlyStopping(monitor="val_loss", patience=2)
    h = pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=10, val_loader=val,
                     callbacks=[stop], progress=False)
    assert len(h["loss"]) == 3 and stop.stopped_epoch == 3
    with pytest.raises(ValueError, match="val_dice"):
        pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=1, val_loader=val,
                     callbacks=[EarlyStopping(monitor="val_dice")], progress=False)
    with pytest.raises(ValueError, match="val_loader"):
        pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=1,
                     callbacks=[EarlyStopping()], progress=False)


def test_early_stopping_restores_best_weights():
    model, opt = build(lr=0.5)                # large steps: val_loss goes up and down
    train, val = loaders()
    stop = EarlyStopping(monitor="val_accuracy", patience=3, restore_best_weights=True)
    h = pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=8, val_loader=val,
                     callbacks=[stop], progress=False)
    assert stop.best == max(h["val_accuracy"])
    assert pf.train.evaluate(model, val, loss_fn=xent)["accuracy"] == stop.best


def test_checkpoint_keeps_the_best_epoch_by_the_monitored_value(tmp_path):
    model, opt = build(lr=0.3)
    train, val = loaders()
    ckpt = Checkpoint(tmp_path / "best.safetensors", monitor="val_loss")
    h = pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=6, val_loader=val,
                     callbacks=[ckpt], progress=False)
    best = pf.load(tmp_path / "best.safetensors")
    assert best["epoch"] == int(np.argmin(h["val_loss"])) + 1
    assert ckpt.best == min(h["val_loss"])
    twin, _ = build(seed=5)
    twin.load_state_dict(best["model"])
    assert pf.train.evaluate(twin, val, loss_fn=xent)["loss"] == min(h["val_loss"])
    last = pf.load(tmp_path / "best.last.safetensors")
    assert last["epoch"] == 6 and last["history"]["val_loss"] == h["val_loss"]
    assert sorted(os.listdir(tmp_path)) == ["best.last.safetensors", "best.safetensors"]


class Interrupt(Callback):
    def __init__(self, at):
        self.at = at

    def on_epoch_begin(self, run):
        if run.epoch == self.at:
            raise KeyboardInterrupt


def _resumable_run(tmp_path, epochs, callbacks, loader_seed, resume=None, seed=0):
    model, opt = build(seed=seed)
    sched = pf.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train, val = loaders(seed=loader_seed)
    stop = EarlyStopping(monitor="val_loss", patience=10)
    h = pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=epochs, val_loader=val,
                     scheduler=sched, callbacks=[Checkpoint(tmp_path / "run.st", monitor=None),
                                                 stop, *callbacks],
                     progress=False, resume=resume)
    return model, h, stop


@pytest.mark.parametrize("loader_seed", [None, 7], ids=["shuffle-from-pf-rng", "seeded-loader"])
def test_resumed_run_ends_bitwise_where_the_uninterrupted_one_does(tmp_path, loader_seed):
    """Dropout and shuffling (from pf's generator, or the loader's own seed and epoch), Adam
    state, a StepLR and an EarlyStopping counter all carry across the interruption."""
    full, h_full, stop_full = _resumable_run(tmp_path / "a", 5, [], loader_seed)
    with pytest.raises(KeyboardInterrupt):
        _resumable_run(tmp_path / "b", 5, [Interrupt(at=3)], loader_seed)
    assert pf.load(tmp_path / "b" / "run.last.st")["epoch"] == 3
    pf.manual_seed(999)            # the restarted process is in another state entirely
    resumed, h_res, stop_res = _resumable_run(tmp_path / "b", 5, [], loader_seed, seed=42,
                                              resume=tmp_path / "b" / "run.last.st")
    for k, v in weights(full).items():
        np.testing.assert_array_equal(weights(resumed)[k], v, err_msg=k)
    for key in h_full:
        if key != "time":
            assert h_res[key] == h_full[key], key
    assert (stop_res.best, stop_res.wait) == (stop_full.best, stop_full.wait)


def test_resume_rejects_files_that_are_not_checkpoints(tmp_path):
    model, opt = build()
    train, _ = loaders()
    pf.save({"w": np.ones(2)}, tmp_path / "w.st")
    with pytest.raises(ValueError, match="not a pyfast training checkpoint"):
        pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=1, progress=False,
                     resume=tmp_path / "w.st")


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    model, opt = build()
    train, val = loaders()
    pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=1, val_loader=val)
    assert capsys.readouterr().err == ""                 # not a terminal: quiet
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=2, val_loader=val)
    text = tty.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "samples/s" in text
    assert "val_accuracy" in text and "loss" in text and text.endswith("\n")
    tty.seek(0)
    tty.truncate()
    pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=1, progress=False)
    assert tty.getvalue() == ""

    class Stop(Callback):
        def on_batch_end(self, run, logs):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pf.train.fit(model, train, loss_fn=xent, optimizer=opt, epochs=1, callbacks=[Stop()])
    assert tty.getvalue().startswith("\repoch 1/1") and tty.getvalue().endswith("\n")


def test_bad_input():
    model, opt = build()
    train, _ = loaders()
    kw = dict(loss_fn=xent, optimizer=opt, epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        pf.train.fit(model, train, **dict(kw, epochs=-1))
    with pytest.raises(TypeError, match="loss_fn"):
        pf.train.fit(model, train, **dict(kw, loss_fn="mse"))
    with pytest.raises(TypeError, match="optimizer"):
        pf.train.fit(model, train, **dict(kw, optimizer=object()))
    with pytest.raises(TypeError, match="callbacks"):
        pf.train.fit(model, train, **dict(kw, callbacks=[print]))
    with pytest.raises(TypeError, match="pairs"):
        pf.train.fit(model, [np.ones((2, 4), np.float32)], **kw)
    with pytest.raises(ValueError, match="no batches"):
        pf.train.fit(model, [], **kw)
    with pytest.raises(ValueError, match="unknown metric"):
        pf.train.fit(model, train, **dict(kw, metrics=("f1",)))


def test_breast_cancer_end_to_end(tmp_path):
    """The whole path on real data: split, loader, fit with AUROC, checkpoint, evaluate."""
    pytest.importorskip("sklearn")
    pf.manual_seed(0)
    train, val = pf.data.datasets.breast_cancer().split((0.8, 0.2), seed=0, stratify=True)
    model = pf.nn.Sequential(pf.nn.Linear(30, 32), pf.nn.ReLU(), pf.nn.Linear(32, 2))
    opt = pf.optim.AdamW(model.parameters(), lr=1e-2)
    train_loader = pf.data.DataLoader(train, 32, shuffle=True)
    sched = pf.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, epochs=6,
                                             steps_per_epoch=len(train_loader))
    h = pf.train.fit(model, train_loader, loss_fn=xent, optimizer=opt, epochs=6,
                     val_loader=pf.data.DataLoader(val, 64), metrics=("accuracy", "auroc"),
                     scheduler=sched, callbacks=[Checkpoint(tmp_path / "bc.st")], progress=False)
    assert h["val_accuracy"][-1] > 0.9 and h["val_auroc"][-1] > 0.95
    best = pf.load(tmp_path / "bc.st")
    assert best["history"]["val_loss"][-1] == min(h["val_loss"])


def test_segmentation_metrics_through_fit():
    pf.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 6, 6)).astype(np.float32)
    masks = (x > 0.6).astype(np.float32)
    ds = pf.data.ArrayDataset(x, masks)
    model = pf.nn.Conv2d(1, 1, 1)              # learns a threshold: logit = w * x + b
    opt = pf.optim.Adam(model.parameters(), lr=0.1)
    h = pf.train.fit(model, pf.data.DataLoader(ds, 16, shuffle=True),
                     loss_fn=pf.nn.functional.binary_cross_entropy_with_logits, optimizer=opt,
                     epochs=15, val_loader=pf.data.DataLoader(ds, 64),
                     metrics=("dice", "iou", "accuracy"), progress=False)
    assert {"dice", "iou", "val_dice", "val_iou", "val_accuracy"} <= set(h)
    assert h["val_dice"][-1] > 0.9 and h["val_iou"][-1] > 0.8
    assert all(i <= d + 1e-12 for d, i in zip(h["val_dice"], h["val_iou"]))   # IoU <= Dice
    with pf.no_grad():
        logits = model(x).numpy()
    assert h["val_dice"][-1] == pytest.approx(pf.train.metrics.dice(logits, masks))
