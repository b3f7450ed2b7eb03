"""Bad input to the `gynlab` command, one row per kind: each ends with exit code 2 and a message that names the
problem, never a traceback, and changes nothing outside the intended output (inputs and run folders are hashed
before and after). Runs `gynlab.cli.main` in-process (fast); tests/test_train_cli.py runs the real console script."""
import hashlib
import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gynlab.cli import main


def gynlab(*argv):
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try: code = main([str(a) for a in argv])
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()


def tree(folder: Path) -> dict:
    "Every path under `folder` with its kind and content hash (what 'nothing changed' means)."
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink(): out[rel] = "link:" + os.readlink(p)
        elif p.is_fifo(): out[rel] = "fifo"
        elif p.is_file(): out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else: out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "A trained run, a folder of images, and the odd things a hostile user points commands at."
    w = tmp_path_factory.mktemp("bad")
    code, _, err = gynlab("train", "--dataset", "phantom-cytology", "--epochs", 1, "--image-size", 32, "--subset", 32,
                          "--out", w / "run", "--quiet")
    assert code == 0, err
    imgs = w / "imgs"; imgs.mkdir()
    for i in range(3): Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(imgs / f"a{i}.png")
    (w / "empty").mkdir()
    (w / "afile.txt").write_text("x")
    os.mkfifo(w / "fifo")
    (w / "link.csv").symlink_to(w / "afile.txt")
    (w / "notrun").mkdir(); (w / "notrun" / "notes.txt").write_text("mine")
    for name, content in {"badjson": "{oops", "listjson": "[1]", "nulljson": "null",
                          "nomodel": '{"classes": ["a", "b"]}'}.items():
        shutil.copytree(w / "run", w / name); (w / name / "config.json").write_text(content)
    cfg = json.loads((w / "run" / "config.json").read_text())
    for name, change in {"stdzero": {"std": [0.2, 0.0, 0.2]}, "unknownmodel": {"model": "resnet9000"},
                         "noclasses": {"classes": None}, "hugesize": {"image_size": 100000}}.items():
        shutil.copytree(w / "run", w / name); (w / name / "config.json").write_text(json.dumps({**cfg, **change}))
    code, _, err = gynlab("calibrate", "--run", w / "run", "--mc", 2)          # cad.json, for the report cases
    assert code == 0, err
    shutil.copytree(w / "run", w / "cadcorrupt"); (w / "cadcorrupt" / "cad.json").write_text("{ not json")
    from PIL import ImageDraw
    Image.new("L", (400, 270), 40).save(w / "scan.png")
    skull = Image.new("L", (400, 270), 0); ImageDraw.Draw(skull).ellipse((100, 60, 300, 210), fill=255)
    skull.save(w / "skull.png")
    Image.new("L", (400, 270), 255).save(w / "full.png")
    line = Image.new("L", (400, 270), 0); ImageDraw.Draw(line).line((20, 135, 380, 135), fill=255)
    line.save(w / "line.png")
    skull.resize((800, 540)).save(w / "big.png")
    (w / "broken.png").write_bytes(b"\x89PNG not an image")
    return w


T = ["train", "--dataset", "phantom-cytology", "--epochs", 1, "--subset", 8, "--quiet"]

SEG = ["train", "--task", "segment", "--dataset", "phantom-uterus-mri", "--epochs", 1, "--subset", 4]
CASES = {  # name: (argv with {w} for the world folder, words the message must contain)
    "unknown dataset": (["train", "--dataset", "no-such-set", "--out", "{w}/o"], "no-such-set"),
    "dataset without the task": (["train", "--dataset", "phantom-cine", "--epochs", 1, "--out", "{w}/o"],
                                 "classification"),
    "unknown model": (T + ["--model", "resnet9000", "--out", "{w}/o"], "unknown model 'resnet9000'"),
    "zero epochs": (T + ["--epochs", 0, "--out", "{w}/o"], "--epochs must be in [1"),
    "negative epochs": (T + ["--epochs", -1, "--out", "{w}/o"], "--epochs must be in [1"),
    "image size 0": (T + ["--image-size", 0, "--out", "{w}/o"], "--image-size must be in [8"),
    "image size 7": (T + ["--image-size", 7, "--out", "{w}/o"], "--image-size must be in [8"),
    "image size -5": (T + ["--image-size", -5, "--out", "{w}/o"], "--image-size must be in [8"),
    "image size 100000": (T + ["--image-size", 100000, "--out", "{w}/o"], "1024]"),
    "batch size 0": (T + ["--batch-size", 0, "--out", "{w}/o"], "--batch-size must be in [1"),
    "learning rate nan": (T + ["--lr", "nan", "--out", "{w}/o"], "--lr must be a finite number"),
    "learning rate inf": (T + ["--lr", "inf", "--out", "{w}/o"], "--lr must be a finite number"),
    "negative learning rate": (T + ["--lr", -1, "--out", "{w}/o"], "--lr must be in (0"),
    "zero channels": (T + ["--channels", 0, "--out", "{w}/o"], "--channels must be 1 or 3"),
    "two channels": (T + ["--channels", 2, "--out", "{w}/o"], "--channels must be 1 or 3"),
    "a GPU that is not there": (T + ["--device", "cuda:7", "--out", "{w}/o"], "device 'cuda:7'"),
    "a device that does not exist": (T + ["--device", "bogus", "--out", "{w}/o"], "unknown device 'bogus'"),
    "negative workers": (T + ["--num-workers", -1, "--out", "{w}/o"], "--num-workers must be in [0"),
    "subset 0": (T + ["--subset", 0, "--out", "{w}/o"], "--subset must be in [1"),
    "patience 0": (T + ["--patience", 0, "--out", "{w}/o"], "--patience must be in [1"),
    "unknown label column": (T + ["--target", "nope", "--out", "{w}/o"], "no class-label column 'nope'"),
    "train --out is a file": (T + ["--out", "{w}/afile.txt"], "is a file"),
    "segmentation with classification flags": (SEG + ["--lr-ratio", 4, "--class-weights", "balanced", "--out", "{w}/o"],
                                               "--class-weights, --lr-ratio: only for classification"),
    "segmentation --resume": (SEG + ["--resume", "--out", "{w}/o"], "--resume: only for classification"),
    "unknown mask column": (SEG + ["--target", "nope", "--out", "{w}/o"], "no mask column 'nope'"),
    "lesion crops without lesion masks": (T + ["--crop", "lesion", "--out", "{w}/o"], "no lesion masks to crop to"),
    "a locator without lesion crops": (T + ["--locator", "{w}/run", "--out", "{w}/o"],
                                       "--locator: only with --crop lesion"),
    "a classifier as the locator": (T + ["--crop", "lesion", "--locator", "{w}/run", "--out", "{w}/o"],
                                    "not a lesion segmentation run"),
    "crop margin below 1": (T + ["--crop", "lesion", "--crop-margin", 0.5, "--out", "{w}/o"], "--crop-margin must be"),
    "locator epochs 0": (T + ["--crop", "lesion", "--locator-epochs", 0, "--out", "{w}/o"], "--locator-epochs must be"),
    "segmentation with lesion crops": (SEG + ["--crop", "lesion", "--out", "{w}/o"], "--crop: only for classification"),
    "fold 4 of 3": (T + ["--fold", "4/3", "--out", "{w}/o"], "--fold 4/3: need"),
    "fold without K": (T + ["--fold", "2", "--out", "{w}/o"], "--fold: give I/K"),
    "segmentation fold 0 of 3": (SEG + ["--fold", "0/3", "--out", "{w}/o"], "--fold 0/3: need"),
    "train --out holds other files": (T + ["--out", "{w}/notrun"], "not a gynlab run"),
    "train --out is a run": (T + ["--out", "{w}/run"], "already holds a gynlab run"),
    "resume with nothing to resume": (T + ["--out", "{w}/o", "--resume"], "cannot resume"),
    "train --out is a link": (T + ["--out", "{w}/link.csv"], "symbolic link"),
    "segment size not a multiple of 16": (["train", "--task", "segment", "--dataset", "phantom-uterus-mri",
                                           "--image-size", 40, "--out", "{w}/o"], "multiple of 16"),
    "missing run": (["predict", "--run", "{w}/nowhere", "--input", "{w}/imgs", "--out", "{w}/p.csv"], "does not exist"),
    "run is not a run": (["predict", "--run", "{w}/notrun", "--input", "{w}/imgs", "--out", "{w}/p.csv"],
                         "config.json is missing"),
    "config not JSON": (["predict", "--run", "{w}/badjson", "--input", "{w}/imgs", "--out", "{w}/p.csv"],
                        "not valid JSON"),
    "config a list": (["predict", "--run", "{w}/listjson", "--input", "{w}/imgs", "--out", "{w}/p.csv"], "JSON object"),
    "config null": (["predict", "--run", "{w}/nulljson", "--input", "{w}/imgs", "--out", "{w}/p.csv"], "JSON object"),
    "config without model": (["predict", "--run", "{w}/nomodel", "--input", "{w}/imgs", "--out", "{w}/p.csv"],
                             "'model' is missing"),
    "config with std 0": (["predict", "--run", "{w}/stdzero", "--input", "{w}/imgs", "--out", "{w}/p.csv"],
                          "'std' must be > 0"),
    "config with unknown model": (["predict", "--run", "{w}/unknownmodel", "--input", "{w}/imgs", "--out", "{w}/p.csv"],
                                  "unknown classify model"),
    "config without classes": (["predict", "--run", "{w}/noclasses", "--input", "{w}/imgs", "--out", "{w}/p.csv"],
                               "'classes'"),
    "config with a huge image size": (["predict", "--run", "{w}/hugesize", "--input", "{w}/imgs", "--out", "{w}/p.csv"],
                                      "'image_size'"),
    "missing input folder": (["predict", "--run", "{w}/run", "--input", "{w}/nowhere", "--out", "{w}/p.csv"],
                             "does not exist"),
    "input is a file": (["predict", "--run", "{w}/run", "--input", "{w}/afile.txt", "--out", "{w}/p.csv"],
                        "is not a folder"),
    "no images": (["predict", "--run", "{w}/run", "--input", "{w}/empty", "--out", "{w}/p.csv"], "no images"),
    "predict --out is a folder": (["predict", "--run", "{w}/run", "--input", "{w}/imgs", "--out", "{w}/empty"],
                                  "is a folder"),
    "predict --out is a FIFO": (["predict", "--run", "{w}/run", "--input", "{w}/imgs", "--out", "{w}/fifo"], "FIFO"),
    "predict --out is a link": (["predict", "--run", "{w}/run", "--input", "{w}/imgs", "--out", "{w}/link.csv"],
                                "symbolic link"),
    "predict --out is an input image": (["predict", "--run", "{w}/run", "--input", "{w}/imgs",
                                         "--out", "{w}/imgs/a0.png"], "input folder"),
    "predict --out is the run's config": (["predict", "--run", "{w}/run", "--input", "{w}/imgs",
                                           "--out", "{w}/run/config.json"], "input folder"),
    "predict batch size 0": (["predict", "--run", "{w}/run", "--input", "{w}/imgs", "--out", "{w}/p.csv",
                              "--batch-size", 0], "--batch-size must be in [1"),
    "predict on a device that does not exist": (["predict", "--run", "{w}/run", "--input", "{w}/imgs",
                                                 "--out", "{w}/p.csv", "--device", "bogus"], "unknown device"),
    "explain with an unknown method": (["explain", "--run", "{w}/run", "--image", "{w}/imgs/a0.png",
                                        "--out", "{w}/e.png", "--method", "nope"], "unknown method 'nope'"),
    "explain an unknown class": (["explain", "--run", "{w}/run", "--image", "{w}/imgs/a0.png", "--out", "{w}/e.png",
                                  "--target", "no-such-class"], "no-such-class"),
    "explain --out is the image": (["explain", "--run", "{w}/run", "--image", "{w}/imgs/a0.png",
                                    "--out", "{w}/imgs/a0.png"], "one of the inputs"),
    "explain a corrupt image": (["explain", "--run", "{w}/run", "--image", "{w}/broken.png", "--out", "{w}/e.png"],
                                "broken.png"),
    "explain a missing run": (["explain", "--run", "{w}/nowhere", "--image", "{w}/scan.png", "--out", "{w}/e.png"],
                              "does not exist"),
    "calibrate with two targets": (["calibrate", "--run", "{w}/run", "--sensitivity", 0.9, "--specificity", 0.9],
                                   "not both"),
    "calibrate sensitivity 1.5": (["calibrate", "--run", "{w}/run", "--sensitivity", 1.5], "sensitivity"),
    "calibrate refer 1": (["calibrate", "--run", "{w}/run", "--refer", 1], "refer"),
    "calibrate one fold": (["calibrate", "--run", "{w}/run", "--folds", 1], "folds"),
    "calibrate tta on a classifier": (["calibrate", "--run", "{w}/run", "--tta"], "segmentation runs"),
    "calibrate mc -5": (["calibrate", "--run", "{w}/run", "--mc", -5], "mc"),
    "calibrate an unknown grouping": (["calibrate", "--run", "{w}/run", "--grouping", "nope"],
                                      "unknown grouping 'nope'"),
    "calibrate a missing run": (["calibrate", "--run", "{w}/nowhere"], "does not exist"),
    "report --out is the image": (["report", "--run", "{w}/run", "--image", "{w}/scan.png", "--out", "{w}/scan.png"],
                                  "one of the inputs"),
    "report --out is the run's config": (["report", "--run", "{w}/run", "--image", "{w}/scan.png",
                                          "--out", "{w}/run/config.json"], "config.json"),
    "report a missing image": (["report", "--run", "{w}/run", "--image", "{w}/nope.png", "--out", "{w}/r.html"],
                               "missing"),
    "report a corrupt image": (["report", "--run", "{w}/run", "--image", "{w}/broken.png", "--out", "{w}/r.html"],
                               "broken.png"),
    "report with a corrupt cad.json": (["report", "--run", "{w}/cadcorrupt", "--image", "{w}/scan.png",
                                        "--out", "{w}/r.html"], "cad.json"),
    "report --out is a FIFO": (["report", "--run", "{w}/run", "--image", "{w}/scan.png", "--out", "{w}/fifo"], "FIFO"),
    "biometry full-frame mask": (["biometry", "--image", "{w}/scan.png", "--mask", "{w}/full.png", "--pixel-size", 0.2],
                                 "cannot be one fetal skull"),
    "biometry one-line mask": (["biometry", "--image", "{w}/scan.png", "--mask", "{w}/line.png", "--pixel-size", 0.2],
                               "skull"),
    "biometry mask twice the image": (["biometry", "--image", "{w}/scan.png", "--mask", "{w}/big.png",
                                       "--pixel-size", 0.2], "800x540 px but the image is 400x270"),
    "biometry pixel size 1e300": (["biometry", "--image", "{w}/scan.png", "--mask", "{w}/skull.png",
                                   "--pixel-size", "1e300"], "pixel size"),
    "biometry pixel size 0": (["biometry", "--image", "{w}/scan.png", "--mask", "{w}/skull.png", "--pixel-size", 0],
                              "pixel size"),
    "biometry pixel size nan": (["biometry", "--image", "{w}/scan.png", "--mask", "{w}/skull.png",
                                 "--pixel-size", "nan"], "pixel size"),
    "biometry run and mask": (["biometry", "--image", "{w}/scan.png", "--mask", "{w}/skull.png", "--run", "{w}/run",
                               "--pixel-size", 0.2], "one of the two"),
    "biometry neither run nor mask": (["biometry", "--image", "{w}/scan.png", "--pixel-size", 0.2], "one of the two"),
    "biometry with a classifier run": (["biometry", "--image", "{w}/scan.png", "--run", "{w}/run", "--pixel-size", 0.2],
                                       "segment"),
    "biometry image missing": (["biometry", "--image", "{w}/nope.png", "--mask", "{w}/skull.png", "--pixel-size", 0.2],
                               "missing"),
    "unknown dataset card": (["data", "info", "no-such-dataset"], "no-such-dataset"),
    "data root that does not exist": (["data", "list", "--root", "{w}/nowhere"], "no such folder"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_cleanly(world, name):
    argv, words = CASES[name]
    argv = [str(a).replace("{w}", str(world)) for a in argv]
    before = tree(world)
    code, out, err = gynlab(*argv)
    assert code == 2, f"{name}: exit {code}\n{err}"
    assert words in err, f"{name}: {err!r} lacks {words!r}"
    assert "Traceback" not in err and err.startswith("gynlab: error: "), err
    assert tree(world) == before, f"{name}: files changed"


def test_cad_commands_work_on_good_input(world, tmp_path):
    "The happy path of the commands above: a report, an explanation and a measurement from a drawn skull."
    code, out, err = gynlab("report", "--run", world / "run", "--image", world / "scan.png",
                            "--out", tmp_path / "r.html", "--mc", 2)
    assert code == 0 and (tmp_path / "r.html").read_text().count("<img") >= 2, err
    code, out, err = gynlab("explain", "--run", world / "run", "--image", world / "scan.png",
                            "--out", tmp_path / "e.png")
    assert code == 0 and "prediction:" in out and Image.open(tmp_path / "e.png").size == (32, 32), err
    code, out, err = gynlab("biometry", "--image", world / "scan.png", "--mask", world / "skull.png",
                            "--pixel-size", 0.2, "--json")
    b = json.loads(out)
    import math
    a, c = 100 * 0.2, 75 * 0.2                                       # the drawn ellipse's semi-axes in mm
    ramanujan = math.pi * (3 * (a + c) - math.sqrt((3 * a + c) * (a + 3 * c)))
    assert code == 0 and abs(b["hc_mm"] - ramanujan) < 0.03 * ramanujan, (b, ramanujan)


def test_non_utf8_file_name_is_predicted_and_shown_escaped(world, tmp_path):
    imgs = tmp_path / "odd"; imgs.mkdir()
    name = os.fsdecode(b"caf\xe9.png")                     # Latin-1 bytes: not valid UTF-8
    Image.new("RGB", (20, 20), (10, 20, 30)).save(imgs / name)
    Image.new("RGB", (20, 20), (10, 20, 30)).save(imgs / "=cmd|calc!A0.png")   # a formula-looking name
    code, out, err = gynlab("predict", "--run", world / "run", "--input", imgs, "--out", tmp_path / "p.csv")
    assert code == 0, err
    text = (tmp_path / "p.csv").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in text and "\n'=cmd" in text            # escaped, and not a spreadsheet formula
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd", "p.csv"]   # no temporary file left
