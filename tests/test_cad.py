"gynlab.cad: calibration, operating points, MC dropout, referral and the CAD pipeline (calibrate, cad.json, one case)."
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from scipy.optimize import minimize_scalar
from sklearn.calibration import calibration_curve

from gynlab import cad
from gynlab.core import RunError, UsageError
from gynlab.tasks import train_classifier


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
        metric = tm.MulticlassCalibrationError(num_classes=k, n_bins=bins, norm="l1")
        ref = metric(torch.tensor(p, dtype=torch.float32), torch.tensor(y))
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


def test_one_score_reliability_matches_sklearn():
    "top_label=False: bins of one score (P(positive)) against the fraction positive, as sklearn's calibration_curve."
    rng = np.random.default_rng(2)
    s = rng.random(800) ** 2; y = (rng.random(800) < np.sqrt(s)).astype(int)      # under-predicted positives
    b = cad.reliability_bins(s, y, n_bins=10, top_label=False)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    ok = b["count"] > 0
    np.testing.assert_allclose(b["accuracy"][ok], prob_true, atol=1e-12)
    np.testing.assert_allclose(b["confidence"][ok], prob_pred, atol=1e-12)
    ece = cad.expected_calibration_error(s, y, 10, top_label=False)
    assert ece == pytest.approx(float((b["count"][ok] / 800 * np.abs(prob_true - prob_pred)).sum()))
    with pytest.raises(UsageError, match="0 or 1"): cad.reliability_bins(s, y * 2, top_label=False)
    with pytest.raises(UsageError, match="top_label=True"): cad.reliability_bins(np.c_[s, 1 - s], y, top_label=False)


def test_temperature_keeps_accuracy_but_moves_softmax_aucs():
    "Only the argmax and one logit's ranking are invariant under T; one-vs-rest and grouped softmax AUCs move."
    from sklearn.metrics import roc_auc_score
    z, y = _overconfident(n=3000)
    z, y = z.numpy(), y.numpy()
    p1, p4 = cad.softmax_t(z), cad.softmax_t(z, 4.0)
    assert (p1.argmax(1) == p4.argmax(1)).all()
    assert roc_auc_score(y == 2, z[:, 2]) == roc_auc_score(y == 2, z[:, 2] / 4)
    assert abs(roc_auc_score(y, p1, multi_class="ovr") - roc_auc_score(y, p4, multi_class="ovr")) > 1e-3
    g1, g4 = (cad.group_scores(p, list("abcde"), ["a", "b"]) for p in (p1, p4))
    assert abs(roc_auc_score(y < 2, g1) - roc_auc_score(y < 2, g4)) > 1e-3


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
    with pytest.raises(UsageError, match="exactly one"): cad.threshold_for(y, s)
    with pytest.raises(UsageError, match=r"target sensitivity must be in \(0, 1\]"):
        cad.threshold_for(y, s, sensitivity=90)
    with pytest.raises(UsageError, match=r"target specificity must be in \(0, 1\]"):
        cad.threshold_for(y, s, specificity=0)
    with pytest.raises(UsageError, match="both positive and negative"):
        cad.threshold_for(np.ones(5), np.random.rand(5), sensitivity=0.9)


def test_operating_point_counts_and_wilson():
    y = np.array([1] * 10 + [0] * 30); d = np.array([1] * 8 + [0] * 2 + [1] * 3 + [0] * 27, bool)
    op = cad.operating_point(y, d)
    assert (op["tp"], op["fn"], op["fp"], op["tn"]) == (8, 2, 3, 27)
    assert op["sensitivity"] == 0.8 and op["specificity"] == 0.9 and op["ppv"] == 8 / 11
    # Wilson interval by its closed form
    z = 1.959963984540054; n, ph = 10, 0.8
    c = (ph + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    assert op["sensitivity_ci"] == pytest.approx((c - h, c + h), abs=1e-9)
    assert all(math.isnan(v) for v in cad.operating_point([0, 0], [0, 0])["sensitivity_ci"])


def test_ppv_at_is_bayes_and_matches_counting():
    assert cad.ppv_at(0.9, 0.7, 0.03) == pytest.approx(0.027 / (0.027 + 0.291))
    rng = np.random.default_rng(3)
    y = rng.random(2000) < 0.1; d = np.where(y, rng.random(2000) < 0.8, rng.random(2000) < 0.25)
    op = cad.operating_point(y, d)
    assert cad.ppv_at(op["sensitivity"], op["specificity"], y.mean()) == pytest.approx(op["ppv"], abs=1e-12)
    assert math.isnan(cad.ppv_at(0, 1, 0.5))


def test_operating_table_rows_are_exact_at_the_printed_threshold():
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.2).astype(int); s = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1)
    from gynlab.cad_plots import operating_table
    tab = operating_table(y, s)
    assert list(tab["threshold"]) == sorted(tab["threshold"]) and (tab["threshold"] == tab["threshold"].round(4)).all()
    for r in tab.to_dict("records"):                  # a threshold copied from the table gives exactly its row
        assert (s >= r["threshold"]).mean() == pytest.approx(r["flagged"], abs=1e-4)
        assert (s[y == 1] >= r["threshold"]).mean() == pytest.approx(r["sensitivity"], abs=1e-4)
    assert tab["sensitivity"].max() == 1.0


def test_calibrate_scores_cross_fits_and_refits():
    "Out-of-fold probabilities use a temperature fitted on the other fold; the deployed T and threshold use all cases."
    z, y = _overconfident(n=2000, k=4, scale=3.0, seed=5)
    classes = ["a", "b", "c", "d"]
    fit = cad.calibrate_scores(z, y, classes, ["d"], sensitivity=0.9, folds=2)
    yb = (y.numpy() == 3).astype(int)
    assert 2.5 < fit["temperature"] < 3.5 and (fit["group_labels"] == yb).all()
    for fit_i, test_i in cad._folds(yb, 2, 0):
        t = cad.fit_temperature(z[fit_i], y[fit_i])
        np.testing.assert_allclose(fit["oof"][test_i], cad.softmax_t(z[test_i], t), atol=1e-9)
    deployed = cad.group_scores(cad.softmax_t(z, fit["temperature"]), classes, ["d"])
    assert (deployed[yb == 1] >= fit["threshold"]).mean() >= 0.9
    assert fit["threshold"] == cad.threshold_for(yb, deployed, sensitivity=0.9)


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
    with pytest.raises(UsageError, match="no dropout"):
        cad.mc_dropout(nn.Sequential(nn.Linear(6, 3)), x)
    with pytest.raises(UsageError, match="MC dropout passes"): cad.mc_dropout(net, x, n=0)


def test_referral_curve_rewards_informative_uncertainty():
    rng = np.random.default_rng(0)
    u = rng.random(1000); correct = rng.random(1000) > u          # the more uncertain, the more often wrong
    rc = cad.referral_curve(correct, u)
    assert rc["accuracy_kept"][0] == pytest.approx(correct.mean())
    assert np.all(np.diff(rc["accuracy_kept"]) > 0)
    flat = cad.referral_curve(correct, rng.random(1000))          # uninformative: accuracy stays put
    assert abs(flat["accuracy_kept"][-1] - correct.mean()) < 0.06


# ---------- the pipeline ----------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A small classifier on the pelvic-ultrasound phantom (normal / simple cyst / solid)."
    out = tmp_path_factory.mktemp("cad") / "run"
    train_classifier("phantom-pelvic-us", "smallcnn", out, epochs=3, image_size=32, subset=120, progress=False)
    return out


def _copy_run(run, dest):
    dest.mkdir()
    for f in ("config.json", "model.safetensors"): (dest / f).write_bytes((run / f).read_bytes())
    return dest


def test_calibrate_saves_and_reloads(run, tmp_path):
    run = _copy_run(run, tmp_path / "r")
    pipe = cad.CADPipeline.from_run(run)
    assert not pipe.calibrated and pipe.grouping["name"] == "solid"
    s = pipe.calibrate(sensitivity=0.8, refer_fraction=0.2, mc=5, n_resamples=200)
    assert s["grouping"] == "solid" and 0 < s["temperature"] < 20 and s["target"] == {"sensitivity": 0.8}
    assert s["operating_point"]["tp"] + s["operating_point"]["fn"] == s["n_positive"]
    assert s["operating_point"]["tn"] + s["operating_point"]["fp"] == s["n_validation"] - s["n_positive"]
    assert pipe.save() == run / "cad.json"
    again = cad.CADPipeline.from_run(run)
    assert again.calibrated and again.temperature == pytest.approx(pipe.temperature)
    assert again.threshold == pytest.approx(pipe.threshold)
    assert again.refer_above == pytest.approx(pipe.refer_above) and again.summary["n_validation"] == s["n_validation"]
    assert (again.mc, again.flagged_fraction) == (5, pipe.flagged_fraction)
    # refer nobody: the cut-off is infinite, stored as null (JSON has no infinity) and read back as infinity
    pipe.calibrate(sensitivity=0.8, refer_fraction=0, mc=2, n_resamples=50); pipe.save()
    assert json.loads((run / "cad.json").read_text())["refer_above"] is None
    assert cad.CADPipeline.from_run(run).refer_above == math.inf
    s = pipe.calibrate(specificity=0.7, mc=2, n_resamples=50)     # replaces the default target sensitivity
    assert s["target"] == {"specificity": 0.7}


def test_the_deployed_score_is_the_calibrated_one(run, tmp_path):
    "What a case is decided on is the score calibrate() measured: one deterministic pass at T, whatever mc is."
    from gynlab.tasks import run_splits
    pipe = cad.CADPipeline.from_run(_copy_run(run, tmp_path / "r"))
    s = pipe.calibrate(sensitivity=0.8, refer_fraction=0.2, mc=4, n_resamples=50)
    L = pipe.last_calibration
    c = pipe.config
    valid = run_splits(c["dataset"], image_size=c["image_size"], seed=c["seed"], subset=c["subset"])[1]
    for i in range(4):
        a, b = pipe(valid[i]["image"], method=None), pipe(valid[i]["image"], method=None, mc=0)
        assert a.group_probability == pytest.approx(L["group_scores"]["cal"][i], abs=1e-5)
        assert a.group_probability == b.group_probability and (a.probs == b.probs).all()     # MC passes do not move it
        assert a.positive == (L["group_scores"]["cal"][i] >= pipe.threshold)
    assert s["flagged_fraction"] == pytest.approx((L["group_scores"]["cal"] >= pipe.threshold).mean())
    assert (L["group_scores"]["cal"][L["group_labels"] == 1] >= pipe.threshold).mean() >= 0.8   # the target, in-sample
    assert s["score"].startswith("softmax(logits / T)") and pipe.mc == s["mc_passes"] == 4
    # the referral cut-off and a case's entropy come from the same MC-dropout summary
    m = cad.mc_dropout(pipe.model, pipe._inputs(valid.select(range(3))), 4, pipe.temperature)
    assert np.quantile(L["mc"]["entropy"], 0.8) == pytest.approx(pipe.refer_above)
    assert m["entropy"].shape == (3,)
    f = pipe.save(); assert json.loads(f.read_text())["mc"] == 4


@pytest.mark.parametrize("kw,msg", [
    (dict(sensitivity=1.5), r"target sensitivity must be in \(0, 1\]"),
    (dict(sensitivity=0), r"target sensitivity must be in \(0, 1\]"),
    (dict(specificity=-0.1), r"target specificity must be in \(0, 1\]"), (dict(sensitivity=None), "exactly one"),
    (dict(refer_fraction=1.0), "refer every case"),
    (dict(refer_fraction=-0.1), r"refer_fraction .* must be in \[0, 1\]"),
    (dict(folds=1), r"folds must be in \[2"), (dict(folds=2.5), "folds must be an integer"),
    (dict(mc=0), r"mc .* must be in \[1"),
    (dict(n_resamples=0), "n_resamples"), (dict(grouping_name="nonsense"), "unknown grouping 'nonsense'"),
])
def test_calibrate_checks_its_arguments(run, kw, msg):
    pipe = cad.CADPipeline.from_run(run)
    with pytest.raises(UsageError, match=msg): pipe.calibrate(**kw)


def test_calibrate_run_writes_cad_json(run, tmp_path):
    r = _copy_run(run, tmp_path / "r")
    f = cad.calibrate_run(r, sensitivity=0.8, refer=0.2, folds=2, mc=3, n_resamples=100)
    assert f == r / "cad.json"
    d = json.loads(f.read_text())
    assert d["grouping"] == "solid" and d["summary"]["target"] == {"sensitivity": 0.8}
    assert d["summary"]["mc_passes"] == 3
    assert "grouping solid" in cad.format_summary(d["summary"])
    f = cad.calibrate_run(r, specificity=0.75, mc=2, n_resamples=100)
    assert json.loads(f.read_text())["summary"]["target"] == {"specificity": 0.75}
    default = json.loads(cad.calibrate_run(r, mc=2, n_resamples=100).read_text())["summary"]["target"]
    assert default == {"sensitivity": 0.9}
    before = f.read_bytes()
    for kw, msg in [(dict(sensitivity=0.9, specificity=0.9), "not both"), (dict(mc=0), "mc"), (dict(folds=1), "folds"),
                    (dict(refer=1), "refer every case"), (dict(sensitivity=2), "sensitivity"),
                    (dict(grouping="x"), "unknown grouping")]:
        with pytest.raises(UsageError, match=msg): cad.calibrate_run(r, **kw)
    assert f.read_bytes() == before                                      # a refused call writes nothing
    with pytest.raises(RunError, match="does not exist"): cad.calibrate_run(tmp_path / "missing")


def test_cad_json_is_checked_when_read(run, tmp_path):
    r = _copy_run(run, tmp_path / "r")
    cad.calibrate_run(r, sensitivity=0.8, mc=2, n_resamples=100)
    good = json.loads((r / "cad.json").read_text())
    for broken, msg in [("{broken", "not valid JSON"), ("[1, 2]", "JSON object"),
                        (json.dumps({**good, "temperature": "<b>"}), "temperature must be a number"),
                        (json.dumps({**good, "temperature": -1}), "temperature must be in"),
                        (json.dumps({**good, "threshold": None}), "threshold must be a number"),
                        (json.dumps({**good, "grouping": "<i>x</i>"}), "unknown grouping"),
                        (json.dumps({**good, "summary": "<script>"}), "'summary' is not an object"),
                        (json.dumps({**good, "mc": -3}), "mc must be in"),
                        (json.dumps({**good, "flagged_fraction": "<b>"}), "flagged_fraction must be a number")]:
        (r / "cad.json").write_text(broken)
        with pytest.raises(RunError, match="cad.json is corrupt .*" + msg): cad.CADPipeline.from_run(r)


def test_pipeline_needs_a_classification_run(tmp_path):
    from gynlab.segment import train_segmenter
    seg = tmp_path / "seg"
    train_segmenter("phantom-uterus-mri", epochs=1, image_size=32, subset=16, out=seg, progress=False)
    with pytest.raises(RunError, match="segmentation run.*gynlab biometry"): cad.CADPipeline.from_run(seg)
    with pytest.raises(RunError, match="segmentation run"): cad.calibrate_run(seg)
    with pytest.raises(RunError, match="does not exist"): cad.CADPipeline.from_run(tmp_path / "missing")


def test_one_case(run, tmp_path):
    pipe = cad.CADPipeline.from_run(run)
    img = Image.fromarray((np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8))
    res = pipe(img, mc=4, name="case")
    assert res.file == "case" and res.probs.sum() == pytest.approx(1) and res.predicted in pipe.classes
    assert res.overlay is not None and res.overlay.shape[:2] == (32, 32) and res.image.dtype == np.uint8
    assert res.decision == "uncertain: refer to a human reader" or res.decision.startswith(
        ("specialist review suggested: P(solid)", "no referral suggested by the model: P(solid)"))
    none = pipe(np.zeros((40, 40), np.uint8), mc=0, method=None)
    assert none.overlay is None and math.isnan(none.mutual_information) and none.file == "image"
    assert math.isnan(none.entropy) and not none.uncertain          # no MC passes: no uncertainty, no referral
    with pytest.raises(UsageError, match="mc"): pipe(img, mc=-1)
    with pytest.raises(UsageError, match="method: unknown value 'nonsense'"): pipe(img, method="nonsense")
    from gynlab.core import BadImageError
    with pytest.raises(BadImageError, match="nope.png"): pipe(tmp_path / "nope.png")
