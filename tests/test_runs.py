"""Run folders can be trusted: a killed or failed training never damages the run that was there, leaves a resumable
one, two trainings cannot write one run, and a damaged config.json is refused with a message (gynlab.runs)."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gynlab.core import OutputError, RunError
from gynlab.runs import RunWriter, check_config, is_run, load_run, read_config

EXE = Path(sys.executable).with_name("gynlab")
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TRAIN = ["train", "--dataset", "phantom-cytology", "--image-size", "32", "--batch-size", "16", "--quiet"]


def _ctrl_c_as_at_a_terminal():
    "Give the child SIGINT's default action: a shell running these tests in the background may have ignored it."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def gynlab(*args, cwd):
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def tree_hash(folder: Path) -> dict:
    "Every file under `folder` with its content hash (what 'unchanged' means)."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    "A finished 1-epoch run, copied into each test that needs one."
    d = tmp_path_factory.mktemp("runs")
    p = gynlab(*TRAIN, "--epochs", 1, "--subset", 32, "--out", d / "run", cwd=d)
    assert p.returncode == 0, p.stderr
    return d / "run"


def _copy_run(base: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(base, dst)
    return dst


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_training_leaves_old_run_intact_and_a_resumable_one(base, tmp_path, sig):
    run = _copy_run(base, tmp_path / "run")
    before = tree_hash(run)
    proc = subprocess.Popen([str(EXE), *TRAIN, "--epochs", "6", "--subset", "320", "--out", str(run), "--overwrite"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_at_a_terminal)
    ckpt = tmp_path / ".run.partial" / "checkpoints" / "last.safetensors"
    t0 = time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 300: time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted: " + proc.stderr.read()
    time.sleep(0.3)                                                 # mid-epoch 2
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT: assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    else: assert proc.returncode == -signal.SIGKILL
    assert tree_hash(run) == before                                 # the old run: byte for byte the same
    assert ckpt.is_file() and not (tmp_path / ".run.partial" / "model.safetensors").exists()
    assert not [p for p in tmp_path.rglob("*.tmp")], "a half-written file was left behind"
    # SIGKILL: a stale lock is taken over
    p = gynlab(*TRAIN, "--epochs", 6, "--subset", 320, "--out", run, "--resume", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    cfg, m = read_config(run), json.loads((run / "metrics.json").read_text())
    assert cfg["epochs"] == 6 and [r["epoch"] for r in m["history"]] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]     # no partial, no lock, no old copy


def test_failed_retrain_keeps_the_old_run(base, tmp_path):
    run = _copy_run(base, tmp_path / "run")
    before = tree_hash(run)
    p = gynlab(*TRAIN, "--epochs", 1, "--subset", 32, "--out", run, "--overwrite", "--lr", "nan", cwd=tmp_path)
    assert p.returncode == 2 and "--lr must be a finite number" in p.stderr
    p = gynlab(*TRAIN, "--epochs", 1, "--subset", 32, "--out", run, "--overwrite", "--model", "nosuchnet", cwd=tmp_path)
    assert p.returncode == 2 and "unknown model 'nosuchnet'" in p.stderr
    assert tree_hash(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_out_must_be_new_empty_or_a_run_replaced_on_purpose(base, tmp_path):
    run = _copy_run(base, tmp_path / "run")
    other = tmp_path / "mine"; other.mkdir(); (other / "thesis.docx").write_text("years of work")
    (tmp_path / "afile").write_text("x")
    for out, words in [(run, "already holds a gynlab run"), (other, "not a gynlab run"),
                       (tmp_path / "afile", "is a file")]:
        p = gynlab(*TRAIN, "--epochs", 1, "--subset", 16, "--out", out, cwd=tmp_path)
        assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert (other / "thesis.docx").read_text() == "years of work" and (tmp_path / "afile").read_text() == "x"
    p = gynlab(*TRAIN, "--epochs", 1, "--subset", 16, "--out", tmp_path / "new", "--resume", cwd=tmp_path)
    assert p.returncode == 2 and "cannot resume" in p.stderr and not (tmp_path / "new").exists()


def test_two_trainings_cannot_write_one_run(tmp_path):
    a = subprocess.Popen([str(EXE), *TRAIN, "--epochs", "6", "--subset", "320", "--out", str(tmp_path / "run")],
                         cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_ctrl_c_as_at_a_terminal)
    try:
        t0 = time.time()
        while not (tmp_path / ".run.lock").exists() and time.time() - t0 < 120: time.sleep(0.05)
        p = gynlab(*TRAIN, "--epochs", 1, "--subset", 16, "--out", tmp_path / "run", cwd=tmp_path)
        assert p.returncode == 2 and "being written by another gynlab process" in p.stderr, p.stderr
    finally:
        a.send_signal(signal.SIGINT); a.communicate(timeout=120)
    assert a.returncode == 130


def test_a_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".run.lock").write_text(dead.stdout.strip())          # a process that no longer exists
    with pytest.raises(RunError, match="wrote no config.json"):
        with RunWriter(tmp_path / "run") as w: assert w.dir.is_dir()   # taken over; then nothing was trained
    assert sorted(p.name for p in tmp_path.iterdir()) == []             # no lock, no empty partial folder


def test_resume_must_continue_the_same_training(base, tmp_path):
    run = _copy_run(base, tmp_path / "run")
    p = gynlab(*TRAIN, "--epochs", 2, "--subset", 32, "--out", run, "--resume", "--lr", "0.01", cwd=tmp_path)
    assert p.returncode == 2 and "lr (0.001 then, 0.01 now)" in p.stderr
    p = gynlab(*TRAIN, "--epochs", 2, "--subset", 32, "--out", run, "--resume", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert [r["epoch"] for r in json.loads((run / "metrics.json").read_text())["history"]] == [1, 2]


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"), ("[1, 2]", "should hold a JSON object"), ("null", "should hold a JSON object"),
    ('{"model": "smallcnn"}', "'classes' is missing"),
    ('{"model": "resnet900", "classes": ["a", "b"], "image_size": 32, "channels": 3, "mean": [0,0,0], "std": [1,1,1]}',
     "unknown classify model"),
    ('{"model": "smallcnn", "classes": ["a", "b"], "image_size": 32, "channels": 3, "mean": [0,0,0], "std": [1,0,1]}',
     "'std' must be > 0"),
    ('{"model": "smallcnn", "classes": ["a", "b"], "image_size": 100000, "channels": 3, '
     '"mean": [0,0,0], "std": [1,1,1]}', "'image_size' must be an integer in [8, 1024]"),
    ('{"task": "detect", "model": "smallcnn"}', "unknown task 'detect'")])
def test_damaged_config_is_refused_with_a_message(base, tmp_path, content, words):
    run = _copy_run(base, tmp_path / "run")
    (run / "config.json").write_text(content)
    with pytest.raises(RunError, match=words.replace("[", r"\[").replace("]", r"\]")): load_run(run)
    (tmp_path / "imgs").mkdir()
    from PIL import Image
    Image.new("RGB", (20, 20)).save(tmp_path / "imgs" / "a.png")
    p = gynlab("predict", "--run", run, "--input", tmp_path / "imgs", "--out", tmp_path / "p.csv", cwd=tmp_path)
    assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr and not (tmp_path / "p.csv").exists()


def test_check_config_accepts_what_train_writes(base):
    cfg = json.loads((base / "config.json").read_text())
    assert check_config(cfg) is cfg and is_run(base) and cfg["target"] == "label"
    with pytest.raises(OutputError, match="not a folder name"): RunWriter(Path("/")).__enter__()
