"`gynlab train` and `gynlab predict` through the installed console script (.venv/bin/gynlab)."
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def gynlab(*args, cwd):
    exe = Path(sys.executable).with_name("gynlab")
    cmd = ([str(exe)] if exe.exists()
           else [sys.executable, "-c", "import sys; from gynlab.cli import main; sys.exit(main())"])
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "One tiny training run on the phantom Pap-smear cells (1 epoch, 32 px)."
    d = tmp_path_factory.mktemp("cli")
    p = gynlab("train", "--dataset", "phantom-cytology", "--model", "smallcnn", "--epochs", 1, "--image-size", 32,
               "--subset", 48, "--batch-size", 16, "--out", "runs/cyto", "--quiet", cwd=d)
    assert p.returncode == 0, p.stderr
    return d, d / "runs" / "cyto", p


def test_train_writes_a_complete_run(run):
    d, r, p = run
    assert {"model.safetensors", "config.json", "metrics.json"} <= {f.name for f in r.iterdir()}
    cfg = json.loads((r / "config.json").read_text())
    assert cfg["dataset"] == "phantom-cytology" and cfg["model"] == "smallcnn" and cfg["image_size"] == 32
    assert cfg["classes"] == ["superficial", "intermediate", "parabasal", "lsil", "hsil"] and cfg["channels"] == 3
    assert len(cfg["mean"]) == len(cfg["std"]) == 3 and cfg["seed"] == 0 and "torch" in cfg["versions"]
    text = (r / "metrics.json").read_text()
    assert "NaN" not in text                                  # strict JSON for other tools
    m = json.loads(text)
    assert [h["epoch"] for h in m["history"]] == [1] and m["best_epoch"] == 1
    assert {"loss", "accuracy", "balanced_accuracy", "auc", "confusion_matrix"} <= set(m["final"])
    assert sum(map(sum, m["final"]["confusion_matrix"])) == cfg["n_valid"]
    assert m["final"]["loss"] == pytest.approx(m["history"][-1]["valid_loss"], abs=1e-5)
    assert "best epoch 1" in p.stdout


def _write_images(folder: Path):
    "PNG/JPG/BMP/TIF of different sizes and modes, a subfolder, and a non-image file."
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / "rgb_40x30.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), "L").save(folder / "grey_64.png")
    Image.fromarray(rng.integers(0, 255, (20, 50, 4), dtype=np.uint8), "RGBA").save(folder / "rgba_20x50.png")
    Image.fromarray(rng.integers(0, 255, (33, 33, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 255, (100, 80, 3), dtype=np.uint8)).save(folder / "photo.JPG")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / "small.bmp")
    Image.fromarray(rng.integers(0, 65535, (24, 24), dtype=np.uint16)).save(folder / "sixteen_bit.tif")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "sub" / "deep.png")
    (folder / "notes.txt").write_text("not an image")
    return ["grey_64.png", "palette.png", "photo.JPG", "rgb_40x30.png", "rgba_20x50.png", "sixteen_bit.tif",
            "small.bmp"]


def _rows(path):
    with open(path, newline="") as fh: return list(csv.DictReader(fh))


def test_predict_folder_of_mixed_images(run, tmp_path):
    d, r, _ = run
    names = _write_images(tmp_path / "imgs")
    p = gynlab("predict", "--run", r, "--input", tmp_path / "imgs", "--out", tmp_path / "preds.csv", cwd=d)
    assert p.returncode == 0, p.stderr
    assert "ignored 1 file" in p.stderr                          # notes.txt is named, not silently dropped
    classes = json.loads((r / "config.json").read_text())["classes"]
    rows = _rows(tmp_path / "preds.csv")
    assert [row["file"] for row in rows] == sorted(names)        # not recursive by default
    assert list(rows[0]) == ["file", "prediction"] + [f"prob_{c}" for c in classes]
    for row in rows:
        probs = [float(row[f"prob_{c}"]) for c in classes]
        assert math.isclose(sum(probs), 1, abs_tol=1e-4) and row["prediction"] == classes[int(np.argmax(probs))]
    # the CSV agrees with the Python API (same preprocessing as in training)
    from gynlab.runs import load_run
    from gynlab.train import predict
    from gynlab.transforms import preprocess
    net, cfg = load_run(r)
    x = preprocess(Image.open(tmp_path / "imgs" / "rgb_40x30.png"), cfg["image_size"], cfg["channels"],
                   cfg["mean"], cfg["std"])
    want = predict(net, x[None])[0]
    got = [float(rows[3][f"prob_{c}"]) for c in classes]
    np.testing.assert_allclose(got, want, atol=2e-6)
    p = gynlab("predict", "--run", r, "--input", tmp_path / "imgs", "--out", tmp_path / "rec.csv", "--recursive", cwd=d)
    assert p.returncode == 0 and "sub/deep.png" in [row["file"] for row in _rows(tmp_path / "rec.csv")]


def test_corrupt_image_stops_cleanly_or_is_skipped(run, tmp_path):
    d, r, _ = run
    names = _write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "preds.csv"
    p = gynlab("predict", "--run", r, "--input", tmp_path / "imgs", "--out", out, cwd=d)
    assert p.returncode == 2 and "broken.png" in p.stderr and "Traceback" not in p.stderr
    # no half-written CSV
    assert not out.exists() and not [f for f in tmp_path.iterdir() if f.name.startswith(".preds")]
    p = gynlab("predict", "--run", r, "--input", tmp_path / "imgs", "--out", out, "--skip-bad", cwd=d)
    assert p.returncode == 0, p.stderr
    assert "skipped" in p.stderr and "broken.png" in p.stderr
    assert [row["file"] for row in _rows(out)] == sorted(names)


def test_clear_errors(run, tmp_path):
    d, r, _ = run
    (tmp_path / "empty").mkdir()
    cases = [(["predict", "--run", r, "--input", tmp_path / "empty", "--out", tmp_path / "x.csv"], "no images"),
             (["predict", "--run", tmp_path / "no_run", "--input", tmp_path / "empty", "--out", tmp_path / "x.csv"],
              "no_run"),
             (["predict", "--run", r, "--input", tmp_path / "nowhere", "--out", tmp_path / "x.csv"], "nowhere"),
             (["train", "--dataset", "no-such-set", "--out", tmp_path / "r"], "no-such-set"),
             (["train", "--dataset", "phantom-cine", "--out", tmp_path / "r", "--epochs", "1"], "classification")]
    for args, words in cases:
        p = gynlab(*args, cwd=d)
        assert p.returncode == 2, (args, p.stderr)
        assert words in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(not (DATA / "mmotu_otu2d").is_dir(),
                    reason="real MMOTU data not present (../shared/data/mmotu_otu2d)")
def test_mmotu_efficientnet_subset(tmp_path):
    p = gynlab("train", "--dataset", "mmotu", "--model", "efficientnet_lite0", "--subset", 32, "--epochs", 1,
               "--image-size", 64, "--out", "runs/mm", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((tmp_path / "runs/mm/config.json").read_text())
    assert len(cfg["classes"]) == 8 and cfg["n_train"] == 32 and cfg["model"] == "efficientnet_lite0"
    m = json.loads((tmp_path / "runs/mm/metrics.json").read_text())
    assert sum(map(sum, m["final"]["confusion_matrix"])) == cfg["n_valid"]
    imgs = tmp_path / "imgs"; imgs.mkdir()
    for f in sorted((DATA / "mmotu_otu2d" / "images").iterdir())[:3]: (imgs / f.name).write_bytes(f.read_bytes())
    p = gynlab("predict", "--run", "runs/mm", "--input", imgs, "--out", "p.csv", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert len(_rows(tmp_path / "p.csv")) == 3


def test_segment_train_and_predict_masks_line_up(tmp_path):
    "`gynlab train --task segment` then `gynlab predict` writes one mask per image, same size and orientation."
    p = gynlab("train", "--task", "segment", "--dataset", "phantom-uterus-mri", "--epochs", 1, "--image-size", 32,
               "--subset", 40, "--batch-size", 8, "--out", "runs/seg", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((tmp_path / "runs/seg/config.json").read_text())
    assert cfg["task"] == "segment" and cfg["dataset"] == "phantom-uterus-mri"
    src = tmp_path / "in"; src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((50, 80)) * 255).astype("uint8")).save(src / "wide.png")
    Image.fromarray((rng.random((70, 40, 3)) * 255).astype("uint8")).save(src / "tall.jpg")
    p = gynlab("predict", "--run", "runs/seg", "--input", "in", "--out", "masks", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for name, size in [("wide", (80, 50)), ("tall", (40, 70))]:
        m = Image.open(tmp_path / "masks" / f"{name}.png")
        assert m.size == size and m.mode == "L"
        assert set(np.unique(np.asarray(m))) <= set(range(len(cfg["classes"])))
    (src / "broken.png").write_bytes(b"not a png")
    p = gynlab("predict", "--run", "runs/seg", "--input", "in", "--out", "masks2", cwd=tmp_path)
    assert p.returncode == 2 and "broken.png" in p.stderr and not (tmp_path / "masks2").exists()
    p = gynlab("explain", "--run", "runs/seg", "--image", src / "wide.png", "--out", "ov.png", cwd=tmp_path)
    assert p.returncode == 2 and "segment run" in p.stderr and "Traceback" not in p.stderr


def test_explain_writes_overlay_and_rejects_bad_input(run):
    "`gynlab explain` on a trained run: an overlay PNG at the model's input size; bad class and corrupt image named."
    d, r, _ = run
    img = d / "cell.png"
    Image.fromarray((np.random.default_rng(1).random((45, 70, 3)) * 255).astype("uint8")).save(img)
    outs = {}
    for method in ("gradcam", "saliency"):
        p = gynlab("explain", "--run", r, "--image", img, "--method", method, "--out", d / f"ex_{method}.png", cwd=d)
        assert p.returncode == 0, p.stderr
        assert "prediction:" in p.stdout and method in p.stdout
        outs[method] = np.asarray(Image.open(d / f"ex_{method}.png"))
        assert outs[method].shape == (32, 32, 3)
    assert not np.array_equal(outs["gradcam"], outs["saliency"])   # the method changes the overlay
    p = gynlab("explain", "--run", r, "--image", img, "--target", "no-such-class", "--out", d / "x.png", cwd=d)
    assert p.returncode == 2 and "no-such-class" in p.stderr and not (d / "x.png").exists()
    (d / "bad.png").write_bytes(b"garbage")
    p = gynlab("explain", "--run", r, "--image", d / "bad.png", "--out", d / "y.png", cwd=d)
    assert p.returncode == 2 and "bad.png" in p.stderr and "Traceback" not in p.stderr and not (d / "y.png").exists()


def test_cross_validation_fold_run(tmp_path):
    """`--fold I/K` trains on the training split less fold I and validates on fold I: recorded in config.json, and
    what reads a run's validation data later (calibration, the explorer) reads the same fold."""
    from gynlab.tasks import run_splits
    p = gynlab("train", "--dataset", "phantom-cytology", "--model", "smallcnn", "--epochs", 1, "--image-size", 32,
               "--fold", "2/4", "--out", "fold", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((tmp_path / "fold" / "config.json").read_text())
    assert cfg["fold"] == [2, 4] and cfg["validation_split"] == "train fold 2/4"
    whole, valid, _ = run_splits("phantom-cytology", image_size=32, seed=cfg["seed"])
    rest, held, _ = run_splits("phantom-cytology", image_size=32, seed=cfg["seed"], fold=cfg["fold"])
    assert (cfg["n_train"], cfg["n_valid"]) == (len(rest), len(held)) and len(rest) + len(held) == len(whole)
    assert len(whole) / 4 - 5 <= len(held) <= len(whole) / 4 + 5
    assert len(valid) != len(held)                            # (so the check below tells the two apart)
    from gynlab.cad import CADPipeline
    summary = CADPipeline.from_run(tmp_path / "fold").calibrate(mc=2, n_resamples=20)
    assert summary["n_validation"] == len(held)


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_refresh_bn_saves_the_statistics_of_the_final_weights(task, tmp_path):
    """`--refresh-bn`: the saved BatchNorm statistics are those of the final weights over the training images (so
    refreshing again changes nothing), and the run says so; without it they are the running averages, which differ."""
    from test_cli_bad_input import gynlab as run_cli
    from gynlab.runs import load_run
    from gynlab.segment import segmentation_data
    from gynlab.tasks import refresh_batchnorm, run_splits
    from gynlab.transforms import to_torch
    if task == "classify":
        args = ["--dataset", "phantom-cytology", "--model", "efficientnet_lite0", "--no-pretrained"]
        train = run_splits("phantom-cytology", image_size=32, subset=24)[0]
        target, ch = "label", 3
    else:
        args = ["--task", "segment", "--dataset", "phantom-uterus-mri", "--model", "lite0_unet", "--no-pretrained"]
        train = segmentation_data("phantom-uterus-mri", image_size=32, subset=24)[0]
        target, ch = "mask", 1
    stats = {}
    for flag in ("--refresh-bn", "--no-refresh-bn"):
        out = tmp_path / flag
        code, _, err = run_cli("train", *args, "--epochs", 1, "--image-size", 32, "--subset", 24, "--quiet", flag,
                               "--out", out)
        assert code == 0, err
        net, cfg = load_run(out)
        assert cfg["refresh_bn"] is (flag == "--refresh-bn")
        saved = [b.clone() for n, b in net.named_buffers() if n.endswith("running_mean")]
        refresh_batchnorm(net, to_torch(train, 32, ch, target, mean=cfg["mean"], std=cfg["std"]))
        again = [b for n, b in net.named_buffers() if n.endswith("running_mean")]
        stats[flag] = max((a - b).abs().max().item() for a, b in zip(saved, again))
    assert stats["--refresh-bn"] < 1e-4 < stats["--no-refresh-bn"], stats
