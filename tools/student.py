"""Write student copies of the lessons (`make student`): every notebook in nbs/ without its `#| solution` cells
and without outputs, into student/ (git-ignored), ready to hand out. The starter cells stay; the checkers live
in the installed gynlab package, so they work the same in the copies.

    python tools/student.py [--out DIR] [NOTEBOOK ...]
"""
from __future__ import annotations
import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gynlab.exercises.core import strip_solutions  # noqa: E402  (the one rule for what a student copy is)


def student_copy(src: Path, dst: Path) -> int:
    "Write the student copy of notebook `src` to `dst`; returns how many cells were removed."
    nb = json.loads(Path(src).read_text(encoding="utf-8"))
    out = strip_solutions(nb)
    # the hidden `nbdev_export()` cell is for authors: in a handed-out copy (no settings.ini) it would only fail
    out["cells"] = [c for c in out["cells"]
                    if not (c.get("cell_type") == "code" and "nbdev_export" + "(" in "".join(c.get("source", "")))]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(out, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(nb["cells"]) - len(out["cells"])


INSTRUCTOR_ONLY = {"instructor.ipynb"}   # the answers: never in a student copy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "student"), help="output folder (emptied first)")
    ap.add_argument("notebooks", nargs="*",
                    help="notebooks to copy (default: all of nbs/*.ipynb but the instructor guide)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    nbs = [Path(n) for n in a.notebooks] or [p for p in sorted((ROOT / "nbs").glob("*.ipynb"))
                                             if p.name not in INSTRUCTOR_ONLY]
    if out.exists() and not a.notebooks: shutil.rmtree(out)
    for f in ["styles.css"]:  # nothing else of nbs/ is needed to run the lessons
        if (ROOT / "nbs" / f).exists(): out.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT / "nbs" / f, out / f)
    total = 0
    for nb in nbs:
        n = student_copy(nb, out / nb.name)
        total += n
        print(f"  {nb.name:32} {n} cell(s) removed (solutions, export)")
    print(f"wrote {len(nbs)} notebooks to {out} ({total} cells removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
