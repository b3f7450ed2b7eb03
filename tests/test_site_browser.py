"""The documentation site in a real browser, opened from files (file://) as a student opens _docs/index.html:
no request leaves the machine, search finds "Dice" and its results are readable, outputs fit their column.

Needs Debian's chromium at /usr/bin/chromium (installed with `apt-get install -y chromium` when it is missing and we
may) and Python playwright; never downloads a browser. Screenshots go to test-artifacts/site-*.png."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"
LOCAL = ("file:", "data:", "blob:", "about:")  # what a page opened from disk may ask for
sys.path.insert(0, str(ROOT / "tools"))
import docs  # noqa: E402

os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"  # never fetch a browser: we drive Debian's chromium


def _chromium() -> str:
    "Path of Debian's chromium, installing it if we can; skips the test with the reason when we cannot."
    if not Path(CHROMIUM).exists() and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        try: subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired): pass
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent and `apt-get install -y chromium` could not install it")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    exe = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


PAGES = ["index.ipynb", "30_segmentation.ipynb", "31_seg_metrics.ipynb"]  # the home page, Dice, maths (KaTeX)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built from the saved notebooks (no execution), as tests/test_docs.py builds it, but only the pages
    PAGES (the whole site takes a minute; tests/test_docs.py checks all its pages without a browser)."""
    tmp = tmp_path_factory.mktemp("site")
    r = subprocess.run([PY, "tools/docs.py", "--no-execute", "--only", *PAGES, "--out", str(tmp / "site"),
                        "--proc", str(tmp / "proc")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return tmp / "site"


WIDE = {"cells": [
    {"cell_type": "markdown", "metadata": {}, "source": "# Wide outputs\n\n> a figure, a table, a picture, a widget"},
    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
     "source": "import ipywidgets as W\nW.VBox([W.HBox([W.IntSlider(), W.Button(description='go')]), W.Output()])"},
    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
     "source": "import plotly.graph_objects as go\n"
               "go.Figure(go.Scatter(y=[1, 3, 2]), layout=dict(width=1600, height=300))"},
    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,  # a fixed width in hand-made HTML
     "source": "from IPython.display import HTML\n"
               "fig = go.Figure(go.Bar(y=[2, 1]), layout=dict(width=1400))\n"
               "HTML(fig.to_html(include_plotlyjs=False, full_html=False))"},
    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
     "source": "import pandas as pd\npd.DataFrame({f'a_rather_long_column_name_{i}': range(3) for i in range(30)})"},
    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
     "source": "from PIL import Image\nImage.new('RGB', (2400, 120), (200, 30, 30))"}],
    "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def wide_site(tmp_path_factory):
    """A one-page site whose outputs are all too wide for the text column (a 1600 px plotly figure, a 1400 px one in
    hand-made HTML, a 30-column table, a 2400 px picture) and a widget, executed and finished as `make docs` does."""
    tmp = tmp_path_factory.mktemp("wide")
    proj = tmp / "proj"; proj.mkdir()
    (tmp / "wide.ipynb").write_text(json.dumps(WIDE))
    r = subprocess.run([PY, "tools/docs.py", "--exec-one", str(tmp / "wide.ipynb"), str(tmp / "run.ipynb")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    nb = json.loads((tmp / "run.ipynb").read_text())
    assert docs.static_outputs(nb) == 1
    (proj / "wide.ipynb").write_text(json.dumps(nb))
    shutil.copy(ROOT / "nbs" / "_quarto.yml", proj); shutil.copy(ROOT / "nbs" / "styles.css", proj)
    (proj / "index.md").write_text("# Home\n\nSee [the wide page](wide.html).\n")
    (proj / "sidebar.yml").write_text("website:\n  sidebar:\n    contents:\n      - index.md\n      - wide.ipynb\n")
    r = subprocess.run([str(Path(PY).parent / "smalldocs"), "render", "-q", str(proj)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    done = docs.finish_site(proj / "_docs")
    assert done["plotly"] == 1
    return proj / "_docs"


def _open(browser, url, width=1280):
    "A new page at `url`, with every request it makes recorded in page.requests (and failures in page.failed)."
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.requests, page.failed, page.errors = [], [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("requestfailed", lambda r: page.failed.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url, wait_until="load")
    return page


def _remote(page) -> list[str]:
    return [u for u in page.requests if not u.startswith(LOCAL)]


def _shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


# WCAG contrast of an element's text against the background it is drawn on (the first opaque one up the tree)
CONTRAST = """(el) => {
  const rgba = (s) => { const v = (s.match(/[\\d.]+/g) || []).map(Number);
                        return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1]; };
  let bg = null;
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0.99) { bg = c; break; }
  }
  bg = bg || [255, 255, 255, 1];
  const fg = rgba(getComputedStyle(el).color), a = fg[3];
  const mix = [0, 1, 2].map((i) => fg[i] * a + bg[i] * (1 - a));
  const lum = (c) => { const l = c.map((x) => { x /= 255;
                                                 return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
                       return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2]; };
  const [hi, lo] = [lum(mix), lum(bg)].sort((x, y) => y - x);
  return {ratio: (hi + 0.05) / (lo + 0.05), color: getComputedStyle(el).color, background: `rgb(${bg.slice(0, 3)})`};
}"""


def test_pages_make_no_network_request(browser, site):
    "The home page and a lesson with maths, opened from files, ask nothing of the network (fonts included)."
    for name in ["index.html", "31_seg_metrics.html"]:
        if not (site / name).exists(): continue
        page = _open(browser, (site / name).as_uri())
        page.wait_for_timeout(300)
        assert page.requests, "no request recorded at all: is the page empty?"
        assert not _remote(page), f"{name} asks the network for {_remote(page)[:5]}"
        assert not page.failed, f"{name}: requests that failed: {page.failed[:5]}"
        assert not page.errors, f"{name}: script errors {page.errors[:3]}"
        if name == "index.html": _shot(page, "site-index.png")
        page.close()


def test_search_from_files(browser, site):
    "Typing Dice in the search box over file:// lists results, readable, that lead to a page of the site."
    page = _open(browser, (site / "index.html").as_uri())
    box = page.locator(".smalldocs-search input, #quarto-search input").first
    box.click()
    box.type("Dice", delay=20)
    first = page.locator(".search-result").first
    first.wait_for(state="visible", timeout=10_000)
    results = page.locator(".search-result")
    assert results.count() >= 1
    assert "dice" in results.all_inner_texts()[0].lower() or any("dice" in t.lower() for t in results.all_inner_texts())
    _shot(page, "site-search.png")
    for part in [".search-result-title", ".search-result-text"]:
        el = first.locator(part)
        if not el.count(): continue
        c = el.evaluate(CONTRAST)
        assert c["color"] != c["background"] and c["ratio"] >= 4.5, f"{part} unreadable: {c}"
    assert not _remote(page), _remote(page)
    href = first.get_attribute("href")
    first.click()
    page.wait_for_load_state("load")
    landed = page.url.split("#")[0]
    assert landed.startswith("file:") and landed.endswith(href.split("#")[0].lstrip("./")), (page.url, href)
    assert not page.errors, page.errors[:3]
    page.close()


@pytest.mark.parametrize("width", [1280, 700])
def test_outputs_fit_their_column(browser, wide_site, width):
    "Figures, tables and pictures stay inside the main column; the widget reads as a note; plotly.js from site_libs."
    page = _open(browser, (wide_site / "wide.html").as_uri(), width)
    page.wait_for_selector(".plotly-graph-div .main-svg", timeout=15_000)  # plotly.js loaded from site_libs and drew
    page.wait_for_timeout(300)  # plotly-fit.js lays out again, on load, the figure that fixed its width
    m = page.evaluate("""() => {
      const main = document.querySelector('main');
      const right = main.getBoundingClientRect().right + 1;
      const over = [...main.querySelectorAll('.cell-output-display, .plotly-graph-div, .main-svg, img, table')]
        .filter((e) => e.getBoundingClientRect().right > right).map((e) => e.tagName + '.' + e.className);
      return {scroll: main.scrollWidth, client: main.clientWidth, doc: document.documentElement.scrollWidth,
              inner: window.innerWidth, over, text: main.innerText};
    }""")
    _shot(page, f"site-wide-{width}.png")
    assert m["scroll"] <= m["client"] + 1, f"the main column overflows: {m['scroll']} > {m['client']}"
    assert m["doc"] <= m["inner"], "the page scrolls sideways"
    assert not m["over"], f"wider than the main column: {m['over']}"
    assert docs.WIDGET_NOTE in m["text"] and "VBox(children=" not in m["text"]
    assert not _remote(page) and not page.errors, (_remote(page), page.errors[:3])
    srcs = [u for u in page.requests if u.endswith("plotly.min.js")]
    assert len(srcs) == 1 and "/site_libs/" in srcs[0]
    assert page.locator(".plotly-graph-div .main-svg").count() >= 2 * 2  # both figures drew (a main-svg has a twin)
    page.close()


def _built_pages_with_figures(limit=3):
    "Lesson pages with figures in _docs/ when `make docs` has built it with the shared plotly.js."
    docs_dir = ROOT / "_docs"
    if not (docs_dir / "site_libs" / "plotly.min.js").exists(): return []
    pages = [p for p in sorted(docs_dir.glob("[0-9][0-9]_*.html")) if "Plotly.newPlot" in p.read_text(errors="replace")]
    return pages[:limit]


def test_built_lesson_pages_fit(browser):
    "On the site `make docs` built (executed lessons), pages with figures stay within their column, offline."
    pages = _built_pages_with_figures()
    if not pages: pytest.skip("no _docs/ built by `make docs` with plotly figures: run `make docs` first")
    for p in pages:
        page = _open(browser, p.as_uri())
        page.wait_for_timeout(500)
        m = page.evaluate("() => { const m = document.querySelector('main'); return [m.scrollWidth, m.clientWidth]; }")
        assert m[0] <= m[1] + 1, f"{p.name}: the main column overflows ({m[0]} > {m[1]})"
        assert not _remote(page), f"{p.name} asks the network for {_remote(page)[:5]}"
        assert not re.search(r"\bVBox\(children=", page.inner_text("main")), f"{p.name} shows a widget's repr"
        page.close()
