"""bench/baselines.py in its smoke form (--quick: one epoch on a subset): cross-validation folds and changed settings
reach the runs it trains. The full runs are bench/ only."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gynlab.core import DataError
from gynlab.data import find_data

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "baselines.py"


def bench(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=900)


def test_cross_validation_smoke(tmp_path):
    try: find_data("mmotu")
    except DataError: pytest.skip("MMOTU is not on this machine")
    p = bench("--recipes", "mmotu-classify", "--cv", 2, "--quick", "--set", "label_smoothing=0.05",
              "--runs", tmp_path, "--out", tmp_path / "b.json")
    assert p.returncode == 0, p.stderr
    runs = sorted(tmp_path.glob("bench-mmotu-classify-*-cv*"))
    assert [r.name for r in runs] == [f"bench-mmotu-classify-label_smoothing0.05-s0-cv{i}of2-quick" for i in (1, 2)]
    cfgs = [json.loads((r / "config.json").read_text()) for r in runs]
    assert [c["fold"] for c in cfgs] == [[1, 2], [2, 2]] and {c["label_smoothing"] for c in cfgs} == {0.05}
    assert "fold 1/2" in p.stdout and "fold 2/2" in p.stdout and "over 2 folds" in p.stdout
    assert not (tmp_path / "b.json").exists()                      # a smoke test writes no result


@pytest.mark.parametrize("args, words", [
    (["--set", "nope=1", "--cv", 2], "nope is not a setting of mmotu-classify"),
    (["--set", "epochs", "--cv", 2], "--set: give KEY=VALUE"),
    (["--set", "epochs=2"], "--set is for comparing settings under --cv"),
])
def test_bad_settings_are_refused(tmp_path, args, words):
    p = bench("--recipes", "mmotu-classify", "--quick", "--runs", tmp_path, *args)
    assert p.returncode != 0 and words in p.stderr and "Traceback" not in p.stderr
    assert not list(tmp_path.iterdir())


def test_segmentation_cross_validation_smoke(tmp_path):
    "HC18 folds: each run records its fold and is scored on it (Dice, and HC after the offset learnt on the rest)."
    try: find_data("hc18")
    except DataError: pytest.skip("HC18 is not on this machine")
    p = bench("--recipes", "hc18", "--cv", 2, "--quick", "--set", "channels_last=false", "--runs", tmp_path,
              "--out", tmp_path / "b.json")
    assert p.returncode == 0, p.stderr
    runs = sorted(tmp_path.glob("bench-hc18-*-cv*"))
    assert [r.name for r in runs] == [f"bench-hc18-channels_lastfalse-s0-cv{i}of2-quick" for i in (1, 2)]
    cfgs = [json.loads((r / "config.json").read_text()) for r in runs]
    assert [c["fold"] for c in cfgs] == [[1, 2], [2, 2]] and {c["channels_last"] for c in cfgs} == {False}
    for line in ("hc18 [channels_last=false]:", "dice: mean", "dice_ellipse: mean", "dice_ellipse_tta: mean",
                 "hc_mae_mm_corrected: mean", "over 2 folds"):
        assert line in p.stdout, (line, p.stdout)
    m = json.loads((runs[0] / "metrics.json").read_text()); del m["dice_ellipse"]   # a run trained before it was kept
    (runs[0] / "metrics.json").write_text(json.dumps(m))
    again = bench("--recipes", "hc18", "--cv", 2, "--quick", "--set", "channels_last=false", "--runs", tmp_path,
                  "--out", tmp_path / "b.json", "--reuse")
    assert again.returncode == 0, again.stderr
    first = [ln for ln in p.stdout.splitlines() if "fold 1/2" in ln]
    assert first and first == [ln for ln in again.stdout.splitlines() if "fold 1/2" in ln]   # scored afresh, alike


def test_changed_settings_become_train_flags():
    "The command a cross-validation row records is one `gynlab train` accepts (a boolean is a flag, not a value)."
    import importlib.util
    from gynlab.cli import build_parser
    spec = importlib.util.spec_from_file_location("baselines", SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    shown = mod.flags({"amp": True, "channels_last": False, "image_size": 224})
    assert shown == "--amp --no-channels-last --image-size 224"
    a = build_parser().parse_args(["train", "--recipe", "mmotu-classify", "--out", "o", *shown.split()])
    assert (a.amp, a.channels_last, a.image_size) == (True, False, 224)


REFRESH = SCRIPT.with_name("refresh_bn.py")


def test_refresh_bn_script_scores_the_same_weights_before_and_after(tmp_path):
    """bench/refresh_bn.py: the 'before' score is the run's own recorded final score (the statistics it was saved
    with), an 'after' follows for every run, and the runs are left as they were; a folder that is no run is named."""
    import hashlib
    import re
    from test_cli_bad_input import gynlab as run_cli
    runs = {"classify": tmp_path / "cls", "segment": tmp_path / "seg"}
    for task, args in (("classify", ["--dataset", "phantom-cytology", "--model", "efficientnet_lite0"]),
                       ("segment", ["--task", "segment", "--dataset", "phantom-uterus-mri", "--model", "lite0_unet"])):
        code, _, err = run_cli("train", *args, "--no-pretrained", "--epochs", 1, "--image-size", 32, "--subset", 24,
                               "--quiet", "--no-refresh-bn", "--out", runs[task])
        assert code == 0, err
    digest = {t: hashlib.sha256((r / "model.safetensors").read_bytes()).hexdigest() for t, r in runs.items()}
    p = subprocess.run([sys.executable, str(REFRESH), runs["classify"], runs["segment"]], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    lines = {t: next(ln for ln in p.stdout.splitlines() if ln.startswith(f"{r}:")) for t, r in runs.items()}
    recorded = {"classify": json.loads((runs["classify"] / "metrics.json").read_text())["final"]["accuracy"],
                "segment": json.loads((runs["segment"] / "metrics.json").read_text())["dice"]}
    for task, key in (("classify", "accuracy"), ("segment", "dice")):
        before, after = map(float, re.search(rf"{key} ([0-9.]+) -> ([0-9.]+)", lines[task]).groups())
        assert before == pytest.approx(recorded[task], abs=1e-4) and 0 <= after <= 1, (lines[task], recorded[task])
    assert "mean change" in p.stdout
    assert digest == {t: hashlib.sha256((r / "model.safetensors").read_bytes()).hexdigest() for t, r in runs.items()}
    bad = subprocess.run([sys.executable, str(REFRESH), tmp_path / "nothing"], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a run folder" in bad.stderr and "Traceback" not in bad.stderr


def test_reuse_trains_again_a_run_whose_settings_changed(tmp_path):
    "--reuse scores a run as it is only while its config.json matches the recipe; a stale run is trained again."
    try: find_data("mmotu")
    except DataError: pytest.skip("MMOTU is not on this machine")
    args = ["--recipes", "mmotu-classify", "--quick", "--runs", tmp_path]
    assert bench(*args).returncode == 0
    run = tmp_path / "bench-mmotu-classify-s0-quick"
    weights = (run / "model.safetensors").stat().st_mtime_ns
    p = bench(*args, "--reuse")
    assert p.returncode == 0 and "training it again" not in p.stdout, p.stdout + p.stderr
    assert (run / "model.safetensors").stat().st_mtime_ns == weights                 # scored, not trained
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "label_smoothing": 0.3}))     # as if the recipe had changed
    p = bench(*args, "--reuse")
    assert p.returncode == 0 and "was trained with other settings (label_smoothing): training it again" in p.stdout
    assert json.loads((run / "config.json").read_text())["label_smoothing"] == cfg["label_smoothing"]
    (run / "config.json").write_text("{not json")                                     # a damaged run
    p = bench(*args, "--reuse")
    assert p.returncode == 0 and "config.json (missing or unreadable)" in p.stdout and "Traceback" not in p.stderr
    assert json.loads((run / "config.json").read_text())["label_smoothing"] == cfg["label_smoothing"]
