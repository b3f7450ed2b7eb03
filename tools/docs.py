"""Build the documentation site from the notebooks into _docs/ (`make docs`).

1. Execute each notebook (as `nbdev_test` does: `#| eval: false`, `#| slow` and the `nbdev_export` cell are
   skipped) in its own process, into .cache/docs-exec/. Results are cached by the notebook's and the package's
   content, so a second build re-runs only what changed. Plotly figures get an HTML rendering without plotly.js
   (the site ships one copy). `--no-execute` uses the saved (clean) notebooks instead.
2. Process them with nbdev's doc processors (`FilterDefaults`: hides `#| hide` cells, adds `show_doc` for
   exported symbols, ...) into _proc/, with _quarto.yml, sidebar.yml and styles.css. An output that is only a
   widget (its text repr, `VBox(children=…`) becomes a short note: a static page cannot run it.
3. Render _proc/ with Quarto when `quarto` is on PATH (what `nbdev_docs` does), otherwise with the pure-Python
   `smalldocs render`, and move the site to _docs/.
4. Make the site work offline, from file:// as well as over http (`finish_site`): KaTeX served locally, no web
   fonts, the search index shipped as a script (browsers refuse fetch() on file:// pages), nbdev's doc links to the
   published site turned into links between local pages, one shared site_libs/plotly.min.js (and plotly-fit.js: no
   figure wider than its column). Then check that no page or stylesheet loads anything from the network, and print
   the site's size.

    python tools/docs.py [--no-execute] [--workers N] [--out DIR] [--proc DIR] [--only NB ...] [--strict]
"""
from __future__ import annotations
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
EXEC_CACHE = ROOT / ".cache" / "docs-exec"
PROC = ROOT / "_proc"
EXTERNAL = re.compile(r"""<(?:script|link|img|iframe|source|video|audio|embed|object|track|input)\b[^>]*\b"""
                      r"""(?:src|href|srcset|data|poster)\s*=\s*["']?(?:https?:)?//""", re.I)
# in CSS (a stylesheet, a <style> block or a style="" attribute): @import and url() of another host
_CSS_URL = r"""(?:url\(\s*["']?(?:https?:)?//[^)]*\)|"(?:https?:)?//[^"]*"|'(?:https?:)?//[^']*')"""  # url(//…), "//…"
EXTERNAL_CSS = re.compile(r"@import\s+" + _CSS_URL + r"[^;]*;?|" + r"""url\(\s*["']?(?:https?:)?//[^)]*\)""", re.I)
STYLES = re.compile(r"""<style\b[^>]*>([\s\S]*?)</style>|\bstyle\s*=\s*("[^"]*"|'[^']*')""", re.I)  # CSS inside HTML
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "Interactive widget: run this notebook in JupyterLab to use it."
WIDGET_REPR = re.compile(r"^\s*[A-Za-z_][\w.]*\(")  # VBox(children=(…, HBox(…, Output(…, FigureWidget({…, IntSlider(…
RICH = ("text/html", "text/markdown", "text/latex", "image/svg+xml", "image/png", "image/jpeg", "image/gif")


def external_refs(html: str) -> list[str]:
    "What in `html` loads a script, stylesheet, image, frame or font from another host (tags and inline CSS)."
    css = [r for m in STYLES.finditer(html) for r in external_css_refs(m.group(1) or m.group(2))]
    return [m.group(0) for m in EXTERNAL.finditer(html)] + css


def external_css_refs(css: str) -> list[str]:
    "The `@import`s and `url()`s in `css` that point at another host."
    return [m.group(0) for m in EXTERNAL_CSS.finditer(css)]


# ---------------------------------------------------------------- 1. execute
def _skip_flags() -> set[str]:
    from nbdev.config import get_config
    return set(get_config().get("tst_flags", "").split())


def _plotly_html(nb) -> int:
    """Give every plotly figure output a text/html rendering without plotly.js (`finish_site` gives each page that
    has figures a <script src> to the site's one copy, and plotly-fit.js); returns the count. A figure without a
    fixed width fills its column and follows it (`responsive`); one with a fixed width keeps it where the column is
    wide enough, and plotly-fit.js narrows it to the column where it is not."""
    import plotly.io as pio
    n = 0
    for c in nb.cells:
        for o in c.get("outputs", []):
            data = o.get("data", {})
            fig = data.get("application/vnd.plotly.v1+json")
            if fig is None: continue
            fig = json.loads(fig) if isinstance(fig, str) else dict(fig)
            height = (fig.get("layout") or {}).get("height")
            data["text/html"] = pio.to_html(fig, include_plotlyjs=False, full_html=False, default_width="100%",
                                            default_height=f"{height}px" if height else "450px",
                                            config={**(fig.get("config") or {}), "responsive": True})
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


EXEC_VERSION = "4"  # bump when the way notebooks are executed changes, to invalidate the cache


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
            if trees and P._ast_contains(trees, (ast.Import, ast.ImportFrom)) \
                    and P._ast_contains(trees, (ast.Expr, ast.Assign)):
                return None
        return orig(cell)
    _do_eval._gynlab = True
    P._do_eval = _do_eval


def _text(v) -> str: return "".join(v) if isinstance(v, list) else (v if isinstance(v, str) else "")


def static_outputs(nb) -> int:
    """Outputs a static page cannot show, made readable: an output that holds a widget view and, as text, only the
    widget's repr (`VBox(children=(HBox(…`) becomes a short note; with a picture or HTML beside the widget view, the
    repr is dropped and the picture stays. Works on a notebook dict or an execnb one; returns the outputs changed."""
    n = 0
    for c in nb["cells"]:
        for o in c.get("outputs", []) or []:
            data = o.get("data") or {}
            if WIDGET_MIME not in data: continue
            text = _text(data.get("text/plain"))
            if text and not WIDGET_REPR.match(text): continue  # a real text rendering: keep it
            del data[WIDGET_MIME]
            if any(m in data for m in RICH): data.pop("text/plain", None)
            else:
                data.clear()
                data["text/html"] = f'<div class="gynlab-widget-note"><p>{WIDGET_NOTE}</p></div>'
                data["text/plain"] = WIDGET_NOTE
            n += 1
    return n


NOT_PUBLISHED = {"exercises"}  # the checkers hold the answers: for instructors, not for the students' site


def process(sources: dict[Path, Path], proc: Path, notebooks=None) -> list[str]:
    """nbdev's doc processing of each notebook into `proc`, plus the site's other files; returns those that failed.
    `notebooks` (default: those of `sources`) are never copied raw with their folder (nbs/lib/)."""
    from execnb.nbio import read_nb, write_nb
    from nbdev.processors import FilterDefaults
    _patch_show_doc_eval()
    if proc.exists(): shutil.rmtree(proc)
    proc.mkdir(parents=True)
    failed = []
    for nb, src in sources.items():
        try:  # what nbdev.serve_drv.exec_nb does, with the outputs made static first
            doc = read_nb(src)
            static_outputs(doc)
            FilterDefaults()(doc)
            write_nb(doc, proc / nb.name)
        except Exception as e:  # e.g. its module does not import: leave the page out, say so
            cause = f" ({type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
            print(f"warning: {nb.name} left out of the site: {str(e).splitlines()[0]}{cause}", file=sys.stderr)
            failed.append(nb.name)
    done = {nb.resolve() for nb in (notebooks or sources)}  # processed (flat in `proc`): no second, raw copy of them
    skip = lambda d, names: [n for n in names if (Path(d) / n).resolve() in done]  # noqa: E731
    for f in NBS.iterdir():  # _quarto.yml, sidebar.yml, styles.css, images ...
        if f.suffix == ".ipynb" or f.name.startswith(".") or f.name in NOT_PUBLISHED: continue
        if f.is_dir(): shutil.copytree(f, proc / f.name, ignore=skip)
        else: shutil.copy2(f, proc / f.name)
    return failed


# ---------------------------------------------------------------- 3. render
def render(proc: Path, out: Path, quiet: bool = False) -> str:
    "Render `proc` with Quarto or smalldocs; move the site to `out`; returns the renderer used."
    built = proc / "_docs"  # _quarto.yml: output-dir: _docs
    if shutil.which("quarto"):
        subprocess.run(["quarto", "render", str(proc), "--no-cache"], check=True)
        how = "quarto"
    else:
        smalldocs = str(Path(sys.executable).parent / "smalldocs")
        subprocess.run([smalldocs, "render", str(proc)] + (["-q"] if quiet else []), check=True)
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


# ---------------------------------------------------------------- 4. offline site
PLOTLY_BUNDLE = re.compile(r"<script\b[^>]*>\s*/\*\*?\s*\*?\s*plotly\.js v[\s\S]*?</script>", re.I)  # an inlined copy
PLOTLY_CONFIG = re.compile(r"<script\b[^>]*>\s*window\.PlotlyConfig\s*=\s*\{[^<]*</script>")
WEB_FONTS = re.compile(r"@import\s+" + _CSS_URL + r"[^;]*;", re.I)  # the URL may hold ";" (wght@300;400)


def _rel(target: Path, page: Path) -> str:
    return os.path.relpath(target, page.parent).replace(os.sep, "/")


def _inject(html: str, tag: str) -> str:
    "`html` with `tag` as the last thing of its <head> (once)."
    if tag in html: return html
    i = html.lower().find("</head>")
    return html[:i] + tag + html[i:] if i >= 0 else tag + html


def local_fonts(out: Path) -> int:
    """Stylesheets that `@import` web fonts (the Bootswatch themes import Google Fonts) lose the import: the themes'
    font stacks fall back to the system's fonts. Returns the number of stylesheets changed."""
    n = 0
    for css in out.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        new = WEB_FONTS.sub("", text)
        if new != text: css.write_text(new, encoding="utf-8"); n += 1
    return n


def offline_search(out: Path, pages: list[Path]) -> bool:
    """Chromium refuses fetch() on file:// pages, so search.json is also shipped as site_libs/search-index.js
    (`window.gynlabSearchIndex = [...]`), and every page gets site_libs/offline-search.js, which answers the search's
    fetch of search.json from that script (loaded on first use) and falls back to the network over http."""
    index = out / "search.json"
    if not index.exists(): return False
    libs = out / "site_libs"; libs.mkdir(exist_ok=True)
    entries = json.loads(index.read_text(encoding="utf-8"))
    (libs / "search-index.js").write_text(
        "// the site's search index (search.json) as a script: pages opened from file:// cannot fetch() it\n"
        "window.gynlabSearchIndex = " + json.dumps(entries, ensure_ascii=False, separators=(",", ":")) + ";\n",
        encoding="utf-8")
    shutil.copy2(ROOT / "tools" / "vendor" / "offline-search.js", libs / "offline-search.js")
    for page in pages:
        html = page.read_text(encoding="utf-8")
        new = _inject(html, f'<script src="{_rel(libs / "offline-search.js", page)}"></script>')
        if new != html: page.write_text(new, encoding="utf-8")
    return True


def _doc_base() -> str:
    "The published site's address that nbdev's doc links start with (doc_host + doc_baseurl in settings.ini)."
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    host, base = cfg.get("doc_host", "").rstrip("/"), cfg.get("doc_baseurl", "").strip("/")
    return f"{host}/{base}/" if base else f"{host}/"


def _published_pages(notebooks: list[Path]) -> dict[str, str]:
    "nbdev's address of each notebook's page (as in gynlab/_modidx.py: lib/00_core.ipynb -> lib/core.html) -> ours."
    from nbdev.doclinks import _nbpath2html
    pages = {}
    for nb in notebooks:
        try: rel = nb.resolve().relative_to(NBS.resolve())
        except ValueError: continue
        pages[_nbpath2html(rel).as_posix()] = nb.stem + ".html"  # processed notebooks are rendered flat: NN_name.html
    return pages


def local_doc_links(out: Path, pages: list[Path], notebooks: list[Path], base: str | None = None) -> tuple[int, int]:
    """nbdev links code names to the published site (https://<doc_host><doc_baseurl>/training.html#fit); point them at
    this site's page instead (relative: 11_training.html#fit) when it has that page. Returns (links rewritten, left)."""
    base = base or _doc_base()
    published = _published_pages(notebooks)
    link = re.compile(r"""(\bhref\s*=\s*)(["'])""" + re.escape(base.rstrip("/")) + r"""(?:/([^"'#?]*))?([^"']*)\2""")
    done = left = 0

    def target(path: str) -> Path | None:
        path = path or "index.html"
        for cand in (published.get(path), path, Path(path).name):
            if cand and (out / cand).is_file(): return out / cand
        return None

    unpublished = re.compile(r"""<a\b[^>]*\bhref\s*=\s*["']""" + re.escape(base.rstrip("/")) + "/(?:"
                             + "|".join(map(re.escape, sorted(NOT_PUBLISHED)))
                             + r""")/[^"']*["'][^>]*>(.*?)</a>""", re.S)
    for page in pages:
        html = unpublished.sub(r"\1", page.read_text(encoding="utf-8"))  # checkers are not published: plain text

        def swap(m):
            nonlocal done, left
            t = target(m.group(3))
            if t is None: left += 1; return m.group(0)
            done += 1
            return f"{m.group(1)}{m.group(2)}{_rel(t, page)}{m.group(4)}{m.group(2)}"
        new = link.sub(swap, html)
        if new != page.read_text(encoding="utf-8"): page.write_text(new, encoding="utf-8")
    return done, left


def shared_plotly(out: Path, pages: list[Path]) -> int:
    """One plotly.js for the whole site: inlined copies are removed from the pages, site_libs/plotly.min.js (from the
    installed plotly package) is written once, and each page with a figure loads it. Returns the pages with figures."""
    users = []
    for page in pages:
        html = page.read_text(encoding="utf-8")
        new = PLOTLY_CONFIG.sub("", PLOTLY_BUNDLE.sub("", html))
        if "Plotly.newPlot" in new or "plotly-graph-div" in new:
            users.append(page)
            # in <head>, not deferred: each figure's inline script calls Plotly.newPlot as the page is parsed
            src = _rel(out / "site_libs" / "plotly.min.js", page)
            new = _inject(new, f'<script src="{src}" charset="utf-8"></script>')
            # and a figure that still fixes a width wider than its column is laid out again to fit it
            new = _inject(new, f'<script src="{_rel(out / "site_libs" / "plotly-fit.js", page)}"></script>')
        if new != html: page.write_text(new, encoding="utf-8")
    if users:
        from plotly.offline import get_plotlyjs
        (out / "site_libs").mkdir(exist_ok=True)
        (out / "site_libs" / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
        shutil.copy2(ROOT / "tools" / "vendor" / "plotly-fit.js", out / "site_libs" / "plotly-fit.js")
    return len(users)


def site_size(out: Path) -> tuple[int, int]:
    "(bytes, files) of the site."
    files = [f for f in out.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files), len(files)


def offline_problems(out: Path) -> dict[str, list[str]]:
    "What each page or stylesheet of the site would load from another host (empty when the site is offline)."
    bad = {}
    for f in sorted(out.rglob("*")):
        if f.suffix not in (".html", ".css"): continue
        text = f.read_text(encoding="utf-8", errors="replace")
        refs = external_refs(text) if f.suffix == ".html" else external_css_refs(text)
        if refs: bad[f.relative_to(out).as_posix()] = refs
    return bad


def finish_site(out: Path, notebooks: list[Path] = ()) -> dict:
    "Everything step 4 does to the rendered site in `out`; returns what it did."
    pages = sorted(out.rglob("*.html"))
    report = dict(katex=vendor_assets(out), fonts=local_fonts(out), search=offline_search(out, pages),
                  plotly=shared_plotly(out, pages))
    report["links"], report["links_left"] = local_doc_links(out, pages, list(notebooks)) if notebooks else (0, 0)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-execute", action="store_true", help="use the saved notebooks, do not run them")
    ap.add_argument("--workers", type=int, default=2, help="notebooks executed at once")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per notebook")
    ap.add_argument("--out", default=str(ROOT / "_docs"), help="where the site goes")
    ap.add_argument("--proc", default=str(PROC), help="working folder for the processed notebooks")
    ap.add_argument("--strict", action="store_true",
                    help="fail if a notebook fails to run or a page loads from the network")
    ap.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                    help="build only these notebooks (file names): a quick look")
    ap.add_argument("--exec-one", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.exec_one:
        execute_one(Path(a.exec_one[0]), Path(a.exec_one[1])); return 0

    t0 = time.time()
    os.chdir(ROOT)
    nbs = sorted(NBS.glob("*.ipynb")) + sorted((NBS / "lib").glob("*.ipynb"))  # lessons, pages and the library
    if len({nb.name for nb in nbs}) != len(nbs):
        raise SystemExit("two notebooks share a file name: the site needs unique names")
    everything = nbs
    if a.only:
        unknown = set(a.only) - {nb.name for nb in nbs}
        if unknown: raise SystemExit(f"no such notebook: {', '.join(sorted(unknown))}")
        nbs = [nb for nb in nbs if nb.name in a.only]
    if a.no_execute: sources = {nb: nb for nb in nbs}
    else:
        print(f"executing {len(nbs)} notebooks ({a.workers} at a time; cached in {EXEC_CACHE.relative_to(ROOT)}/)")
        sources = execute_all(nbs, a.workers, a.timeout)
    failed = [nb.name for nb, src in sources.items() if src == nb and not a.no_execute]  # failed to run
    failed += process(sources, Path(a.proc), everything)
    out = Path(a.out)
    how = render(Path(a.proc), out, quiet=True)
    done = finish_site(out, everything)
    pages = sorted(out.glob("*.html"))
    bad = offline_problems(out)
    for name, refs in bad.items(): print(f"warning: {name} loads from the network: {refs[:3]}", file=sys.stderr)
    if done["links_left"]:
        print(f"warning: {done['links_left']} doc links point at pages this site lacks", file=sys.stderr)
    size, files = site_size(out)
    print(f"{how}: {len(pages)} pages in {out} ({time.time() - t0:.0f} s); {done['links']} doc links made local, "
          f"plotly.js shared by {done['plotly']} pages"
          + (f"; notebooks that failed: {', '.join(failed)}" if failed else ""))
    print(f"site size: {size / 2**20:.1f} MB in {files} files")
    return 1 if a.strict and (bad or failed) else 0


if __name__ == "__main__":
    sys.exit(main())
