"Tests of gynlab.train.fit on tiny synthetic data: determinism, exact resume, checkpoints, metrics, pluggable loss."
import json
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset, Dataset

from gynlab.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from gynlab.core import RunError, UsageError, get_device
from gynlab.history import History
from gynlab.train import (Callback, balanced_class_weights, classification_metrics, evaluate, fit, macro_auc,
                          predict)


def blobs(n=96, k=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, d, generator=g) + 2.0 * nn.functional.one_hot(y, d).float()
    return TensorDataset(x, y)


def net(seed=0, d=8, k=3, dropout=0.3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, k))


class Augmented(Dataset):
    "A dataset whose augmentation has its own generator (the gynlab.transforms convention)."
    class Noise:
        def __init__(self): self.R = torch.Generator().manual_seed(0)
        def set_random_state(self, seed): self.R.manual_seed(int(seed)); return self
        def __call__(self, x): return x + 0.1 * torch.randn(x.shape, generator=self.R)
    def __init__(self, base): self.base, self.augment = base, self.Noise()
    def __len__(self): return len(self.base)
    def __getitem__(self, i):
        x, y = self.base[i]
        return self.augment(x), y


def strip(h):
    "The records without timings, as JSON (so that NaN metrics compare equal)."
    return json.dumps([{k: v for k, v in r.items() if k != "time_s"} for r in h.records])


def weights(m):
    return [p.detach().clone() for p in m.state_dict().values()]


KW = dict(epochs=4, lr=0.05, batch_size=16, seed=3, progress=False)


def test_seeded_runs_are_identical_and_seeds_matter():
    tr, va = Augmented(blobs()), blobs(48, seed=1)
    h1, m1 = fit(a := net(), tr, va, **KW), a
    h2, m2 = fit(b := net(), tr, va, **KW), b
    assert strip(h1) == strip(h2)
    assert all(torch.equal(p, q) for p, q in zip(weights(m1), weights(m2)))
    h3 = fit(net(), tr, va, **{**KW, "seed": 4})
    assert strip(h3) != strip(h1)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_exact_resume_is_bitwise(tmp_path, optimizer):
    "same seed + interrupted + resumed == uninterrupted, bitwise on CPU (dropout, augmentation, shuffling, Adam state)."
    tr, va = Augmented(blobs()), blobs(48, seed=1)
    full = net(); h_full = fit(full, tr, va, optimizer=optimizer, **KW)

    class Crash(Callback):
        order = 95
        def after_epoch(self, t):
            if t.epoch == 2: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(net(), tr, va, optimizer=optimizer, checkpoint_dir=tmp_path, callbacks=[Crash()], **KW)
    assert (tmp_path / "last.safetensors").is_file()
    assert read_checkpoint(tmp_path / "last.safetensors")[1]["epoch"] == 2
    torch.rand(7); np.random.rand(3)  # the new process's generators are somewhere else entirely
    res = net(seed=99)                 # even different initial weights: the checkpoint overrides them
    h_res = fit(res, tr, va, optimizer=optimizer, checkpoint_dir=tmp_path, resume=True, **KW)
    assert [r["epoch"] for r in h_res.records] == [1, 2, 3, 4]
    assert strip(h_res) == strip(h_full)
    assert all(torch.equal(p, q) for p, q in zip(weights(res), weights(full)))


def test_resume_with_workers(tmp_path):
    tr, va = Augmented(blobs(64)), blobs(32, seed=1)
    kw = {**KW, "epochs": 3, "num_workers": 2}
    full = net(); h_full = fit(full, tr, va, **kw)
    fit(net(), tr, va, checkpoint_dir=tmp_path, **{**kw, "epochs": 1})   # "interrupted" after epoch 1
    res = net(); h_res = fit(res, tr, va, checkpoint_dir=tmp_path, resume=True, **kw)
    assert strip(h_res) == strip(h_full)
    assert all(torch.equal(p, q) for p, q in zip(weights(res), weights(full)))


def test_resume_path_errors(tmp_path):
    with pytest.raises(UsageError, match="checkpoint_dir"):
        fit(net(), blobs(), resume=True, **KW)
    with pytest.raises(RunError, match="nothing.safetensors"):
        fit(net(), blobs(), resume=tmp_path / "nothing.safetensors", **KW)
    with pytest.raises(RunError, match="no checkpoint"):               # nothing to resume: an error, not a fresh start
        fit(net(), blobs(), checkpoint_dir=tmp_path, resume=True, **KW)
    assert not any(tmp_path.iterdir())


def test_checkpoint_has_no_pickle_and_holds_everything(tmp_path):
    m = net(); opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(4, 8)).sum().backward(); opt.step()
    h = History([{"epoch": 1, "valid_loss": 0.5}])
    p = save_checkpoint(tmp_path / "c.safetensors", m, opt, epoch=1, history=h.to_dict())
    raw = p.read_bytes()
    assert b"\x80\x04" not in raw[:16] and raw[8:9] == b"{"  # safetensors: u64 header length, then JSON
    tensors, meta = read_checkpoint(p)
    assert {"model.0.weight", "optim.0.0.exp_avg", "optim.0.0.exp_avg_sq", "rng.0.torch", "rng.0.numpy",
            "rng.0.python"} <= set(tensors)
    assert meta["epoch"] == 1 and meta["history"]["records"] == h.records and "param_groups" in meta["optimizers"]["0"]
    m2 = net(seed=5); opt2 = torch.optim.AdamW(m2.parameters())
    load_checkpoint(p, m2, opt2)
    assert all(torch.equal(a, b) for a, b in zip(weights(m), weights(m2)))
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg_sq"], opt.state_dict()["state"][0]["exp_avg_sq"])


def test_metrics_against_sklearn_and_the_always_benign_model():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score, confusion_matrix
    y = torch.tensor([0] * 95 + [1] * 5)
    m = classification_metrics(torch.tensor([[2.0, -2.0]]).repeat(100, 1), y)
    assert m["accuracy"] == pytest.approx(0.95) and m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["confusion_matrix"] == [[95, 0], [5, 0]]
    rng = np.random.default_rng(0)
    yy, logits = rng.integers(0, 4, 80), rng.normal(size=(80, 4))
    m = classification_metrics(torch.tensor(logits), torch.tensor(yy))
    p = torch.softmax(torch.tensor(logits).float(), 1).numpy()
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(yy, p.argmax(1)))
    assert m["auc"] == pytest.approx(roc_auc_score(yy, p, multi_class="ovr"), abs=1e-6)
    assert m["confusion_matrix"] == confusion_matrix(yy, p.argmax(1)).tolist()
    assert np.isnan(macro_auc(np.zeros(5, int), np.full((5, 2), 0.5)))


def test_class_weights_match_sklearn_and_change_training():
    from sklearn.utils.class_weight import compute_class_weight
    y = torch.tensor([0] * 30 + [1] * 6 + [2] * 3)
    np.testing.assert_allclose(balanced_class_weights(y),
                               compute_class_weight("balanced", classes=np.arange(3), y=y.numpy()), rtol=1e-6)
    assert balanced_class_weights(torch.tensor([0, 0, 2]), 4).tolist()[1::2] == [0.0, 0.0]
    x = torch.randn(39, 8); ds = TensorDataset(x, y)
    h0 = fit(net(), ds, ds, **KW); h1 = fit(net(), ds, ds, class_weights="balanced", **KW)
    assert h0["train_loss"] != h1["train_loss"]
    with pytest.raises(UsageError, match="class_weights"):
        fit(net(), ds, class_weights="inverse", **KW)


def test_early_stopping_and_restore_best():
    tr, va = blobs(), blobs(48, seed=1)
    calls = []
    class Count(Callback):
        def after_epoch(self, t): calls.append(len(t.history))
    h = fit(net(), tr, va, monitor="accuracy", early_stopping=1, callbacks=[Count()], **{**KW, "epochs": 30, "lr": 0.5})
    assert h.stopped_early and len(h) < 30 and h.epochs_since_best() == 1 and calls == list(range(1, len(h) + 1))
    m = net()
    h = fit(m, tr, va, early_stopping=2, restore_best=True, **{**KW, "epochs": 30, "lr": 0.5})
    assert evaluate(m, va)["loss"] == pytest.approx(h.best["valid_loss"], abs=1e-6)
    with pytest.raises(UsageError, match="no_such_metric"):
        fit(net(), tr, va, monitor="no_such_metric", **KW)


def test_callback_can_stop_and_sees_every_event_in_order():
    seen = []
    class Spy:                                   # any object with event methods is a callback
        def before_fit(self, t): seen.append("before_fit")
        def before_epoch(self, t): seen.append(f"before_epoch {t.epoch}")
        def after_batch(self, t): seen.append("batch")
        def after_train(self, t): seen.append(f"after_train {sorted(t.record)}")
        def after_epoch(self, t):
            seen.append(f"after_epoch {t.epoch}"); t.stop = t.epoch == 2
        def after_fit(self, t): seen.append("after_fit")
    h = fit(net(), blobs(32), callbacks=[Spy()], **{**KW, "batch_size": 16})
    assert len(h) == 2 and not h.stopped_early
    assert seen == ["before_fit", "before_epoch 1", "batch", "batch", "after_train ['epoch', 'train_loss']",
                    "after_epoch 1", "before_epoch 2", "batch", "batch", "after_train ['epoch', 'train_loss']",
                    "after_epoch 2", "after_fit"]


def test_one_cycle_schedule_and_resume_keeps_it(tmp_path):
    "OneCycle: warm-up to the group's lr, then down to lr/div_final; a resumed run follows the same schedule."
    lrs = []
    class Lr(Callback):
        order = 60
        def before_batch(self, t): lrs.append(t.opt.param_groups[0]["lr"])
    tr = blobs()
    fit(net(), tr, schedule="onecycle", callbacks=[Lr()], **{**KW, "lr": 0.1})
    peak = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(0.1 / 25) and max(lrs) == pytest.approx(0.1, rel=0.05)
    assert 0 < peak < len(lrs) - 1 and lrs[-1] < 0.1 / 100 and np.all(np.diff(lrs[peak:]) <= 1e-12)
    full = net(); h_full = fit(full, tr, schedule="onecycle", **KW)
    class Crash(Callback):
        order = 95
        def after_epoch(self, t):
            if t.epoch == 2: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(net(), tr, schedule="onecycle", checkpoint_dir=tmp_path, callbacks=[Crash()], **KW)
    res = net(); h_res = fit(res, tr, schedule="onecycle", checkpoint_dir=tmp_path, resume=True, **KW)
    assert strip(h_res) == strip(h_full)


def test_custom_step_and_two_optimizers_return_a_history(tmp_path):
    "A GAN-like model: its own train_step and configure_optimizers; fit records every loss it returns."
    class TwoPart(nn.Module):
        def __init__(self):
            super().__init__(); torch.manual_seed(0); self.a, self.b = nn.Linear(8, 1), nn.Linear(8, 1)
        def configure_optimizers(self, lr):
            return {"a": torch.optim.SGD(self.a.parameters(), lr=lr), "b": torch.optim.Adam(self.b.parameters(), lr=lr)}
        def train_step(self, t, batch):
            x, _ = t.to_device(batch)
            la = self.a(x).pow(2).mean(); t.opt["a"].zero_grad(); la.backward(); t.opt["a"].step()
            lb = (self.b(x) - 1).pow(2).mean(); t.opt["b"].zero_grad(); lb.backward(); t.opt["b"].step()
            return {"a": la, "b": lb}
    m = TwoPart()
    h = fit(m, blobs(), metrics=None, checkpoint_dir=tmp_path, **{**KW, "lr": 0.05})
    assert isinstance(h, History) and {"train_a", "train_b"} <= set(h.last) and "train_loss" not in h.last
    assert h["train_a"][-1] < h["train_a"][0] and h["train_b"][-1] < h["train_b"][0]
    tensors, meta = read_checkpoint(tmp_path / "last.safetensors")
    assert set(meta["optimizers"]) == {"a", "b"} and any(k.startswith("optim.b.") for k in tensors)


def test_pluggable_loss_metrics_and_dense_targets():
    "A segmentation-like task: per-pixel targets (N,H,W), own loss and metric; 'auto' metrics then stay off."
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 8, 8, generator=g)
    y = (x[:, 0] > 0.5).long()
    seg = nn.Conv2d(1, 2, 3, padding=1)
    def pixel_acc(out, tgt): return {"pixel_accuracy": (out.argmax(1) == tgt).float().mean().item()}
    h = fit(seg, TensorDataset(x, y), TensorDataset(x, y), loss=nn.CrossEntropyLoss(), metrics=pixel_acc,
            monitor="pixel_accuracy", **{**KW, "epochs": 6, "lr": 0.5})
    assert "accuracy" not in h.last and h.mode == "max" and h.best["pixel_accuracy"] > 0.8
    h2 = fit(nn.Conv2d(1, 2, 3, padding=1), TensorDataset(x, y), TensorDataset(x, y), loss=nn.CrossEntropyLoss(), **KW)
    assert set(h2.last) == {"epoch", "train_loss", "valid_loss", "lr", "time_s"}


def test_predict_evaluate_and_history_plot():
    tr, va = blobs(), blobs(48, seed=1)
    m = net(); h = fit(m, tr, va, **KW)
    p = predict(m, va)
    assert p.shape == (48, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.array_equal(predict(m, va.tensors[0]), p) and np.array_equal(predict(m, va.tensors[0].numpy()), p)
    e = evaluate(m, va)
    assert e["accuracy"] == pytest.approx((p.argmax(1) == va.tensors[1].numpy()).mean())
    assert e["loss"] == pytest.approx(h.last["valid_loss"], abs=1e-6)
    fig = h.plot()
    assert {t.name for t in fig.data} >= {"train_loss", "valid_loss", "accuracy", "auc"}
    json.dumps(h.to_dict())  # JSON-able (confusion matrices are lists)


def test_device_argument_is_respected():
    m = net()
    fit(m, blobs(), device="cpu", **{**KW, "epochs": 1})
    assert next(m.parameters()).device.type == "cpu"
    assert get_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="unknown device"):
        fit(net(), blobs(), device="no-such-device", **KW)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"): fit(net(), blobs(), device="cuda", **KW)


@pytest.mark.parametrize("kw, msg", [({"epochs": 0}, "epochs"), ({"lr": float("nan")}, "lr"),
                                     ({"batch_size": 0}, "batch_size"), ({"early_stopping": 0}, "early_stopping"),
                                     ({"mode": "up"}, "mode")])
def test_bad_arguments_are_refused_before_training(kw, msg):
    with pytest.raises(UsageError, match=msg): fit(net(), blobs(), **{**KW, **kw})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_on_cuda():
    m = net(); h = fit(m, blobs(), blobs(48, seed=1), device="cuda", **KW)
    assert next(m.parameters()).is_cuda and h.best_epoch is not None
    assert predict(m, blobs(48, seed=1), device="cuda").shape == (48, 3)


def test_bad_batches_and_optimizer_names():
    class Bad(Dataset):
        def __len__(self): return 4
        def __getitem__(self, i): return torch.zeros(8)
    with pytest.raises(TypeError, match="input, target"):
        fit(net(), Bad(), **KW)
    with pytest.raises(UsageError, match="unknown optimizer"):
        fit(net(), blobs(), optimizer="lbfgsx", **KW)


def test_confusion_and_top_loss_helpers():
    from gynlab.train import most_confused, plot_confusion_matrix, plot_top_losses, top_losses
    cm = [[5, 2, 0], [7, 1, 0], [0, 0, 3]]
    assert most_confused(cm, ["a", "b", "c"], k=2) == [("b", "a", 7), ("a", "b", 2)]
    assert most_confused(cm, k=5, min_count=3) == [(1, 0, 7)]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    top = top_losses(probs, [0, 0, 1], k=2)
    assert [r["index"] for r in top] == [1, 2] and top[0]["pred"] == 1 and abs(top[0]["loss"] + np.log(0.2)) < 1e-12
    fig = plot_confusion_matrix(cm, ["a", "b", "c"], normalize=True)
    assert fig.layout.width <= 900 and abs(fig.data[0].z[1][0] - 7 / 8) < 1e-12
    f2 = plot_top_losses([np.zeros((8, 8), np.uint8)] * 3, top, ["normal", "abnormal"])
    assert len(f2.data) == 2 and f2.layout.width <= 900 and "true normal" in f2.layout.annotations[0].text


def test_interrupt_is_one_line_and_names_the_checkpoint(tmp_path):
    "Ctrl-C in fit: a TrainingInterrupted (still a KeyboardInterrupt) whose notebook rendering is one line."
    from gynlab.train import TrainingInterrupted
    class Stop(Callback):
        order = 95
        def after_epoch(self, t):
            if t.epoch == 2: raise KeyboardInterrupt
    with pytest.raises(TrainingInterrupted) as e:
        fit(net(), blobs(), checkpoint_dir=tmp_path, callbacks=[Stop()], **KW)
    assert isinstance(e.value, KeyboardInterrupt)
    assert e.value._render_traceback_() == [str(e.value)]
    assert ("the checkpoint of epoch 2" in str(e.value) and str(tmp_path) in str(e.value)
            and "resume=True" in str(e.value))
    with pytest.raises(TrainingInterrupted, match="no checkpoint was written"):
        fit(net(), blobs(), callbacks=[Stop()], **KW)
