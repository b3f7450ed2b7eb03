"""The explorer lesson in a real browser: JupyterLab (1440 px window) runs nbs/51_explorer.ipynb (a copy, in a temp
dir); headless Chromium checks what a student sees — the truth in the case labels is the run's Bethesda column and
the ✗ marks are exactly the cases whose prediction differs from it; the controls wrap inside the output area, the
figure is no wider than it (nor than 900 px), the case label is never hidden (full text as the tooltip) — then drives
the widget (method, case, the compare view) and checks that the overlay and the probabilities change.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`) and Python playwright; never downloads
a browser. Leaves screenshots in test-artifacts/: explorer.png (the widget), explorer-compare.png (compare methods),
explorer-lab-1440.png (the whole window)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]
# Console errors we accept, each with the reason:
BENIGN = [
    "favicon",                    # no favicon at some paths: a 404 in the console, nothing to do with the widget
    "Failed to load resource",    # same family: 404s for optional assets (lab's optional settings/translations)
    "/api/translations",          # JupyterLab asks for language packs that are not installed
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} is absent: apt-get install -y chromium")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    work = tmp_path / "nb"; work.mkdir()
    # the lesson as stored: its kernelspec names python3, so JupyterLab does not ask which kernel to use
    (work / "51_explorer.ipynb").write_bytes((ROOT / "nbs" / "51_explorer.ipynb").read_bytes())
    cfg = tmp_path / "cfg" / "labconfig"; cfg.mkdir(parents=True)
    news = "@jupyterlab/apputils-extension:announcements"
    (cfg / "page_config.json").write_text(json.dumps({"disabledExtensions": {news: True}}))
    tracker = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"; tracker.mkdir(parents=True)
    # paint every cell (screenshot)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    port = _free_port()
    jupyter = Path(sys.executable).parent / "jupyter"
    log = open(tmp_path / "lab.log", "w")
    p = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ServerApp.token=", "--ServerApp.password=",
                          "--ServerApp.ip=127.0.0.1", f"--port={port}", "--allow-root", f"--notebook-dir={work}"],
                         cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if p.poll() is not None:
                pytest.fail(f"jupyter lab exited with {p.returncode}: {(tmp_path / 'lab.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/lab", timeout=5) as r:
                    if r.status == 200: break
            except OSError: time.sleep(1)
        else: pytest.fail("JupyterLab did not start within 90 s")
        yield base
    finally:
        try: os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); p.wait(10)
        log.close()


def _state(page):
    "What the first explorer shows: its status line and the plotly traces (overlay PNG, probabilities)."
    return page.evaluate("""() => {
        const root = document.querySelector('.gynlab-explorer');
        if (!root) return null;
        const st = root.querySelector('.gynlab-explorer-status');
        const g = root.querySelector('.js-plotly-plot');
        return {status: st ? st.textContent : '', state: st ? st.getAttribute('data-state') : '',
                overlay: g && g.data ? g.data[2].source : null, probs: g && g.data ? Array.from(g.data[3].x) : null};
    }""")


def _wait_for(page, pred, timeout_s, what):
    deadline, s = time.time() + timeout_s, None
    while time.time() < deadline:
        s = _state(page)
        if s and pred(s): return s
        page.wait_for_timeout(500)
    last = s and {k: (v[:80] if isinstance(v, str) else v) for k, v in s.items()}
    raise AssertionError(f"timed out waiting for {what}; last state: {last}")


def _run_all(page, tries: int = 4):
    """Run ▸ Run All Cells, until the kernel has started on the first code cell. On a busy machine the status bar
    can say 'idle' before the kernel takes requests, and a Run All sent then executes nothing: try again."""
    for _ in range(tries):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        for _ in range(30):
            page.wait_for_timeout(500)
            if any(p.strip() not in ("", "[ ]:") for p in page.locator(".jp-InputPrompt").all_inner_texts()): return
    raise AssertionError("Run All Cells executed nothing: the kernel never took the request")


def _wait_until_all_ran(page, timeout_s=600):
    "Until no cell is queued or running ([*]) and the kernel is idle: widget events wait for a busy kernel."
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        prompts = page.locator(".jp-InputPrompt").all_inner_texts()
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count()
        if idle and not any("*" in p for p in prompts): return
        page.wait_for_timeout(1000)
    raise AssertionError("the lesson did not finish running")


LAYOUT = """() => {
    const root = document.querySelector('.gynlab-explorer');
    const area = root.closest('.jp-OutputArea-output').getBoundingClientRect();
    const r = e => e.getBoundingClientRect();
    const controls = Array.from(root.querySelectorAll('.widget-dropdown, .widget-slider, .widget-toggle-buttons'));
    const sel = root.querySelector('.widget-dropdown select');
    const opt = sel.options[sel.selectedIndex];
    const plain = t => t.replace(/\u00a0/g, ' ');   // ipywidgets writes option labels with no-break spaces
    const g = root.querySelector('.js-plotly-plot');
    return {area: [area.left, area.right], widget: [r(root).left, r(root).right],
            controls: controls.map(c => [r(c).left, r(c).right, r(c).top]),
            figure: r(g).width, caseWidth: r(sel).width, caseText: plain(opt.text),
            caseTitle: sel.title || sel.closest('.widget-dropdown').title,
            caseTextWidth: (() => { const c = document.createElement('canvas').getContext('2d');
                                    c.font = getComputedStyle(sel).font; return c.measureText(opt.text).width; })(),
            options: Array.from(sel.options).map(o => plain(o.text))};
}"""


def _check_labels(options):
    "Truth = the run's Bethesda column; ✗ exactly where the labelled prediction differs from the labelled truth."
    import re
    seen = 0
    for text in options:
        m = re.match(r"#\d+( ✗)?: truth (\S+), pred (\S+) \(", text)
        assert m, f"case label without truth and prediction: {text!r}"
        cross, truth, pred = m.groups()
        assert truth in ("NILM", "LSIL", "HSIL") and pred in ("NILM", "LSIL", "HSIL"), text
        assert bool(cross) == (truth != pred), f"✗ mark does not match the label: {text!r}"
        seen += bool(cross)
    return seen


def _check_layout(page):
    lay = page.evaluate(LAYOUT)
    left, right = lay["area"]
    assert lay["widget"][1] <= right + 1 and lay["widget"][1] - lay["widget"][0] <= 901, lay
    outside = [c for c in lay["controls"] if c[0] < left - 1 or c[1] > right + 1]
    assert not outside, f"a control leaves the output area {lay['area']}: {outside}"
    assert lay["figure"] <= min(900, right - left) + 1, f"figure {lay['figure']} px in a {right - left} px output area"
    assert lay["caseTitle"] == lay["caseText"], "the case's full label must be its tooltip"
    assert lay["caseTextWidth"] + 24 <= lay["caseWidth"], f"the case label is cut: {lay['caseText']!r}"
    return lay


def test_explorer_in_jupyterlab(lab):
    pw = pytest.importorskip("playwright.sync_api")
    art = ROOT / "test-artifacts"; art.mkdir(exist_ok=True)
    errors = []
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(f"{lab}/lab/tree/51_explorer.ipynb", wait_until="load", timeout=90_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=90_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-DebuggerBugButton",
                                   timeout=90_000)
            page.wait_for_timeout(1000)
            for _ in range(3):   # a kernel-choice or other dialog would block the menu: accept it
                dlg = page.locator(".jp-Dialog")
                if not dlg.count(): break
                print("dialog:", dlg.first.inner_text()[:200])
                dlg.locator(".jp-Dialog-button.jp-mod-accept").first.click(); page.wait_for_timeout(1000)
            _run_all(page)
            _wait_until_all_ran(page)
            first = _wait_for(page, lambda s: s["state"] == "ok" and s["overlay"] and s["probs"]
                              and s["overlay"].startswith("data:image/png") and "case" in s["status"], 180,
                              "the explorer's first view")
            root = page.locator(".gynlab-explorer").first
            root.scroll_into_view_if_needed(); page.wait_for_timeout(500)
            lay = _check_layout(page)
            assert len(lay["options"]) == 80 and _check_labels(lay["options"]) >= 0
            page.screenshot(path=str(art / "explorer-lab-1440.png"))
            # change the method
            root.locator(".widget-dropdown", has_text="method").locator("select").select_option("integrated_gradients")
            second = _wait_for(page, lambda s: s["state"] == "ok" and "integrated_gradients" in s["status"], 60,
                               "the IG view")
            assert second["overlay"] != first["overlay"], "the overlay did not change with the method"
            # change the case to one the model sees differently
            sel = root.locator(".widget-dropdown select").first
            n = sel.locator("option").count()
            assert n > 5
            sel.select_option(index=5)
            third = _wait_for(page, lambda s: s["state"] == "ok" and "case 5 " in s["status"]
                              and "integrated_gradients" in s["status"], 60, "case 5")
            assert third["probs"] != second["probs"], "the probabilities did not change with the case"
            assert third["overlay"] != second["overlay"], "the overlay did not change with the case"
            assert abs(sum(third["probs"]) - 1) < 1e-3
            root.scroll_into_view_if_needed(); page.wait_for_timeout(1000)
            root.screenshot(path=str(art / "explorer.png"))
            _check_layout(page)
            # all fast methods side by side: a picture replaces the figure
            root.locator(".widget-toggle-button", has_text="compare methods").click()
            _wait_for(page, lambda s: s["state"] == "ok" and "side by side" in s["status"], 60, "the compare view")
            img = root.locator(".widget-image").first
            img.wait_for(state="visible", timeout=30_000)
            box = img.bounding_box()
            assert box["width"] > 300 and box["width"] <= 901 and not root.locator(".js-plotly-plot").first.is_visible()
            page.wait_for_timeout(500)
            root.screenshot(path=str(art / "explorer-compare.png"))
        finally:
            browser.close()
    real = [e for e in errors if not any(b in e for b in BENIGN)]
    assert not real, f"console errors: {real}"
