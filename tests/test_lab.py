"`make lab` starts JupyterLab on the lessons, on 127.0.0.1, without the news popup; stopping it leaves nothing behind."
import json, os, re, signal, socket, subprocess, time, urllib.request
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
    cfg = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S).group(1))
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
