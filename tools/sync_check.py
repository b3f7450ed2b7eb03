"""Fail when `nbdev_export` + `nbdev_clean` would change a file: the package must be generated from the notebooks
as committed, and the notebooks must be stored clean (`make sync-check`, part of `make test`).

    python tools/sync_check.py
"""
from __future__ import annotations
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snapshot() -> dict[str, str]:
    "Content hash of every file under gynlab/ and nbs/ (caches excluded)."
    out = {}
    for top in ("gynlab", "nbs"):
        for p in (ROOT / top).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts:
                out[str(p.relative_to(ROOT))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main() -> int:
    before = snapshot()
    for cmd in ("nbdev_export", "nbdev_clean"):
        r = subprocess.run([str(BIN / cmd)], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{cmd} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}", file=sys.stderr)
            return 1
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print("nbdev_export / nbdev_clean changed these files: the package and the notebooks were not in sync, or a"
              " notebook was not clean. Review the change (git diff) and commit it:", file=sys.stderr)
        for k in changed: print(f"  {k}", file=sys.stderr)
        return 1
    print(f"in sync: nbdev_export and nbdev_clean change none of {len(after)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
