"""Smoke runs of bench/ scripts that no other test covers: they run, print the ratio they exist for, and refuse bad
arguments with a message. The figures themselves are bench/ only (timings do not belong in tests)."""
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def script(name, *args):
    return subprocess.run([sys.executable, str(BENCH / name), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_malloc_tuning_prints_both_settings_and_their_ratio():
    p = script("malloc_tuning.py", "--model", "smallcnn", "--image-size", 32, "--batch-size", 4, "--steps", 2,
               "--repeats", 1)
    assert p.returncode == 0, p.stderr
    assert re.search(r"default +CPU [0-9.]+ s per step", p.stdout) and re.search(r"tuned +CPU [0-9.]+", p.stdout)
    ratio = float(re.search(r"tuned / default: CPU time ([0-9.]+)x", p.stdout).group(1))
    assert 0 < ratio < 10, p.stdout


def test_malloc_tuning_refuses_a_bad_count():
    p = script("malloc_tuning.py", "--steps", 0)
    assert p.returncode == 2 and "--steps must be at least 1" in p.stderr and "Traceback" not in p.stderr
