"""`make lab` starts JupyterLab on the lessons, on 127.0.0.1, without the news popup; stopping it leaves nothing behind.
A lesson opens without the "Select Kernel" dialog and without being marked modified (headless Chromium)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r: return r.status, r.read().decode()


def _group_alive(pgid):
    try: os.killpg(pgid, 0); return True
    except ProcessLookupError: return False


@pytest.fixture
def lab():
    port = _free_port()
    log = open(ROOT / ".pytest_cache" / "lab.log", "w") if (ROOT / ".pytest_cache").is_dir() else subprocess.DEVNULL
    p = subprocess.Popen(["make", "--no-print-directory", "lab", f"PORT={port}",
                          "LAB_ARGS=--ServerApp.token= --ServerApp.password="],
                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, last = time.time() + 90, None
        while time.time() < deadline:
            if p.poll() is not None: pytest.fail(f"make lab exited with {p.returncode}")
            try:
                if _get(base + "/lab")[0] == 200: break
            except OSError as e: last = e
            time.sleep(1)
        else: pytest.fail(f"JupyterLab did not answer on {base}/lab within 90 s ({last})")
        yield base, p
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(30)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait(10)
        for _ in range(50):
            if not _group_alive(p.pid): break
            time.sleep(0.2)
        else:
            os.killpg(p.pid, signal.SIGKILL)
            pytest.fail("processes of `make lab` were still running after SIGTERM")


def test_make_lab_serves_the_lessons(lab):
    base, p = lab
    status, html = _get(base + "/lab")
    assert status == 200 and "JupyterLab" in html
    # the news popup is switched off in the venv's config
    page_cfg = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    cfg = json.loads(page_cfg.group(1))
    disabled = cfg.get("disabledExtensions", [])
    assert "@jupyterlab/apputils-extension:announcements" in disabled, disabled
    names = {c["name"] for c in json.loads(_get(base + "/api/contents")[1])["content"]}
    lessons = {p.name for p in (ROOT / "nbs").glob("*.ipynb")}
    assert lessons and lessons <= names, f"JupyterLab does not list the lessons: {sorted(lessons - names)}"
    # bound to localhost only
    port = int(base.rsplit(":", 1)[1])
    ext = [a for a in {ip for *_, (ip, *_r) in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
           if not a.startswith("127.")]
    for ip in ext:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((ip, port)) != 0, f"JupyterLab also listens on {ip}"


# ---- opening a lesson: no "Select Kernel" dialog, not marked modified ----
#
# JupyterLab 4 asks which kernel to use when a notebook names none (metadata.kernelspec.name), and when the kernel
# starts it writes the kernel's `kernelspec` and `language_info` into the notebook: if either differs from what the
# file holds, the tab is marked modified (class jp-mod-dirty) before the student has touched anything. nbdev_clean
# rewrites kernelspec.display_name to the kernel's name, so the venv's kernel is installed with display name
# "python3" and the notebooks keep language_info (settings.ini: allowed_metadata_keys).

LESSONS_TO_OPEN = ("10_cnn.ipynb", "51_explorer.ipynb")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]


def _kernel_spec():
    "The kernel `make lab` starts for a notebook that names python3: (spec, language_info) as the kernel reports them."
    from jupyter_client.kernelspec import KernelSpecManager
    from ipykernel.ipkernel import IPythonKernel
    spec = KernelSpecManager().get_kernel_spec("python3")
    return ({"name": "python3", "display_name": spec.display_name, "language": spec.language},
            json.loads(json.dumps(IPythonKernel.language_info)))


def test_notebooks_carry_the_metadata_the_lab_writes():
    "Every notebook holds the kernelspec and language_info JupyterLab would write: nothing to ask, nothing to save."
    spec, info = _kernel_spec()
    wrong = {}
    for nb in sorted((ROOT / "nbs").rglob("*.ipynb")):
        md = json.loads(nb.read_text(encoding="utf-8")).get("metadata", {})
        bad = [k for k, want in (("kernelspec", spec), ("language_info", info)) if md.get(k) != want]
        if bad: wrong[str(nb.relative_to(ROOT))] = bad
    assert not wrong, (f"{len(wrong)} notebooks differ from what JupyterLab writes on opening (kernel {spec}, "
                       f"language_info {info}): {dict(list(wrong.items())[:8])}")


@pytest.fixture
def lab_copy(tmp_path):
    "JupyterLab (the venv's kernels and settings, as `make lab`) on copies of two lessons, in a temp folder."
    work = tmp_path / "nbs"; work.mkdir()
    for name in LESSONS_TO_OPEN: (work / name).write_bytes((ROOT / "nbs" / name).read_bytes())
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    port, jupyter = _free_port(), Path(sys.executable).parent / "jupyter"
    log = open(tmp_path / "lab.log", "w")
    p = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ServerApp.token=", "--ServerApp.password=",
                          "--ServerApp.ip=127.0.0.1", f"--port={port}", "--allow-root", f"--notebook-dir={work}"],
                         cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if p.poll() is not None: pytest.fail(f"jupyter lab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
            try:
                if _get(base + "/lab")[0] == 200: break
            except OSError: time.sleep(1)
        else: pytest.fail("JupyterLab did not start within 90 s")
        yield base, work
    finally:
        try: os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: p.wait(20)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait(10)
        log.close()


def _open_and_watch(browser, base, name, settle_ms=5000):
    "Open a lesson in a fresh page; watch for a dialog until its kernel is idle and a while after. (dialog, dirty)."
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    try:
        page.goto(f"{base}/lab/workspaces/w{abs(hash(name))}/tree/{name}?reset", wait_until="load", timeout=90_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="attached", timeout=90_000)
        dialog, idle_at, deadline = "", None, time.time() + 120
        while time.time() < deadline:
            if page.locator(".jp-Dialog").count(): dialog = page.locator(".jp-Dialog").first.inner_text()[:200]; break
            if idle_at is None and page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count():
                idle_at = time.time()
            if idle_at is not None and time.time() - idle_at > settle_ms / 1000: break
            page.wait_for_timeout(250)
        assert dialog or idle_at is not None, f"{name}: the kernel never became idle"
        tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=name).first
        dirty = "jp-mod-dirty" in (tab.get_attribute("class") or "")
        page.screenshot(path=str(ROOT / "test-artifacts" / f"lab-open-{name.split('_')[0]}.png"))
        return dialog, dirty
    finally: ctx.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
def test_lessons_open_without_kernel_dialog_or_modified_mark(lab_copy):
    pw = pytest.importorskip("playwright.sync_api")
    base, work = lab_copy
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    before = {n: (work / n).read_bytes() for n in LESSONS_TO_OPEN}
    results = {}
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            for name in LESSONS_TO_OPEN: results[name] = _open_and_watch(browser, base, name)
        finally: browser.close()
    sessions = {s["path"]: s["kernel"]["name"] for s in json.loads(_get(base + "/api/sessions")[1])}
    assert all(sessions.get(n) == "python3" for n in LESSONS_TO_OPEN), f"kernels started: {sessions}"
    asked = {n: d for n, (d, _) in results.items() if d}
    assert not asked, f"JupyterLab showed a dialog on opening: {asked}"
    dirty = [n for n, (_, d) in results.items() if d]
    assert not dirty, f"marked modified right after opening (metadata differs from what the kernel reports): {dirty}"
    assert {n: (work / n).read_bytes() for n in LESSONS_TO_OPEN} == before, "opening a lesson changed the file"
