"""gynlab.report: the self-contained case report — escaped (file names, run metadata, a tampered cad.json), written
safely, and read in headless Chromium."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gynlab import cad, report
from gynlab.core import BadImageError, OutputError, RunError
from gynlab.tasks import train_classifier

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
HOSTILE = '<meta http-equiv="refresh" content="0;url=http://x">'


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A small calibrated classifier on the pelvic-ultrasound phantom (normal / simple cyst / solid)."
    out = tmp_path_factory.mktemp("report") / "run"
    train_classifier("phantom-pelvic-us", "smallcnn", out, epochs=3, image_size=32, subset=120, progress=False)
    cad.calibrate_run(out, sensitivity=0.8, mc=5, n_resamples=100)
    return out


def _copy_run(run, dest, files=("config.json", "model.safetensors", "cad.json")):
    dest.mkdir()
    for f in files: (dest / f).write_bytes((run / f).read_bytes())
    return dest


def _image(path, seed=0, shape=(50, 70)):
    Image.fromarray((np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)).save(path)
    return path


def test_report_is_self_contained_and_escaped(run, tmp_path):
    img = _image(tmp_path / "<script>alert(1)<.png")
    out = report.write_report(run, img, tmp_path / "report.html", mc=5)
    assert out == tmp_path / "report.html"
    page = out.read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;.png" in page
    assert "http://" not in page and "https://" not in page           # nothing to fetch
    assert page.count("data:image/png;base64,") == 2
    assert page.count("NOT FOR CLINICAL USE") == 2
    assert "default-src 'none'" in page                                # the CSP itself is ours, unescaped
    assert not list(tmp_path.glob(".*.tmp"))                            # no temporary file left behind


def test_report_survives_a_tampered_cad_json(run, tmp_path):
    "Numbers read back from cad.json reach the page only as numbers or escaped text."
    r = _copy_run(run, tmp_path / "r")
    d = json.loads((r / "cad.json").read_text())
    d["summary"].update(n_validation=HOSTILE, n_positive="<form action='//x'><input name=p></form>", ece_before="<b>",
                        target={"<i>sensitivity</i>": "<svg onload=alert(1)>"}, auc=[1, 2], auc_ci="<img src=x>",
                        operating_point={"sensitivity": "<u>", "sensitivity_ci": ["<s>", 1]}, refer_fraction="<em>")
    (r / "cad.json").write_text(json.dumps(d))
    page = report.write_report(r, _image(tmp_path / "a.png"), tmp_path / "t.html", mc=0, method=None).read_text()
    assert "&lt;meta http-equiv=&quot;refresh&quot; content=&quot;0;url=http://x&quot;&gt;" in page   # shown as text
    low = page.lower()
    assert '<meta http-equiv="refresh"' not in low and "<meta http-equiv=refresh" not in low
    assert "<form" not in low and "<input" not in low and "<svg" not in low and "<script" not in low
    assert low.count("<meta") == 3                                       # charset, CSP, viewport: ours only
    assert low.count("<img") == 1 and not any(t in page for t in ("<i>", "<u>", "<s>", "<em>"))
    for shown in ("&lt;svg onload=alert(1)&gt;", "&lt;i&gt;sensitivity&lt;/i&gt;", "&lt;b&gt;", "&lt;em&gt;",
                  "&lt;u&gt;"):
        assert shown in page, shown


def test_report_escapes_run_metadata(run, tmp_path):
    cfg = json.loads((run / "config.json").read_text())
    pipe = cad.CADPipeline.from_run(run)
    pipe.run = Path('<b>run</b>"onmouseover="x')
    pipe.config = {**cfg, "model": "<script>alert('model')</script>", "classes": cfg["classes"], "n_train": "<i>9</i>"}
    res = pipe(Image.fromarray(np.zeros((40, 40), np.uint8)), mc=0, method=None, name="</td><script>x</script>")
    res.classes = ["<b>normal</b>"] + res.classes[1:]
    page = report.render_report(res, pipe)
    assert "<script" not in page and "<b>run</b>" not in page and "<b>normal</b>" not in page and "<i>9</i>" not in page
    assert "&lt;script&gt;alert(&#x27;model&#x27;)&lt;/script&gt;" in page
    assert "&lt;/td&gt;&lt;script&gt;x&lt;/script&gt;" in page and "&quot;onmouseover=&quot;x" in page


def test_report_of_an_uncalibrated_run_says_so(run, tmp_path):
    r = _copy_run(run, tmp_path / "r", files=("config.json", "model.safetensors"))
    page = report.write_report(r, _image(tmp_path / "a.png"), tmp_path / "u.html", mc=0, method=None).read_text()
    assert "NOT CALIBRATED" in page and "raw softmax" in page


def test_report_never_overwrites_its_inputs(run, tmp_path):
    img = _image(tmp_path / "case.png"); before = img.read_bytes()
    with pytest.raises(OutputError, match="one of the inputs"): report.write_report(run, img, img)
    assert img.read_bytes() == before
    model = (run / "model.safetensors").read_bytes()
    for f in ("model.safetensors", "config.json", "cad.json"):
        with pytest.raises(OutputError, match="one of the inputs"): report.write_report(run, img, run / f)
    assert (run / "model.safetensors").read_bytes() == model
    with pytest.raises(OutputError, match="is a folder"): report.write_report(run, img, tmp_path)
    link = tmp_path / "link.html"; link.symlink_to(tmp_path / "elsewhere.html")
    with pytest.raises(OutputError, match="symbolic link"): report.write_report(run, img, link)


def test_report_errors_name_the_problem_and_write_nothing(run, tmp_path):
    out = tmp_path / "r.html"
    with pytest.raises(BadImageError, match="nope.png"): report.write_report(run, tmp_path / "nope.png", out)
    bad = tmp_path / "broken.png"; bad.write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="broken.png"): report.write_report(run, bad, out)
    with pytest.raises(RunError, match="does not exist"):
        report.write_report(tmp_path / "missing", _image(tmp_path / "a.png"), out)
    assert not out.exists()


def test_report_needs_a_classification_run(tmp_path):
    from gynlab.segment import train_segmenter
    seg = tmp_path / "seg"
    train_segmenter("phantom-uterus-mri", epochs=1, image_size=32, subset=16, out=seg, progress=False)
    with pytest.raises(RunError, match="segmentation run.*gynlab biometry"):
        report.write_report(seg, _image(tmp_path / "a.png"), tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
def test_report_in_headless_chromium(run, tmp_path):
    from playwright.sync_api import sync_playwright
    pipe = cad.CADPipeline.from_run(run)
    name = "<script>alert(1)<img src=x onerror=alert(2)>.png"
    img = _image(tmp_path / name, seed=1, shape=(60, 80))
    out = report.write_report(run, img, tmp_path / "report.html", mc=5)
    res = pipe(img, mc=5, name=name)
    dialogs, requests, errors = [], [], []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = b.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri(), wait_until="load")
        imgs = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
        text = page.inner_text("body")
        file_cell = page.inner_text("#file")
        probs_rows = page.eval_on_selector_all("#probs tr", "els => els.length")
        shot = Path(__file__).resolve().parents[1] / "test-artifacts"; shot.mkdir(exist_ok=True)
        page.screenshot(path=str(shot / "report.png"), full_page=True)
        b.close()
    assert dialogs == [] and errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert len(imgs) == 2 and all(c and w > 0 and h > 0 for c, w, h in imgs), imgs
    assert file_cell == name                                            # the name shows as text, tags and all
    assert probs_rows == 1 + len(pipe.classes)
    assert f"{res.group_probability:.3f}" in text and f"{pipe.threshold:.3f}" in text
    assert f"{pipe.summary['ece_before']:.3f}" in text and f"{pipe.summary['ece_after']:.3f}" in text
    assert str(pipe.summary["n_validation"]) in text
    for p in res.probs: assert f"{p:.3f}" in text
    assert "NOT FOR CLINICAL USE" in text and "Chocolate" not in text   # phantom run: its own classes only


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
def test_tampered_report_does_not_redirect_in_chromium(run, tmp_path):
    r = _copy_run(run, tmp_path / "r")
    d = json.loads((r / "cad.json").read_text())
    d["summary"]["n_validation"] = HOSTILE.replace("http://x", (tmp_path / "gone.html").as_uri())
    (r / "cad.json").write_text(json.dumps(d))
    out = report.write_report(r, _image(tmp_path / "a.png"), tmp_path / "t.html", mc=0, method=None)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = b.new_page()
        page.goto(out.as_uri(), wait_until="load"); page.wait_for_timeout(1500)
        url, text = page.url, page.inner_text("body")
        b.close()
    assert url == out.as_uri() and '<meta http-equiv="refresh"' in text    # still our page; the markup is shown as text
