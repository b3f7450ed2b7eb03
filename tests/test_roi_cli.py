"""`gynlab train --crop lesion` and what uses its run: the locator trained inside the run, `gynlab predict` through
it (each row names the box the classifier saw), and the commands that need whole images refusing such a run."""
import csv
import shutil

import pytest

from gynlab.core import DataError
from gynlab.data import find_data
from test_cli_bad_input import gynlab


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory):
    try: root = find_data("mmotu")
    except DataError: pytest.skip("MMOTU is not on this machine")
    w = tmp_path_factory.mktemp("crop")
    code, out, err = gynlab("train", "--dataset", "mmotu", "--crop", "lesion", "--model", "smallcnn", "--epochs", 1,
                            "--image-size", 32, "--subset", 16, "--locator-size", 32, "--locator-epochs", 1,
                            "--out", w / "run", "--quiet")
    assert code == 0, err
    imgs = w / "imgs"; imgs.mkdir()
    for p in sorted((root / "images").iterdir())[:3]: shutil.copy(p, imgs / p.name)
    return w


def test_a_crop_run_holds_its_locator_and_predicts_through_it(crop_run, tmp_path):
    import json
    cfg = json.loads((crop_run / "run" / "config.json").read_text())
    assert cfg["crop"]["locator"] == "locator" and cfg["crop"]["margin"] == 1.3
    loc = json.loads((crop_run / "run" / "locator" / "config.json").read_text())
    assert (loc["task"], loc["target"], loc["image_size"]) == ("segment", "lesion_mask", 32)
    code, out, err = gynlab("predict", "--run", crop_run / "run", "--input", crop_run / "imgs",
                            "--out", tmp_path / "p.csv", "--tta")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 3 and all(r["prediction"] in cfg["classes"] for r in rows)
    # each box is the square around the lesion of the mask the locator itself predicts (`gynlab predict` on the
    # locator run), empty exactly where that mask is empty
    code, out, err = gynlab("predict", "--run", crop_run / "run" / "locator", "--input", crop_run / "imgs",
                            "--out", tmp_path / "masks")
    assert code == 0, err
    import numpy as np
    from PIL import Image
    from gynlab.tasks import lesion_box
    for r in rows:
        mask = np.asarray(Image.open(tmp_path / "masks" / (r["file"].rsplit(".", 1)[0] + ".png"))) > 0
        assert r["lesion_box"] == (" ".join(map(str, lesion_box(mask, 1.3))) if mask.any() else ""), r


@pytest.mark.parametrize("argv", [["explain", "--image", "{i}", "--out", "{t}/e.png"], ["calibrate", "--mc", 2],
                                  ["report", "--image", "{i}", "--out", "{t}/r.html"]])
def test_commands_that_need_whole_images_refuse_a_crop_run(crop_run, tmp_path, argv):
    img = next((crop_run / "imgs").iterdir())
    argv = [str(a).replace("{i}", str(img)).replace("{t}", str(tmp_path)) for a in argv]
    code, out, err = gynlab(argv[0], "--run", crop_run / "run", *argv[1:])
    assert code == 2 and "classifies lesion crops" in err and "Traceback" not in err, err
    assert not list(tmp_path.iterdir()) and not (crop_run / "run" / "cad.json").exists()
