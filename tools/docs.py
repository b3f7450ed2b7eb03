"""Build the documentation site from the notebooks into _docs/ (`make docs`).

1. Execute each notebook (as `nbdev_test` does: `#| eval: false`, `#| slow` and the `nbdev_export` cell are
   skipped) in its own process, into .cache/docs-exec/. Results are cached by the notebook's and the package's
   content, so a second build re-runs only what changed. Plotly figures are rendered with plotly.js inlined
   (once per page), so pages work offline. `--no-execute` uses the saved (clean) notebooks instead.
2. Process them with nbdev's doc processors (`FilterDefaults`: hides `#| hide` cells, adds `show_doc` for
   exported symbols, ...) into _proc/, with _quarto.yml, sidebar.yml and styles.css.
3. Render _proc/ with Quarto when `quarto` is on PATH (what `nbdev_docs` does), otherwise with the pure-Python
   `smalldocs render`, and move the site to _docs/.
4. Check that no page loads a script or stylesheet from the network.

    python tools/docs.py [--no-execute] [--workers N] [--out DIR] [--strict]
"""
from __future__ import annotations
import argparse, hashlib, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
EXEC_CACHE = ROOT / ".cache" / "docs-exec"
PROC = ROOT / "_proc"
EXTERNAL = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def external_refs(html: str) -> list[str]:
    "Tags in `html` that load a script, stylesheet, image or frame from another host."
    return [m.group(0) for m in EXTERNAL.finditer(html)]


# ---------------------------------------------------------------- 1. execute
def _skip_flags() -> set[str]:
    from nbdev.config import get_config
    return set(get_config().get("tst_flags", "").split())


def _plotly_html(nb) -> int:
    "Give every plotly figure output a text/html rendering with plotly.js inlined in the first; returns the count."
    import plotly.io as pio
    n = 0
    for c in nb.cells:
        for o in c.get("outputs", []):
            data = o.get("data", {})
            fig = data.get("application/vnd.plotly.v1+json")
            if fig is None: continue
            fig = json.loads(fig) if isinstance(fig, str) else fig
            data["text/html"] = pio.to_html(fig, include_plotlyjs=(n == 0), full_html=False,
                                            config=fig.get("config") or {})
            # the page needs only the HTML; the JSON doubles the size, and execnb would mangle its `source` keys
            del data["application/vnd.plotly.v1+json"]
            n += 1
    return n


def execute_one(src: Path, dst: Path) -> None:
    "Run notebook `src` in this process, as nbdev_test would, and write it with its outputs to `dst`."
    os.environ.update(PLOTLY_RENDERER="plotly_mimetype", TQDM_DISABLE="1", IN_TEST="1")
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import extract_directives
    import copy
    src = Path(src).resolve()
    nb, flags = read_nb(src), _skip_flags()

    def skip(cell):
        if cell.cell_type != "code": return True
        if "nbdev_export" + "(" in cell.source: return True
        d = extract_directives(copy.deepcopy(cell), remove=False)
        if d.get("eval:", [""])[0].lower() == "false": return True
        return bool(flags & d.keys())

    sh = CaptureShell(src)
    os.chdir(src.parent)
    sh.run_all(nb, exc_stop=True, preproc=skip)
    _plotly_html(nb)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dst)


EXEC_VERSION = "2"  # bump when the way notebooks are executed changes, to invalidate the cache


def _key(nb: Path) -> str:
    h = hashlib.sha256(EXEC_VERSION.encode() + nb.read_bytes())
    for p in sorted((ROOT / "gynlab").rglob("*.py")): h.update(p.read_bytes())
    return h.hexdigest()


def execute_all(nbs: list[Path], workers: int, timeout: int) -> dict[Path, Path]:
    "Executed copies of `nbs` (from the cache when nothing changed); a notebook that fails keeps its saved copy."
    EXEC_CACHE.mkdir(parents=True, exist_ok=True)

    def run(nb: Path):
        dst, stamp = EXEC_CACHE / nb.name, EXEC_CACHE / (nb.name + ".key")
        key = _key(nb)
        if dst.exists() and stamp.exists() and stamp.read_text() == key: return nb, dst, "cached", 0.0
        t = time.time()
        tmp = dst.with_suffix(".tmp.ipynb")
        try:
            r = subprocess.run([sys.executable, __file__, "--exec-one", str(nb), str(tmp)], cwd=ROOT,
                               capture_output=True, text=True, timeout=timeout)
            ok, err = r.returncode == 0, r.stderr[-3000:]
        except subprocess.TimeoutExpired: ok, err = False, f"timed out after {timeout} s"
        if not ok:
            tmp.unlink(missing_ok=True)
            return nb, nb, f"FAILED, using the saved notebook:\n{err}", time.time() - t
        tmp.replace(dst); stamp.write_text(key)
        return nb, dst, "executed", time.time() - t

    out = {}
    with ThreadPoolExecutor(max(1, workers)) as ex:
        for nb, dst, how, dt in ex.map(run, nbs):
            print(f"  {nb.name:32} {how.splitlines()[0]} ({dt:.0f} s)" if dt else f"  {nb.name:32} {how}")
            if how.startswith("FAILED"): print("\n".join("    " + l for l in how.splitlines()[1:]), file=sys.stderr)
            out[nb] = dst
    return out


# ---------------------------------------------------------------- 2. process
def _patch_show_doc_eval():
    """nbdev's doc processor re-runs every cell holding an import, to define the symbols `show_doc` documents.
    A cell that mixes an import with demo code then fails (its inputs were never defined) and loses the page.
    Only exported cells and import-only cells are needed for `show_doc`: skip the mixed ones, keeping the
    outputs they got when the notebook was executed."""
    import ast
    import nbdev.processors as P
    if getattr(P._do_eval, "_gynlab", False): return
    orig = P._do_eval
    def _do_eval(cell):
        if cell.cell_type == "code" and cell.source and not (getattr(cell, "directives_", {}) or {}).keys() & {
                "export", "exports", "exporti", "exec_doc"}:
            try: trees = cell.parsed_()
            except Exception: trees = None
            if trees and P._ast_contains(trees, (ast.Import, ast.ImportFrom)) and P._ast_contains(trees, (ast.Expr, ast.Assign)):
                return None
        return orig(cell)
    _do_eval._gynlab = True
    P._do_eval = _do_eval


def process(sources: dict[Path, Path], proc: Path) -> list[str]:
    "nbdev's doc processing of each notebook into `proc`, plus the site's other files; returns those that failed."
    from nbdev.serve_drv import exec_nb
    from nbdev.processors import FilterDefaults
    _patch_show_doc_eval()
    if proc.exists(): shutil.rmtree(proc)
    proc.mkdir(parents=True)
    failed = []
    for nb, src in sources.items():
        try: exec_nb(src, proc / nb.name, FilterDefaults)
        except Exception as e:  # e.g. its module does not import: leave the page out, say so
            cause = f" ({type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
            print(f"warning: {nb.name} left out of the site: {str(e).splitlines()[0]}{cause}", file=sys.stderr)
            failed.append(nb.name)
    for f in NBS.iterdir():  # _quarto.yml, sidebar.yml, styles.css, images ...
        if f.suffix == ".ipynb" or f.name.startswith("."): continue
        (shutil.copytree if f.is_dir() else shutil.copy2)(f, proc / f.name)
    return failed


# ---------------------------------------------------------------- 3. render
def render(proc: Path, out: Path, quiet: bool = False) -> str:
    "Render `proc` with Quarto or smalldocs; move the site to `out`; returns the renderer used."
    built = proc / "_docs"  # _quarto.yml: output-dir: _docs
    if shutil.which("quarto"):
        subprocess.run(["quarto", "render", str(proc), "--no-cache"], check=True)
        how = "quarto"
    else:
        subprocess.run([str(Path(sys.executable).parent / "smalldocs"), "render", str(proc)] + (["-q"] if quiet else []),
                       check=True)
        how = "smalldocs"
    if out.exists(): shutil.rmtree(out)
    shutil.move(str(built), str(out))
    return how


def vendor_assets(out: Path) -> int:
    """smalldocs links KaTeX (pages with maths) from a CDN: serve the copy in tools/vendor/katex instead.
    Returns the number of pages rewritten."""
    try: from smalldocs.layout import KATEX
    except ImportError: return 0
    katex = ROOT / "tools" / "vendor" / "katex"
    n = 0
    for page in out.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        if KATEX not in html: continue
        rel = os.path.relpath(out / "site_libs" / "katex", page.parent).replace(os.sep, "/")
        page.write_text(html.replace(KATEX, rel), encoding="utf-8")
        n += 1
    if n: shutil.copytree(katex, out / "site_libs" / "katex", dirs_exist_ok=True)
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-execute", action="store_true", help="use the saved notebooks, do not run them")
    ap.add_argument("--workers", type=int, default=2, help="notebooks executed at once")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per notebook")
    ap.add_argument("--out", default=str(ROOT / "_docs"), help="where the site goes")
    ap.add_argument("--proc", default=str(PROC), help="working folder for the processed notebooks")
    ap.add_argument("--strict", action="store_true", help="fail if a notebook fails to run or a page loads from the network")
    ap.add_argument("--exec-one", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.exec_one:
        execute_one(Path(a.exec_one[0]), Path(a.exec_one[1])); return 0

    t0 = time.time()
    os.chdir(ROOT)
    nbs = sorted(NBS.glob("*.ipynb")) + sorted((NBS / "lib").glob("*.ipynb"))  # lessons, pages and the library
    if len({nb.name for nb in nbs}) != len(nbs): raise SystemExit("two notebooks share a file name: the site needs unique names")
    if a.no_execute: sources = {nb: nb for nb in nbs}
    else:
        print(f"executing {len(nbs)} notebooks ({a.workers} at a time; cached in {EXEC_CACHE.relative_to(ROOT)}/)")
        sources = execute_all(nbs, a.workers, a.timeout)
    failed = [nb.name for nb, src in sources.items() if src == nb and not a.no_execute]  # failed to run
    failed += process(sources, Path(a.proc))
    out = Path(a.out)
    how = render(Path(a.proc), out, quiet=True)
    vendor_assets(out)
    pages = sorted(out.glob("*.html"))
    bad = {p.name: refs for p in pages if (refs := external_refs(p.read_text(encoding="utf-8", errors="replace")))}
    for name, refs in bad.items(): print(f"warning: {name} loads from the network: {refs[:3]}", file=sys.stderr)
    print(f"{how}: {len(pages)} pages in {out} ({time.time() - t0:.0f} s)"
          + (f"; notebooks that failed to run: {', '.join(failed)}" if failed else ""))
    return 1 if a.strict and (bad or failed) else 0


if __name__ == "__main__":
    sys.exit(main())
