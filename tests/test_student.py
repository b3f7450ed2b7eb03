"Student copies (`make student` / tools/student.py): no solutions, starters kept, and they still run."
import json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _src(c): return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
def _has(c, d): return any(l.replace(" ", "").startswith(f"#|{d}") for l in _src(c).splitlines()[:5])


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    r = subprocess.run([PY, "tools/student.py", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_every_lesson_copied_without_solutions(student):
    src = sorted(p.name for p in (ROOT / "nbs").glob("*.ipynb"))
    assert sorted(p.name for p in student.glob("*.ipynb")) == src
    n_solutions = 0
    for name in src:
        orig = json.loads((ROOT / "nbs" / name).read_text())["cells"]
        copy = json.loads((student / name).read_text())["cells"]
        n_solutions += sum(_has(c, "solution") for c in orig if c["cell_type"] == "code")
        assert not [c for c in copy if c["cell_type"] == "code" and _has(c, "solution")], name
        # starter cells and all prose stay
        assert [_src(c) for c in orig if _has(c, "eval:false")] == [_src(c) for c in copy if _has(c, "eval:false")], name
        assert [_src(c) for c in orig if c["cell_type"] == "markdown"] == [_src(c) for c in copy if c["cell_type"] == "markdown"]
        assert all(not c.get("outputs") for c in copy if c["cell_type"] == "code")
    assert n_solutions >= 1, "no lesson has a `#| solution` cell: nothing was tested"


def test_student_copy_runs_and_starter_says_not_done(student):
    "The student copy of 09_exercises runs top to bottom, starter cells included; the checker says 'not yet'."
    code = f"""
import os, sys
from execnb.nbio import read_nb
from execnb.shell import CaptureShell
nb = read_nb({str(student / '09_exercises.ipynb')!r})
os.chdir({str(student)!r})
sh = CaptureShell()
sh.run_all(nb, exc_stop=True)
starters = [c for c in nb.cells if c.cell_type == 'code' and 'eval: false' in c.source]
text = ''.join(str(o) for c in starters for o in c.outputs)
assert starters and '❌' in text and '✅' not in text, text
print('ok')
"""
    r = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_student_copy_passes_nbdev_test(student):
    "As `make test` runs lessons: starter cells (`#| eval: false`) skipped, everything else passes."
    r = subprocess.run([str(Path(PY).parent / "nbdev_test"), "--path", str(student / "09_exercises.ipynb")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Success" in r.stdout + r.stderr, r.stdout + r.stderr
