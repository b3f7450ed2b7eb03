"Student copies (`make student` / tools/student.py): no solutions, starters kept, and they still run."
import json
import subprocess
import sys
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
    src = sorted(p.name for p in (ROOT / "nbs").glob("*.ipynb") if p.name != "instructor.ipynb")
    assert sorted(p.name for p in student.glob("*.ipynb")) == src
    assert not (student / "instructor.ipynb").exists(), "the instructor guide (the answers) was copied for students"
    n_solutions = 0
    for name in src:
        orig = json.loads((ROOT / "nbs" / name).read_text())["cells"]
        copy = json.loads((student / name).read_text())["cells"]
        n_solutions += sum(_has(c, "solution") for c in orig if c["cell_type"] == "code")
        assert not [c for c in copy if c["cell_type"] == "code" and _has(c, "solution")], name
        # starter cells and all prose stay
        assert ([_src(c) for c in orig if _has(c, "eval:false")]
                == [_src(c) for c in copy if _has(c, "eval:false")]), name
        assert ([_src(c) for c in orig if c["cell_type"] == "markdown"]
                == [_src(c) for c in copy if c["cell_type"] == "markdown"])
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


def _names(src: str) -> tuple[set, set]:
    "(names a cell binds at top level, names it reads) — IPython magics and directives stripped."
    import ast
    code = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!", "#|")))
    try: tree = ast.parse(code)
    except SyntaxError: return set(), set()
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name): (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): bound.add(node.name)
        elif isinstance(node, ast.alias): bound.add((node.asname or node.name).split(".")[0])
    return bound, read


def test_no_lesson_needs_its_solutions():
    "In a student copy the solution cells are gone: no later cell may read a name that only a solution cell defines."
    for path in sorted((ROOT / "nbs").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        defined_elsewhere, only_in_solution, problems = set(), set(), []
        for c in cells:
            bound, read = _names(_src(c))
            if _has(c, "solution"):
                only_in_solution |= bound - defined_elsewhere
                continue
            if not _has(c, "eval:false"):
                missing = (read & only_in_solution) - bound
                if missing: problems.append((_src(c)[:60], sorted(missing)))
            defined_elsewhere |= bound; only_in_solution -= bound
        assert not problems, f"{path.name}: cells that break without the solutions: {problems}"


def test_checker_accepts_the_right_answer_in_a_student_copy(student):
    "Fill the student copy's starter cells with the instructor's solutions: every checker now says ✅, none ❌."
    orig = json.loads((ROOT / "nbs" / "09_exercises.ipynb").read_text())["cells"]
    sols = [_src(c) for c in orig if c["cell_type"] == "code" and _has(c, "solution")]
    nb = json.loads((student / "09_exercises.ipynb").read_text())
    starters = [c for c in nb["cells"] if c["cell_type"] == "code" and _has(c, "eval:false")]
    assert len(starters) == len(sols) >= 1
    for c, s in zip(starters, sols):                      # the student "types in" the answer
        c["source"] = "#| filled\n" + "\n".join(l for l in s.splitlines() if not l.startswith("#|"))
    filled = student / "filled.ipynb"; filled.write_text(json.dumps(nb))
    code = f"""
import os
from execnb.nbio import read_nb
from execnb.shell import CaptureShell
nb = read_nb({str(filled)!r}); os.chdir({str(student)!r})
CaptureShell().run_all(nb, exc_stop=True)
filled = [c for c in nb.cells if c.cell_type == 'code' and c.source.startswith('#| filled')]
text = ''.join(str(o) for c in filled for o in c.outputs)
print('ticks', text.count('✅'), 'crosses', text.count('❌'))
"""
    r = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ticks, crosses = (int(v) for v in r.stdout.split()[1::2])
    assert ticks >= len(sols) and crosses == 0, r.stdout
