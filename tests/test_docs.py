"Docs site, README and lesson list: generated from the notebooks, in sync, and working offline."
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(ROOT / "tools"))
import docs  # noqa: E402
import lessons  # noqa: E402


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
    assert docs.external_refs('<div style="background:url(https://example.org/a.png)"></div>')
    assert docs.external_refs("<style>@import url(https://fonts.googleapis.com/css2?family=X:wght@300;400);</style>")
    assert not docs.external_refs('<script src="site_libs/a.js"></script><a href="https://example.org">x</a>')
    assert not docs.external_refs('<pre><code>fetch("https://example.org/data.csv")  # url(https://x.org)</code></pre>')
    font = "@import url(https://fonts.googleapis.com/css2?family=Source+Sans+Pro:wght@300;400;700&display=swap);"
    assert docs.external_css_refs(font + ":root{--a:1}") == [font]
    assert docs.external_css_refs(".i{src:url('//cdn.example.org/f.woff2')}")
    assert not docs.external_css_refs(".i{src:url(fonts/f.woff2)} .j{background:url(data:image/png;base64,AA)}")
    # the theme's web-font import goes, with the ";" inside its URL, and nothing after it
    assert docs.WEB_FONTS.sub("", font + ":root{--a:1}") == ":root{--a:1}"


def test_widget_repr_becomes_a_note():
    "An output that is only a widget (its view and its text repr) reads as a note on the static page."
    view = {"model_id": "abc", "version_major": 2, "version_minor": 0}
    repr_ = ["VBox(children=(HBox(children=(Dropdown(", "…"]
    outs = [{"output_type": "execute_result", "data": {docs.WIDGET_MIME: view, "text/plain": repr_}},
            {"output_type": "display_data", "data": {docs.WIDGET_MIME: view, "text/plain": "Output()"}},
            {"output_type": "display_data", "data": {docs.WIDGET_MIME: view, "image/png": "iVBOR",
                                                     "text/plain": "HBox()"}},
            {"output_type": "execute_result", "data": {"text/plain": "VBox(children=())"}},  # no widget view: kept
            {"output_type": "stream", "name": "stdout", "text": "VBox("}]
    nb = {"cells": [{"cell_type": "code", "source": "", "outputs": outs}]}
    assert docs.static_outputs(nb) == 3
    for o in outs[:2]:
        assert o["data"]["text/plain"] == docs.WIDGET_NOTE and docs.WIDGET_NOTE in o["data"]["text/html"]
        assert docs.WIDGET_MIME not in o["data"]
    assert outs[2]["data"] == {"image/png": "iVBOR"}  # a picture beside the widget stays, the repr goes
    assert outs[3]["data"] == {"text/plain": "VBox(children=())"} and outs[4]["text"] == "VBox("


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site built from the saved notebooks (no execution: that is what `make docs` adds)."
    tmp = tmp_path_factory.mktemp("docs")
    r = _run("tools/docs.py", "--no-execute", "--out", tmp / "site", "--proc", tmp / "proc", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp / "site", r.stdout + r.stderr


# Hosts that vendored scripts name but only fetch for features this site does not use: plotly.js's geo traces
# (topojson from cdn.plot.ly) and map traces (marker icons from jsdelivr); the site has none
# (test_site_size_printed_and_plotly_shared checks).
JS_ALLOWED = {"plotly.min.js": ("cdn.plot.ly/un/", "cdn.jsdelivr.net/npm/@mapbox/maki")}
JS_LOADS = re.compile(r"""(?:fetch|importScripts|import)\s*\(\s*["'`](?:https?:)?//[^"'`]*"""
                      r"""|\.src\s*=\s*["'`](?:https?:)?//[^"'`]*"""
                      r"""|["'`](?:https?:)?//(?:fonts\.googleapis\.com|fonts\.gstatic\.com|cdn\.jsdelivr\.net|unpkg\.com"""
                      r"""|cdnjs\.cloudflare\.com|cdn\.plot\.ly|ajax\.googleapis\.com|use\.typekit\.net)[^"'`]*""")
MAP_TRACES = re.compile(r'"type":\s*"(?:scattergeo|choropleth|scattermap|scattermapbox|choroplethmap|choroplethmapbox'
                        r'|densitymap|densitymapbox)"')


def js_loads(name: str, js: str) -> list[str]:
    "What a script would fetch from another host, less what JS_ALLOWED excuses."
    return [h for h in JS_LOADS.findall(js) if not any(a in h for a in JS_ALLOWED.get(name, ()))]


def test_js_loads_detector():
    assert js_loads("a.js", 'fetch("https://example.org/x.json")') and js_loads("a.js", "s.src = '//cdn.x/y.js'")
    assert js_loads("a.js", 'const f = "https://fonts.googleapis.com/css2?family=Roboto"')
    assert not js_loads("a.js", 'fetch(offset + "search.json"); const ns = "http://www.w3.org/2000/svg"')
    assert not js_loads("plotly.min.js", 'topojsonURL:{dflt:"https://cdn.plot.ly/un/"}')


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
    "No page, stylesheet or script of the site loads anything from another host (web fonts included)."
    out, _ = site
    pages = list(out.rglob("*.html"))
    assert pages
    bad = {p.name: docs.external_refs(p.read_text(errors="replace")) for p in pages}
    assert not any(bad.values()), bad
    css = {c.relative_to(out).as_posix(): docs.external_css_refs(c.read_text(errors="replace"))
           for c in out.rglob("*.css")}
    assert css and not any(css.values()), css
    js = {j.relative_to(out).as_posix(): js_loads(j.name, j.read_text(errors="replace")) for j in out.rglob("*.js")}
    assert js and not any(js.values()), js
    assert not docs.offline_problems(out)
    assert "fonts.googleapis" not in (out / "site_libs" / "themes" / "cosmo.min.css").read_text()


def test_site_search_works_from_files(site):
    "The index ships as a script (fetch() is refused on file:// pages), every page loads the search shim."
    out, _ = site
    script = out / "site_libs" / "search-index.js"
    text = script.read_text(encoding="utf-8")
    prefix = "window.gynlabSearchIndex = "
    body = text[text.index(prefix) + len(prefix):].rstrip().rstrip(";")
    index = json.loads(body)
    assert index == json.loads((out / "search.json").read_text(encoding="utf-8"))
    hits = [e for e in index if "dice" in (e["title"] + " " + e.get("section", "") + " " + e["text"]).lower()]
    assert hits, "no search entry mentions Dice"
    assert all((out / e["href"].split("#")[0]).is_file() for e in hits)
    assert (out / "site_libs" / "offline-search.js").is_file()
    for page in out.rglob("*.html"):
        src = re.search(r'<script src="([^"]*offline-search\.js)"', page.read_text())
        assert src, f"{page.relative_to(out)} does not load offline-search.js"
        assert (page.parent / src.group(1)).resolve() == (out / "site_libs" / "offline-search.js").resolve()


def test_doc_links_are_local(site):
    """Code names link to this site's pages (relative), not to the published site named in settings.ini; a link stays
    absolute only when its page is missing because its notebook failed to process (the build log says which)."""
    out, log = site
    base = docs._doc_base()
    assert base.startswith("http")
    nbs = sorted((ROOT / "nbs").glob("*.ipynb")) + sorted((ROOT / "nbs" / "lib").glob("*.ipynb"))
    published = docs._published_pages(nbs)
    links = anchors = found = 0
    ids = {}
    for page in out.rglob("*.html"):
        html = page.read_text()
        for path in re.findall(r'href="' + re.escape(base) + r'([^"#?]*)', html):
            name = published.get(path, "?").replace(".html", ".ipynb")
            assert f"{name} left out of the site" in log, f"{page.relative_to(out)} still links to {base}{path}"
        for href in re.findall(r'<a href="([^":#]+\.html)#([^"]+)"><code>', html):
            target = (page.parent / href[0]).resolve()
            assert target.is_file(), f"{page.relative_to(out)} links to a missing page {href[0]}"
            if target not in ids: ids[target] = set(re.findall(r'\bid="([^"]+)"', target.read_text()))
            links += 1; anchors += 1; found += href[1] in ids[target]
    assert links >= 20, f"only {links} doc links to local pages"
    assert found >= 0.9 * anchors, f"{anchors - found} of {anchors} doc links point at anchors their page lacks"


def test_each_notebook_has_one_page(site):
    "Library notebooks are rendered once, processed (no raw copy of nbs/lib/ beside them)."
    out, _ = site
    for nb in (ROOT / "nbs" / "lib").glob("*.ipynb"):
        assert not (out / "lib" / (nb.stem + ".html")).exists(), f"a raw copy of {nb.name} in lib/"


def test_site_size_printed_and_plotly_shared(site):
    out, log = site
    m = re.search(r"site size: ([\d.]+) MB in (\d+) files", log)
    assert m, log[-2000:]
    assert float(m.group(1)) < 30, f"the site weighs {m.group(1)} MB"
    copies = [f for f in out.rglob("*.js") if "plotly.js v" in f.read_text(errors="replace")[:300]]
    assert len(copies) <= 1 and all(c.parent == out / "site_libs" for c in copies), copies
    for page in out.rglob("*.html"):
        html = page.read_text(errors="replace")
        assert "plotly.js v" not in html, f"{page.relative_to(out)} inlines plotly.js"
        assert not MAP_TRACES.search(html), f"{page.relative_to(out)} has a map figure, which loads tiles from the web"
        if "Plotly.newPlot" in html: assert "site_libs/plotly.min.js" in html


def test_executed_plotly_page_works_offline(tmp_path):
    "Executing for the docs: eval:false and slow cells skipped, figures without plotly.js, which the site ships once."
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
         "source": "go.Figure(go.Bar(y=[2, 1]), layout=dict(width=1500, height=320))"}],
        "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}
    proj = tmp_path / "proj"; proj.mkdir()
    src = tmp_path / "plot.ipynb"; src.write_text(json.dumps(nb))
    r = _run("tools/docs.py", "--exec-one", src, proj / "plot.ipynb", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cells = json.loads((proj / "plot.ipynb").read_text())["cells"]
    htmls = ["".join(o["data"]["text/html"]) for c in cells for o in c.get("outputs", [])
             if "text/html" in o.get("data", {})]
    assert len(htmls) == 2 and not any("plotly.js v" in h for h in htmls)
    assert all("Plotly.newPlot" in h and '"responsive": true' in h for h in htmls)
    assert '"width":1500' in htmls[1].replace(" ", "") and "320px" in htmls[1]  # plotly-fit.js narrows it if need be
    assert not cells[2]["outputs"] and not cells[3]["outputs"]
    shutil.copy(ROOT / "nbs" / "_quarto.yml", proj); shutil.copy(ROOT / "nbs" / "styles.css", proj)
    (proj / "sidebar.yml").write_text("website:\n  sidebar:\n    contents:\n      - plot.ipynb\n")
    r = subprocess.run([str(Path(PY).parent / "smalldocs"), "render", "-q", str(proj)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    done = docs.finish_site(proj / "_docs")
    assert done["plotly"] == 1 and done["search"]
    html = (proj / "_docs" / "plot.html").read_text()
    assert "Plot page" in html and "Plotly.newPlot" in html and "plotly.js v" not in html
    assert html.index('<script src="site_libs/plotly.min.js"') < html.index("Plotly.newPlot")
    assert (proj / "_docs" / "site_libs" / "plotly.min.js").read_text()[:200].count("plotly.js v") == 1
    assert not docs.external_refs(html) and not docs.offline_problems(proj / "_docs")


def test_checker_notebooks_are_not_published(site):
    "The exercise checkers hold the answers: the students' site must not carry them."
    out, _ = site
    assert not (out / "exercises").exists()
    names = {p.stem for p in (ROOT / "nbs" / "exercises").glob("*.ipynb")}
    assert not [p for p in out.rglob("*.html") if p.parent != out and p.stem in names]
