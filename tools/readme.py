"""Write README.md from nbs/index.ipynb without Quarto.

Markdown cells are copied; code cells become ```python blocks with their `#|` directive lines removed;
cells marked `#| hide` (or `#| include: false`) are dropped; saved text outputs are kept. Links to lesson
notebooks are made relative to the repository root (`nbs/...`).

    python tools/readme.py               # write README.md
    python tools/readme.py --check       # exit 1 if README.md differs from what would be written
    python tools/readme.py --out FILE    # write elsewhere
"""
from __future__ import annotations
import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- generated from nbs/index.ipynb by tools/readme.py (`make readme`): do not edit by hand -->\n\n"


def _src(x) -> str: return "".join(x) if isinstance(x, list) else (x or "")


def _directives(src: str) -> tuple[dict, str]:
    "Leading `#| key: value` lines as a dict, and the source without them."
    d, lines = {}, src.splitlines()
    i = 0
    while i < len(lines) and (lines[i].strip().startswith("#|") or (not lines[i].strip() and d)):
        l = lines[i].strip()
        if l.startswith("#|"):
            k, _, v = (l[2:].strip().partition(":") if ":" in l
                       else (l[2:].strip().split(" ")[0], "", " ".join(l[2:].split()[1:])))
            d[k.strip()] = v.strip()
        i += 1
    return d, "\n".join(lines[i:]).strip("\n")


def _fix_links(md: str) -> str:
    "Lesson links are relative to nbs/ in the notebook; README.md sits one folder up."
    return re.sub(r"\]\((?!https?:|#|/|nbs/)([^)\s]+\.(?:ipynb|md|qmd))\)", r"](nbs/\1)", md)


def _outputs(cell) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stdout": out.append(_src(o.get("text")))
        elif o.get("output_type") in ("execute_result", "display_data"):
            data = o.get("data", {})
            if "text/markdown" in data: out.append(_src(data["text/markdown"]) + "\n"); continue
            if "text/plain" in data: out.append(_src(data["text/plain"]) + "\n")
    return [f"```\n{t.rstrip()}\n```" for t in out if t.strip()]


def render(nb_path: Path) -> str:
    "The README text for notebook `nb_path`."
    nb = json.loads(Path(nb_path).read_text(encoding="utf-8"))
    parts = []
    for c in nb["cells"]:
        d, body = _directives(_src(c["source"]))
        if "hide" in d or d.get("include", "").lower() == "false" or "default_exp" in d: continue
        if c["cell_type"] == "markdown":
            if body.strip(): parts.append(_fix_links(body.strip()))
        elif c["cell_type"] == "code":
            if body.strip() and d.get("echo", "").lower() != "false": parts.append(f"```python\n{body.strip()}\n```")
            if d.get("output", "").lower() != "false": parts += _outputs(c)
    return HEADER + "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nb", default=str(ROOT / "nbs" / "index.ipynb"))
    ap.add_argument("--out", default=str(ROOT / "README.md"))
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    a = ap.parse_args(argv)
    text, out = render(Path(a.nb)), Path(a.out)
    if a.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is out of date with {a.nb}: run `make readme`", file=sys.stderr); return 1
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
