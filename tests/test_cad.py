"gynlab.cad: calibration, operating points, MC dropout, the case report (in Chromium) and biometry."
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from scipy.optimize import minimize_scalar
from sklearn.calibration import calibration_curve

from gynlab import cad
from gynlab.cli import main as gynlab
from gynlab.train import train_run

CHROMIUM = "/usr/bin/chromium"


# ---------- calibration ----------
def _overconfident(n=4000, k=5, scale=4.0, seed=0):
    "Labels drawn from softmax(true logits): the true logits are calibrated; the model reports them × scale."
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 1.5
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    return z * scale, y


def test_temperature_scaling_lowers_ece_of_overconfident_model():
    z, y = _overconfident()
    T = cad.fit_temperature(z[:2000], y[:2000])
    before = cad.expected_calibration_error(cad.softmax_t(z[2000:]), y[2000:])
    after = cad.expected_calibration_error(cad.softmax_t(z[2000:], T), y[2000:])
    assert 3.5 < T < 4.5                      # it recovers the factor the logits were inflated by
    assert before > 0.15 and after < before / 3
    # an under-confident model is sharpened instead (T < 1)
    assert cad.fit_temperature(z[:2000] / 16, y[:2000]) < 0.5


def test_temperature_matches_scipy_minimiser():
    z, y = _overconfident(n=1500, scale=2.5, seed=3)
    def nll(t): return float(torch.nn.functional.cross_entropy(z.double() / t, y))
    ref = minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-6}).x
    assert cad.fit_temperature(z, y) == pytest.approx(ref, rel=1e-3)


def test_ece_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(0)
    for k, bins in [(3, 10), (8, 15)]:
        p = rng.dirichlet(np.ones(k) * 0.7, 700); y = rng.integers(0, k, 700)
        ref = tm.MulticlassCalibrationError(num_classes=k, n_bins=bins, norm="l1")(torch.tensor(p, dtype=torch.float32), torch.tensor(y))
        assert cad.expected_calibration_error(p, y, bins) == pytest.approx(float(ref), abs=2e-4)


def test_reliability_bins_match_sklearn_for_binary():
    rng = np.random.default_rng(1)
    s = rng.random(500); y = (rng.random(500) < s).astype(int)
    # restricted to confident-in-class-1 cases, the top-label bins are sklearn's positive-class bins
    keep = s > 0.5
    b = cad.reliability_bins(s[keep], y[keep], n_bins=10)
    prob_true, prob_pred = calibration_curve(y[keep], s[keep], n_bins=10, strategy="uniform")
    ok = b["count"] > 0
    np.testing.assert_allclose(b["accuracy"][ok], prob_true, atol=1e-12)
    np.testing.assert_allclose(b["confidence"][ok], prob_pred, atol=1e-12)


@pytest.mark.parametrize("probs,labels,msg", [
    (np.full((4, 3), 0.5), [0, 1, 2, 0], "sum to 1"),
    (np.array([[2.0, -1.0]] * 3), [0, 1, 0], "within [0, 1]"),
    (np.full((4, 2), 0.5), [0, 1, 2, 0], "class indices 0..1"),
    (np.full((4, 2), 0.5), [0, 1], "4 rows"),
    (np.zeros((0, 2)), [], "no cases"),
])
def test_calibration_inputs_checked(probs, labels, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        cad.expected_calibration_error(probs, labels)


# ---------- operating points ----------
def test_threshold_for_targets():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300); s = rng.random(300) * 0.7 + 0.3 * y
    for tgt in (0.5, 0.8, 0.95, 1.0):
        t = cad.threshold_for(y, s, sensitivity=tgt)
        sens = (s[y == 1] >= t).mean()
        assert sens >= tgt - 1e-12
        # the highest such threshold: the next positive score above t would miss the target
        higher = np.unique(s[s > t])
        if len(higher): assert (s[y == 1] >= higher[0]).mean() < tgt
    t = cad.threshold_for(y, s, specificity=0.9)
    assert (s[y == 0] < t).mean() >= 0.9
    with pytest.raises(ValueError, match="exactly one"): cad.threshold_for(y, s)
    with pytest.raises(ValueError, match="fraction in"): cad.threshold_for(y, s, sensitivity=90)
    with pytest.raises(ValueError, match="both positive and negative"): cad.threshold_for(np.ones(5), np.random.rand(5), sensitivity=0.9)


def test_operating_point_counts_and_wilson():
    y = np.array([1] * 10 + [0] * 30); d = np.array([1] * 8 + [0] * 2 + [1] * 3 + [0] * 27, bool)
    op = cad.operating_point(y, d)
    assert (op["tp"], op["fn"], op["fp"], op["tn"]) == (8, 2, 3, 27)
    assert op["sensitivity"] == 0.8 and op["specificity"] == 0.9 and op["ppv"] == 8 / 11
    # Wilson interval by its closed form
    z = 1.959963984540054; n, ph = 10, 0.8
    c = (ph + z * z / (2 * n)) / (1 + z * z / n); h = z / (1 + z * z / n) * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    assert op["sensitivity_ci"] == pytest.approx((c - h, c + h), abs=1e-9)
    assert all(math.isnan(v) for v in cad.operating_point([0, 0], [0, 0])["sensitivity_ci"])


def test_stratified_bootstrap_interval_covers_and_shrinks():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    def data(n):
        y = np.r_[np.ones(n), np.zeros(n)].astype(int); s = rng.normal(y * 1.0, 1.0); return y, s
    y, s = data(60); lo, hi = cad.stratified_bootstrap(y, s, roc_auc_score, 500)
    assert lo < roc_auc_score(y, s) < hi
    y2, s2 = data(600); lo2, hi2 = cad.stratified_bootstrap(y2, s2, roc_auc_score, 500)
    assert (hi2 - lo2) < (hi - lo) / 2             # ten times the data: roughly a third of the width
    assert 0.70 < lo2 and hi2 < 0.83               # true AUC for unit separation: Φ(1/√2) ≈ 0.760


# ---------- MC dropout ----------
def test_mc_dropout_restores_state_and_measures_disagreement():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3)).eval()
    x = torch.randn(10, 6)
    rng_before = torch.get_rng_state()
    m = cad.mc_dropout(net, x, n=30)
    assert not any(mod.training for mod in net.modules())               # back in eval mode
    assert torch.equal(torch.get_rng_state(), rng_before)               # the global RNG is untouched
    assert m["samples"].shape == (30, 10, 3) and np.allclose(m["probs"].sum(1), 1)
    assert (m["mutual_information"] > 1e-4).all() and (m["mutual_information"] <= m["entropy"] + 1e-9).all()
    np.testing.assert_allclose(cad.mc_dropout(net, x, n=30)["probs"], m["probs"])   # seeded: reproducible
    with pytest.raises(ValueError, match="no dropout"):
        cad.mc_dropout(nn.Sequential(nn.Linear(6, 3)), x)


def test_referral_curve_rewards_informative_uncertainty():
    rng = np.random.default_rng(0)
    u = rng.random(1000); correct = rng.random(1000) > u          # the more uncertain, the more often wrong
    rc = cad.referral_curve(correct, u)
    assert rc["accuracy_kept"][0] == pytest.approx(correct.mean())
    assert np.all(np.diff(rc["accuracy_kept"]) > 0)
    flat = cad.referral_curve(correct, rng.random(1000))          # uninformative: accuracy stays put
    assert abs(flat["accuracy_kept"][-1] - correct.mean()) < 0.06


# ---------- biometry ----------
def test_hadlock_formula_and_range():
    assert cad.hadlock_ga_weeks(346) == pytest.approx(8.96 + 0.54 * 34.6 + 0.0003 * 34.6 ** 3)
    assert cad.format_ga(20 + 3 / 7) == "20w 3d"
    ga = cad.hadlock_ga_weeks(np.array([100.0, 200.0, 300.0]))
    assert np.all(np.diff(ga) > 0)
    with pytest.raises(ValueError, match="positive"): cad.hadlock_ga_weeks(-5)


def _ellipse_mask(h=270, w=400, a=90, b=60):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - h / 2) / b) ** 2 + ((xx - w / 2) / a) ** 2 <= 1


def test_biometry_from_mask_on_known_ellipse():
    px = 0.3
    a, b = 90 * px, 60 * px
    ramanujan = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    r = cad.biometry_from_mask(_ellipse_mask(), px)
    assert r["hc_mm"] == pytest.approx(ramanujan, rel=0.01)
    assert r["ga_weeks"] == pytest.approx(cad.hadlock_ga_weeks(r["hc_mm"]))
    assert r["in_range"] is True or r["ga_weeks"] < 14
    with pytest.raises(ValueError, match="empty"): cad.biometry_from_mask(np.zeros((10, 10)), 0.2)
    with pytest.raises(ValueError, match="pixel size"): cad.biometry_from_mask(_ellipse_mask(), 0)


def test_biometry_cli_with_mask(tmp_path, capsys):
    m = tmp_path / "skull.png"; Image.fromarray(_ellipse_mask().astype(np.uint8) * 255).save(m)
    assert gynlab(["biometry", "--image", str(m), "--mask", str(m), "--pixel-size", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hc_mm"] == pytest.approx(cad.biometry_from_mask(_ellipse_mask(), 0.5)["hc_mm"])
    assert gynlab(["biometry", "--image", str(m), "--mask", str(m), "--pixel-size", "-1"]) == 2
    assert "pixel-size" in capsys.readouterr().err
    assert gynlab(["biometry", "--image", str(m), "--pixel-size", "0.5"]) == 2          # neither --run nor --mask
    bad = tmp_path / "broken.png"; bad.write_bytes(b"not a png")
    assert gynlab(["biometry", "--image", str(bad), "--mask", str(bad), "--pixel-size", "0.5"]) == 2
    assert "broken.png" in capsys.readouterr().err


# ---------- the pipeline and the report ----------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A small classifier on the pelvic-ultrasound phantom (normal / simple cyst / solid)."
    out = tmp_path_factory.mktemp("cad") / "run"
    train_run("phantom-pelvic-us", "smallcnn", out, epochs=3, image_size=32, subset=120, progress=False)
    return out


def test_calibrate_saves_and_reloads(run, tmp_path):
    pipe = cad.CADPipeline.from_run(run)
    assert not pipe.calibrated
    s = pipe.calibrate(sensitivity=0.8, refer_fraction=0.2, mc=5, n_resamples=200)
    assert s["grouping"] == "solid" and 0 < s["temperature"] < 20
    assert s["operating_point"]["tp"] + s["operating_point"]["fn"] == s["n_positive"]
    assert s["operating_point"]["tn"] + s["operating_point"]["fp"] == s["n_validation"] - s["n_positive"]
    pipe.save()
    again = cad.CADPipeline.from_run(run)
    assert again.calibrated and again.temperature == pytest.approx(pipe.temperature) and again.threshold == pytest.approx(pipe.threshold)
    (tmp_path / "r").mkdir(); (tmp_path / "r" / "cad.json").write_text("{broken")
    for f in ("config.json", "model.safetensors"): (tmp_path / "r" / f).write_bytes((run / f).read_bytes())
    with pytest.raises(ValueError, match="cad.json is corrupt"): cad.CADPipeline.from_run(tmp_path / "r")
    with pytest.raises(KeyError, match="unknown grouping"): pipe.calibrate(grouping_name="nonsense")
    for kw, msg in [(dict(sensitivity=1.5), "sensitivity is a fraction"), (dict(refer_fraction=1.0), "refer_fraction"),
                    (dict(folds=1), "at least 2 folds")]:
        with pytest.raises(ValueError, match=msg): pipe.calibrate(**kw)


def test_report_is_self_contained_and_escaped(run, tmp_path):
    pipe = cad.CADPipeline.from_run(run)
    if not pipe.calibrated: pipe.calibrate(sensitivity=0.8, mc=5, n_resamples=200); pipe.save()
    img = tmp_path / "<script>alert(1)<.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "report.html"
    assert gynlab(["report", "--run", str(run), "--image", str(img), "--out", str(out), "--mc", "5"]) == 0
    page = out.read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;.png" in page
    assert "http://" not in page and "https://" not in page           # nothing to fetch
    assert page.count("data:image/png;base64,") == 2
    assert "NOT FOR CLINICAL USE" in page
    # a missing image: named, exit 2, nothing written
    assert gynlab(["report", "--run", str(run), "--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "r2.html")]) == 2
    assert not (tmp_path / "r2.html").exists()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
def test_report_in_headless_chromium(run, tmp_path):
    from playwright.sync_api import sync_playwright
    pipe = cad.CADPipeline.from_run(run)
    if not pipe.calibrated: pipe.calibrate(sensitivity=0.8, mc=5, n_resamples=200); pipe.save()
    name = "<script>alert(1)<img src=x onerror=alert(2)>.png"
    img = tmp_path / name
    Image.fromarray((np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "report.html"
    assert gynlab(["report", "--run", str(run), "--image", str(img), "--out", str(out), "--mc", "5"]) == 0
    res = pipe(img, mc=5, name=name)
    dialogs, requests, errors = [], [], []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri()); page.wait_for_load_state("load")
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
    for c, p in zip(res.classes, res.probs): assert f"{p:.3f}" in text
    assert "NOT FOR CLINICAL USE" in text and "Chocolate" not in text   # phantom run: its own classes only


def test_report_escapes_run_metadata(run, tmp_path):
    cfg = json.loads((run / "config.json").read_text())
    pipe = cad.CADPipeline.from_run(run)
    pipe.run = Path('<b>run</b>"onmouseover="x')
    pipe.config = {**cfg, "model": "<script>alert('model')</script>"}
    img = Image.fromarray(np.zeros((40, 40), np.uint8))
    res = pipe(img, mc=0, method=None, name="</td><script>x</script>")
    page = cad.render_report(res, pipe)
    assert "<script" not in page and "<b>run</b>" not in page
    assert "&lt;script&gt;alert(&#x27;model&#x27;)&lt;/script&gt;" in page
    assert "&lt;/td&gt;&lt;script&gt;x&lt;/script&gt;" in page


def test_report_needs_a_classifier(tmp_path):
    assert gynlab(["report", "--run", str(tmp_path / "missing"), "--image", "x.png", "--out", str(tmp_path / "r.html")]) == 2
    assert not (tmp_path / "r.html").exists()


def test_report_and_biometry_name_the_wrong_kind_of_run(run, tmp_path, capsys):
    seg = tmp_path / "seg"; seg.mkdir()
    (seg / "config.json").write_text(json.dumps({"task": "segment"}))
    assert gynlab(["report", "--run", str(seg), "--image", "x.png", "--out", str(tmp_path / "r.html")]) == 2
    assert "gynlab biometry" in capsys.readouterr().err
    img = tmp_path / "a.png"; Image.fromarray(np.zeros((30, 30), np.uint8)).save(img)
    assert gynlab(["biometry", "--run", str(run), "--image", str(img), "--pixel-size", "0.2"]) == 2   # a classifier
    assert "segmentation run" in capsys.readouterr().err


def test_hc_offset_learnt_and_subtracted(tmp_path, monkeypatch, capsys):
    "A segmenter that draws every skull 3 px too wide: the offset is learnt on 'training' images and removed."
    import datasets
    import gynlab.models.unet as unet
    px = 0.25
    def ellipse(h, w, a, b): return _ellipse_mask(h, w, a, b)
    def ramanujan(a, b): return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    axes = [(80, 50), (100, 70), (60, 45)]
    split = datasets.Dataset.from_dict({
        "image": [Image.fromarray(ellipse(270, 400, a, b).astype(np.uint8) * 255) for a, b in axes],
        "pixel_size_mm": [px] * 3, "head_circumference_mm": [ramanujan(a * px, b * px) for a, b in axes]})
    def fake_segment(net, im, cfg, device=None):       # the true ellipse grown by 3 px on each semi-axis
        m = np.asarray(im.convert("L")) > 0; ys, xs = np.nonzero(m)
        a, b = (xs.max() - xs.min() + 1) / 2, (ys.max() - ys.min() + 1) / 2
        return ellipse(*m.shape, a + 3, b + 3).astype(np.uint8)
    monkeypatch.setattr(unet, "load_segmenter", lambda run, device=None: (None, {"dataset": "hc18"}))
    monkeypatch.setattr(unet, "segment_image", fake_segment)
    run = tmp_path / "seg"; run.mkdir()
    assert cad.hc_offset(run) is None
    d = cad.fit_hc_offset(run, split)
    from gynlab.metrics import head_circumference
    expect = np.mean([head_circumference(fake_segment(None, r["image"], None) > 0, px) - r["head_circumference_mm"] for r in split])
    assert d["n"] == 3 and d["hc_offset_mm"] == pytest.approx(expect, rel=1e-9)
    assert 2 * math.pi * 3 * px < d["hc_offset_mm"] < 2 * math.pi * 4 * px     # grown by 3 px (+ rasterisation): ≈ 2π·3.5 px
    assert json.loads((run / "biometry.json").read_text())["hc_offset_mm"] == d["hc_offset_mm"]
    img = tmp_path / "case.png"; split[1]["image"].save(img)
    b = cad.biometry(img, px, run)
    assert b["hc_mm"] == pytest.approx(b["hc_mm_uncorrected"] - d["hc_offset_mm"])
    assert abs(b["hc_mm"] - split[1]["head_circumference_mm"]) < abs(b["hc_mm_uncorrected"] - split[1]["head_circumference_mm"]) / 3
    assert "hc_mm_uncorrected" not in cad.biometry(img, px, run, correct=False)
    assert gynlab(["biometry", "--run", str(run), "--image", str(img), "--pixel-size", str(px)]) == 0
    assert "subtracted" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no reference head circumference"):
        cad.fit_hc_offset(run, split.remove_columns("head_circumference_mm"))
    (run / "biometry.json").write_text("{oops")
    with pytest.raises(ValueError, match="biometry.json is corrupt"): cad.biometry(img, px, run)
