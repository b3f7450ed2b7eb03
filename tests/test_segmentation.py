"""U-Net and its losses (gynlab.models.unet); training a segmenter and masks for a folder (gynlab.segment): shapes,
learning, mask alignment with the input image, run folders, bad input."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")
import gynlab.segment as S
from gynlab.core import BadImageError, DataError, OutputError, RunError, UsageError
from gynlab.exercises.segmentation import check_soft_dice_loss, check_unet_output_size
from gynlab.models.unet import DiceCELoss, SoftDiceLoss, UNet
from gynlab.runs import load_run
from gynlab.segment import predict_masks, segment_image, segmentation_data, train_segmenter


@pytest.mark.parametrize("size,depth", [((64, 64), 4), ((50, 37), 4), ((17, 33), 3), ((8, 9), 1)])
def test_unet_any_size(size, depth):
    net = UNet(2, 3, base=4, depth=depth)
    x = torch.randn(2, 2, *size, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 3, *size)
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_unet_skip_connections_carry_detail():
    "Through the top skip connection an output pixel depends most on the input pixels right around it."
    torch.manual_seed(0)
    net = UNet(1, 1, base=4, depth=3).eval()
    x = torch.randn(1, 1, 32, 32, requires_grad=True)
    net(x)[0, 0, 10, 20].backward()
    g = x.grad[0, 0].abs()
    r, c = divmod(int(g.argmax()), 32)
    assert abs(r - 10) <= 3 and abs(c - 20) <= 3
    with pytest.raises(UsageError, match="depth"): UNet(1, 2, depth=0)


def test_soft_dice_loss():
    g = torch.zeros(2, 16, 16, dtype=torch.long); g[:, 4:8, 4:8] = 1; g[1, 10:12, 10:12] = 2
    perfect = F.one_hot(g, 3).permute(0, 3, 1, 2).float() * 30
    assert SoftDiceLoss()(perfect, g) < 1e-3
    logits = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    p, oh = logits.softmax(1), F.one_hot(g, 3).permute(0, 3, 1, 2).float()
    d = [(2 * (p[:, c] * oh[:, c]).sum() + 1) / (p[:, c].sum() + oh[:, c].sum() + 1) for c in range(3)]
    assert SoftDiceLoss()(logits, g) == pytest.approx(float(1 - (d[1] + d[2]) / 2), abs=1e-5)
    assert SoftDiceLoss(include_background=True)(logits, g) == pytest.approx(float(1 - sum(d) / 3), abs=1e-5)
    want = F.cross_entropy(logits, g) + SoftDiceLoss()(logits, g)
    assert DiceCELoss()(logits, g) == pytest.approx(float(want), abs=1e-5)
    assert DiceCELoss(ce_weight=0)(logits, g) == pytest.approx(float(SoftDiceLoss()(logits, g)), abs=1e-6)


def _squares(n=8, size=24, seed=0):
    "Noisy images with one bright square each, and its mask."
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size); y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = 2 + 2 * i, 20 - 2 * i
        x[i, 0, r : r + 6, c - 4 : c + 2] = 1; y[i, r : r + 6, c - 4 : c + 2] = 1
    return x + 0.1 * torch.randn(x.shape, generator=g), y


def test_unet_learns_a_toy_task():
    "A few steps of Dice+CE on bright squares bring Dice up: the model, loss and gradients are wired right."
    torch.manual_seed(0)
    x, y = _squares()
    net, loss_fn = UNet(1, 2, base=4, depth=2), DiceCELoss()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(40):
        loss = loss_fn(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
    from gynlab.metrics import segmentation_metrics
    net.eval()
    assert segmentation_metrics(net(x).detach(), y)["dice"] > 0.7


def test_unet_trains_with_fit():
    "The lesson's recipe: `fit` with DiceCELoss, segmentation metrics, Dice monitored and the best weights kept."
    from torch.utils.data import TensorDataset
    from gynlab.metrics import segmentation_metrics
    from gynlab.train import evaluate, fit
    torch.manual_seed(0)
    x, y = _squares()
    net = UNet(1, 2, base=4, depth=2)
    h = fit(net, TensorDataset(x, y), TensorDataset(x, y), epochs=15, lr=1e-2, batch_size=4, loss=DiceCELoss(),
            metrics=lambda o, t: segmentation_metrics(o, t), monitor="dice", restore_best=True, progress=False)
    assert h.monitor == "dice" and h.best["dice"] > 0.5 and h["train_loss"][-1] < h["train_loss"][0]
    again = evaluate(net, TensorDataset(x, y), loss=DiceCELoss(), metrics=lambda o, t: segmentation_metrics(o, t))
    assert again["dice"] == pytest.approx(h.best["dice"], abs=1e-6)


class Bright(torch.nn.Module):
    "A deterministic stand-in segmenter: foreground where the (normalised) image is bright."
    def forward(self, x):
        f = x.mean(1, keepdim=True)
        return torch.cat([-f, f], 1) * 10


CFG = {"task": "segment", "channels": 1, "classes": ["background", "lesion"], "image_size": 32, "mean": [0.5],
       "std": [0.5], "letterbox": True}


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setattr(S, "load_run", lambda run, device=None, task=None: (Bright(), dict(CFG)))


def corner_image(w, h, mode="L"):
    "Black image with a bright block in the top-right corner (a quarter of each side)."
    a = np.zeros((h, w), np.uint8); a[: h // 4, w - w // 4 :] = 255
    im = Image.fromarray(a)
    return im.convert(mode), a > 0


@pytest.mark.parametrize("w,h,mode", [(120, 60, "L"), (50, 140, "RGB"), (64, 64, "L")])
def test_predicted_mask_lines_up_with_image(tmp_path, standin, w, h, mode):
    im, truth = corner_image(w, h, mode)
    (tmp_path / "in").mkdir(); im.save(tmp_path / "in" / "case.png")
    paths, skipped = predict_masks("unused", tmp_path / "in", tmp_path / "out")
    assert [p.name for p in paths] == ["case.png"] and skipped == []
    with Image.open(paths[0]) as mk:
        assert mk.size == (w, h) and mk.mode == "L"
        m = np.asarray(mk)
    assert set(np.unique(m)) <= {0, 255}                       # binary → 0/255
    fg = m > 0
    assert (fg & truth).sum() / (fg.sum() + truth.sum()) * 2 > 0.85   # the block, where it is in the input
    ys, xs = np.nonzero(fg)
    assert ys.mean() < h / 4 and xs.mean() > w * 3 / 4           # top-right, not flipped or transposed


def test_multiclass_masks_are_indices(tmp_path, monkeypatch):
    class Three(torch.nn.Module):
        def forward(self, x):
            f = x.mean(1, keepdim=True)
            return torch.cat([-f, torch.zeros_like(f), f], 1) * 10
    cfg = {**CFG, "classes": ["background", "a", "b"]}
    monkeypatch.setattr(S, "load_run", lambda run, device=None, task=None: (Three(), cfg))
    im, truth = corner_image(40, 30)
    (tmp_path / "in").mkdir(); im.save(tmp_path / "in" / "x.jpg")
    with Image.open(predict_masks("r", tmp_path / "in", tmp_path / "out")[0][0]) as mk: m = np.asarray(mk)
    assert set(np.unique(m)) <= {0, 1, 2} and (m == 2).any()


def test_corrupt_file(tmp_path, standin):
    d = tmp_path / "in"; d.mkdir()
    corner_image(40, 30)[0].save(d / "a_good.png")
    (d / "b_bad.png").write_bytes(b"this is not a png")
    with pytest.raises(BadImageError, match="b_bad.png"):
        predict_masks("r", d, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())   # nothing half-written
    paths, skipped = predict_masks("r", d, tmp_path / "out", skip_bad=True)
    assert [p.name for p in paths] == ["a_good.png"] and [f.name for f, _ in skipped] == ["b_bad.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_good.png"]        # no temp files left


def test_empty_or_missing_folder_and_bad_out(tmp_path, standin):
    with pytest.raises(DataError, match="does not exist"): predict_masks("r", tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"): predict_masks("r", tmp_path / "empty", tmp_path / "out")
    corner_image(40, 30)[0].save(tmp_path / "empty" / "a.png")
    with pytest.raises(OutputError, match="input folder"): predict_masks("r", tmp_path / "empty", tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"): predict_masks("r", tmp_path / "empty", tmp_path / "file")


def test_train_segmenter_run_folder_roundtrip(tmp_path):
    run = tmp_path / "run"
    m = train_segmenter("phantom-uterus-mri", epochs=1, image_size=32, subset=12, batch_size=4, base=4, depth=2,
                        out=run, progress=False)
    assert {"dice", "iou", "hd95_px_median", "n_train", "n_valid"} <= set(m) and 0 <= m["dice"] <= 1
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["task"] == "segment" and cfg["dataset"] == "phantom-uterus-mri" and cfg["n_classes"] == 4
    assert cfg["classes"][3] == "fibroid" and cfg["channels"] == 1 and len(cfg["mean"]) == 1
    assert json.loads((run / "metrics.json").read_text())["dice"] == pytest.approx(m["dice"])
    net, cfg2 = load_run(run, task="segment")
    assert isinstance(net, UNet) and not net.training
    im = Image.fromarray((np.random.default_rng(0).random((45, 70)) * 255).astype(np.uint8))
    msk = segment_image(net, im, cfg2)
    assert msk.shape == (45, 70) and msk.max() < 4
    (tmp_path / "in").mkdir(); im.save(tmp_path / "in" / "q.tif")
    with Image.open(predict_masks(run, tmp_path / "in", tmp_path / "out")[0][0]) as mk:
        assert mk.size == (70, 45) and np.asarray(mk).max() < 4          # class indices, not 0/255
    with pytest.raises(RunError, match="not a classify run"): load_run(run, task="classify")
    (run / "model.safetensors").unlink()
    with pytest.raises(RunError, match="model.safetensors"): load_run(run, task="segment")


def test_tta_logits_follow_the_mirror():
    "Test-time augmentation averages the mirror back into place: mirroring the input mirrors the output."
    torch.manual_seed(0)
    net = UNet(1, 3, base=4, depth=2).eval()
    x = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        plain, tta = S.seg_logits(net, x), S.seg_logits(net, x, tta=True)
        assert not torch.allclose(S.seg_logits(net, x.flip(-1)), plain.flip(-1), atol=1e-4)   # the net alone is not
        torch.testing.assert_close(S.seg_logits(net, x.flip(-1), tta=True), tta.flip(-1))
        torch.testing.assert_close(tta, (plain + net(x.flip(-1)).flip(-1)) / 2)


def test_pretrained_encoder_unet_run(tmp_path):
    "A U-Net on the Lite0 encoder trains with augmentation into a run folder and loads back to the same network."
    from gynlab.models.encoder_unet import Lite0UNet
    run = tmp_path / "run"
    m = train_segmenter("phantom-uterus-mri", epochs=1, image_size=32, subset=8, batch_size=4, model="lite0_unet",
                        augment="ultrasound", weight_decay=0.01, out=run, progress=False)
    assert 0 <= m["dice"] <= 1
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["model"], cfg["augment"], cfg["weight_decay"], cfg["mean"]) == ("lite0_unet", "ultrasound", 0.01, [0.5])
    net, cfg2 = load_run(run, task="segment")
    assert isinstance(net, Lite0UNet)
    im = Image.fromarray((np.random.default_rng(1).random((40, 52)) * 255).astype(np.uint8))
    for tta in (False, True): assert segment_image(net, im, cfg2, tta=tta).shape == (40, 52)
    from test_cli_bad_input import gynlab           # the command line, in-process
    (tmp_path / "in").mkdir(); im.save(tmp_path / "in" / "a.png")
    code, out, err = gynlab("predict", "--run", run, "--input", tmp_path / "in", "--out", tmp_path / "masks", "--tta")
    assert code == 0, err
    with Image.open(tmp_path / "masks" / "a.png") as mk:
        assert mk.size == (52, 40)
        np.testing.assert_array_equal(np.asarray(mk), segment_image(net, im, cfg2, tta=True))   # 4 classes: indices
    with pytest.raises(UsageError, match="--augment"):
        train_segmenter("phantom-uterus-mri", model="lite0_unet", augment="speckle")
    with pytest.raises(UsageError, match="multiple of 32"):
        train_segmenter("phantom-uterus-mri", model="lite0_unet", image_size=48)


def test_segmenter_speed_flags_change_speed_only(tmp_path):
    """`--channels-last` and `--amp` reach a segmentation run and are recorded; channels-last gives the same training as
    the default layout; `--no-pretrained` starts the Lite0 encoder from random weights."""
    from test_cli_bad_input import gynlab
    from gynlab.models.encoder_unet import Lite0UNet
    args = ["train", "--task", "segment", "--dataset", "phantom-uterus-mri", "--model", "lite0_unet", "--epochs", 1,
            "--image-size", 32, "--subset", 8, "--batch-size", 4, "--quiet"]
    runs = {}
    for name, extra in {"plain": [], "cl": ["--channels-last"], "amp": ["--amp", "--no-pretrained"]}.items():
        code, out, err = gynlab(*args, *extra, "--out", tmp_path / name)
        assert code == 0, err
        runs[name] = (json.loads((tmp_path / name / "config.json").read_text()),
                      json.loads((tmp_path / name / "metrics.json").read_text()))
    flags = {k: tuple(runs[k][0][f] for f in ("channels_last", "amp", "pretrained")) for k in runs}
    assert flags == {"plain": (False, False, True), "cl": (True, False, True), "amp": (False, True, False)}
    loss = {k: runs[k][1]["history"][0]["train_loss"] for k in runs}
    assert loss["cl"] == pytest.approx(loss["plain"], rel=1e-3)
    ref = Lite0UNet(1, 4, pretrained=True).stem[0].weight                     # ImageNet's first filters
    moved = {k: (load_run(tmp_path / k, task="segment")[0].stem[0].weight - ref).abs().mean().item() for k in runs}
    assert moved["amp"] > 10 * max(moved["plain"], moved["cl"])               # random start vs two fine-tuning steps


def test_segmentation_fold_run(tmp_path):
    "`--fold 2/3` on a segmentation run: recorded, trained on the rest of the training split, scored on fold 2."
    from test_cli_bad_input import gynlab
    code, out, err = gynlab("train", "--task", "segment", "--dataset", "phantom-uterus-mri", "--epochs", 1,
                            "--image-size", 32, "--fold", "2/3", "--quiet", "--out", tmp_path / "f")
    assert code == 0, err
    cfg, m = (json.loads((tmp_path / "f" / n).read_text()) for n in ("config.json", "metrics.json"))
    train, _, _ = segmentation_data("phantom-uterus-mri", image_size=32)
    rest, held, _ = segmentation_data("phantom-uterus-mri", image_size=32, fold="2/3")
    assert cfg["fold"] == [2, 3] and (m["n_train"], m["n_valid"]) == (len(rest), len(held))
    assert m["n_train"] + m["n_valid"] == len(train) and 0 < m["n_valid"] < len(train) / 2


def test_train_segmenter_bad_arguments():
    with pytest.raises(UsageError, match="segmentation"): train_segmenter("phantom-cine", epochs=1)
    with pytest.raises(UsageError, match="unknown segmentation model"):
        train_segmenter("phantom-uterus-mri", model="segformer")
    with pytest.raises(UsageError, match="multiple of 16"): train_segmenter("phantom-uterus-mri", image_size=40)


def test_segmentation_data_phantom():
    tr, va, info = segmentation_data("phantom-uterus-mri", image_size=32, subset=8)
    assert len(tr) == len(va) == 8 and info["classes"] == ["background", "myometrium", "endometrium", "fibroid"]
    assert info["channels"] == 1 and info["target"] == "mask" and info["n_classes"] == 4


def test_checkers():
    def good(logits, target):
        p = logits.softmax(1); g = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
        d = (2 * (p * g).sum((0, 2, 3)) + 1) / ((p + g).sum((0, 2, 3)) + 1)
        return 1 - d[1:].mean()
    assert check_soft_dice_loss(good)
    assert not check_soft_dice_loss(lambda lo, t: torch.tensor(0.5))
    assert not check_soft_dice_loss(lambda lo, t: SoftDiceLoss(include_background=True)(lo, t))
    def size(s, d):
        for _ in range(d): s = (s - 4) // 2
        s -= 4
        for _ in range(d): s = 2 * s - 4
        return s
    assert check_unet_output_size(size)
    assert not check_unet_output_size(lambda s, d: s - 184)


DATA = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "mmotu_otu2d").is_dir() or not (DATA / "isbi2014_cervical_cytology").is_dir(),
                    reason="real MMOTU / ISBI 2014 data not present under ../shared/data")
def test_real_data_targets_and_splits():
    tr, va, info = segmentation_data("mmotu", image_size=32, subset=8, data_root=DATA)
    assert info["target"] == "lesion_mask" and info["classes"] == ["background", "lesion"] and info["channels"] == 3
    assert set(np.unique(np.asarray(tr[0]["lesion_mask"]))) <= {0, 1}
    tr, va, info = segmentation_data("mmotu", image_size=32, subset=8, target="mask", data_root=DATA)
    assert info["n_classes"] == 9
    tr, va, info = segmentation_data("isbi2014", image_size=32, data_root=DATA)  # one split: divided by group
    assert len(tr) + len(va) == 45 and len(va) > 0 and not set(tr["group"]) & set(va["group"]) and info["channels"] == 1
