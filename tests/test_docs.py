"Docs site, README and lesson list: generated from the notebooks, in sync, and working offline."
import json, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(ROOT / "tools"))
import docs, lessons  # noqa: E402


def _run(*args, **kw):
    return subprocess.run([PY, *map(str, args)], cwd=ROOT, capture_output=True, text=True, **kw)


def test_readme_in_sync_with_index(tmp_path):
    out = tmp_path / "README.md"
    assert _run("tools/readme.py", "--out", out).returncode == 0
    assert out.read_text() == (ROOT / "README.md").read_text(), "README.md is stale: run `make readme`"
    text = out.read_text()
    assert "make lab" in text and "make test" in text and "Not for clinical use" in text
    assert text.index("make lab") < text.index("make docs")  # the two commands come first
    assert "#|" not in text


def test_sidebar_and_lesson_map_in_sync():
    r = _run("tools/lessons.py", "--check")
    assert r.returncode == 0, r.stderr
    sidebar = (ROOT / "nbs" / "sidebar.yml").read_text()
    for nb in (ROOT / "nbs").glob("[0-9][0-9]_*.ipynb"): assert nb.name in sidebar


def test_external_refs_detector():
    assert docs.external_refs('<script src="https://cdn.plot.ly/x.js"></script>')
    assert docs.external_refs("<link rel=stylesheet href='//fonts.example.org/a.css'>")
    assert not docs.external_refs('<script src="site_libs/a.js"></script><a href="https://example.org">x</a>')


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site built from the saved notebooks (no execution: that is what `make docs` adds)."
    tmp = tmp_path_factory.mktemp("docs")
    r = _run("tools/docs.py", "--no-execute", "--out", tmp / "site", "--proc", tmp / "proc", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp / "site", r.stdout + r.stderr


def test_site_has_index_and_one_page_per_lesson(site):
    out, log = site
    assert (out / "index.html").exists()
    for nb in sorted((ROOT / "nbs").glob("[0-9][0-9]_*.ipynb")):
        page = out / (nb.stem + ".html")
        assert page.exists(), f"no page for {nb.name}:\n{log}"
        title = lessons.notebook_info(nb)["title"]
        html = page.read_text()
        assert title.split("`")[0].strip() in html, f"{page.name} lacks its title {title!r}"


def test_site_loads_nothing_from_the_network(site):
    out, _ = site
    pages = list(out.rglob("*.html"))
    assert pages
    bad = {p.name: docs.external_refs(p.read_text(errors="replace")) for p in pages}
    assert not any(bad.values()), bad


def test_executed_plotly_page_works_offline(tmp_path):
    "Executing for the docs: eval:false and slow cells skipped, plotly.js inlined once, no CDN."
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# Plot page\n\n> a test page"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "import plotly.graph_objects as go\nx = 1"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "#| eval: false\nraise RuntimeError('starter cells must not run')"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "#| slow\nraise RuntimeError('slow cells must not run')"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "go.Figure(go.Scatter(y=[1, 3, 2]))"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "go.Figure(go.Bar(y=[2, 1]))"}],
        "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}
    proj = tmp_path / "proj"; proj.mkdir()
    src = tmp_path / "plot.ipynb"; src.write_text(json.dumps(nb))
    r = _run("tools/docs.py", "--exec-one", src, proj / "plot.ipynb", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cells = json.loads((proj / "plot.ipynb").read_text())["cells"]
    htmls = ["".join(o["data"]["text/html"]) for c in cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert len(htmls) == 2 and "plotly.js v" in htmls[0] and "plotly.js v" not in htmls[1]
    assert not cells[2]["outputs"] and not cells[3]["outputs"]
    shutil.copy(ROOT / "nbs" / "_quarto.yml", proj); shutil.copy(ROOT / "nbs" / "styles.css", proj)
    (proj / "sidebar.yml").write_text("website:\n  sidebar:\n    contents:\n      - plot.ipynb\n")
    r = subprocess.run([str(Path(PY).parent / "smalldocs"), "render", "-q", str(proj)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    html = (proj / "_docs" / "plot.html").read_text()
    assert "Plot page" in html and "Plotly.newPlot" in html and "plotly.js v" in html
    assert not docs.external_refs(html)
