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
