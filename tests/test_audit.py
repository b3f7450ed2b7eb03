"""Tests for gynlab.audit: dHash vs imagehash, duplicate and leakage audit, caliper detection/hiding, subgroup_report,
model cards."""
import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

from gynlab import audit as A
from gynlab.core import DataError, RunError, UsageError
from gynlab.phantoms import phantom_pelvic_us
from gynlab.exercises import responsible as XR


@pytest.fixture(scope="module")
def us():
    "Pelvic ultrasound phantoms at 96 px (grey), as PIL images with labels and groups."
    dd = phantom_pelvic_us(n=40, image_size=96, seed=3)
    return [dict(r) for r in dd["train"]] + [dict(r) for r in dd["validation"]]


# ------------------------------------------------------------------ hashing (gynlab.data's: tests/test_data.py)
def test_audit_uses_the_data_layers_hash_pairs_and_threshold(us):
    from gynlab import data as gd
    a = A.audit({"train": us[:6], "validation": us[6:12]}, max_distance=110)
    np.testing.assert_array_equal(a.hashes, np.stack([gd.dhash(r["image"]) for r in us[:12]]))
    want = gd.near_duplicate_pairs(a.hashes, 110)
    assert want and sorted(zip(a.pairs.a, a.pairs.b, a.pairs.distance)) == sorted(want)
    assert A.audit({"train": us[:3]}).max_distance == gd.near_duplicate_distance(16) == 20
    assert A.audit({"train": us[:3]}, hash_size=8).max_distance == gd.near_duplicate_distance(8)
    assert "dhash" not in A.__all__ and "hamming" not in A.__all__      # one implementation, in the data layer


# ------------------------------------------------------------------ audit
def test_audit_finds_planted_duplicates_and_not_distinct_images(us):
    train, valid = [dict(r) for r in us[:30]], [dict(r) for r in us[30:]]
    clean = A.audit({"train": train, "validation": valid})
    assert len(clean.pairs) == 0, f"distinct phantoms flagged as duplicates:\n{clean.pairs}"
    assert clean.summary()["groups_in_several_splits"] == 0
    n_tr = len(train)
    train.append(dict(train[4]))                                           # exact copy within train
    valid.append({**train[8], "group": "copy-8"})                          # exact copy across splits
    small = train[12]["image"].resize((70, 70), Image.BILINEAR).resize((96, 96), Image.BILINEAR)
    valid.append({**train[12], "image": small, "group": "near-12"})        # re-sampled copy across splits
    valid.append({**valid[0], "image": valid[0]["image"], "group": train[2]["group"], "label": valid[0]["label"]})
    a = A.audit({"train": train, "validation": valid})
    total = len(train) + len(valid)
    p = a.pairs
    pairs = {(int(x), int(y)): (bool(e), int(d)) for x, y, e, d in zip(p.a, p.b, p.exact, p.distance)}
    assert pairs[(4, n_tr)] == (True, 0)
    assert pairs[(8, total - 3)][0] is True
    assert (12, total - 2) in pairs and pairs[(12, total - 2)][0] is False
    s = a.summary()
    assert s["exact_pairs_within"] == 2 and s["exact_pairs_across"] == 1 and s["near_pairs_across"] == 2
    assert train[2]["group"] in a.group_leaks
    assert set(a.leaks().split_b) == {"validation"}
    assert a.counts.values.sum() == total


def test_audit_label_conflicts_and_columns_dict(us):
    imgs = [r["image"] for r in us[:5]]
    a = A.audit({"train": {"image": imgs, "label": [0, 1, 2, 0, 1]}, "validation": {"image": [imgs[1]], "label": [2]}})
    assert a.summary()["label_conflicts"] == 1 and a.summary()["near_pairs_across"] == 1


def test_audit_bad_input():
    with pytest.raises(UsageError, match="non-empty mapping"): A.audit([])
    with pytest.raises(DataError, match="no 'image' column"): A.audit({"train": [{"img": np.zeros((4, 4))}]})
    with pytest.raises(DataError, match="split 'train', row 0.*missing"):
        A.audit({"train": [{"image": "/no/such/file.png"}]})
    with pytest.raises(DataError, match="split 'train', row 1 \\(b.png\\).*corrupt"):
        A.audit({"train": [{"image": np.zeros((8, 8), np.uint8), "file": "a.png"},
                           {"image": __file__, "file": "b.png"}]})
    with pytest.raises(DataError, match="row 0"): A.audit({"train": [{"image": np.zeros((2, 2, 2, 2))}]})


# ------------------------------------------------------------------ calipers
def _crossed(img, rng, n=2):
    a = np.asarray(img.convert("RGB"))
    for _ in range(n):
        y, x = (int(v) for v in rng.integers(6, 90, 2))
        a = A.draw_caliper(a, y, x, size=4)
    return a


def test_caliper_detector_on_drawn_crosses_vs_clean(us):
    rng = np.random.default_rng(1)
    clean = [np.asarray(r["image"].convert("RGB")) for r in us[:20]]
    marked = [_crossed(r["image"], rng) for r in us[:20]]
    grey_cross = [A.draw_caliper(c, 40, 40, 4, colour=(240, 240, 240)) for c in clean]
    assert not any(A.has_calipers(c) for c in clean)
    assert all(A.has_calipers(m) for m in marked)
    assert not any(A.has_calipers(g) for g in grey_cross), "bright grey tissue is not a caliper"
    m = A.caliper_mask(A.draw_caliper(clean[0], 50, 30, 5), dilate=0)
    assert m[50, 25:36].all() and m[45:56, 30].all() and m.sum() == 21


def test_planted_marks_and_measures(us):
    rng = np.random.default_rng(2)
    a = A.plant_marks(us[0]["image"], rng)
    meas = A.mark_measures(a)
    assert meas["caliper_px"] >= 10 and meas["mark_px"] >= meas["caliper_px"]
    assert A.mark_measures(np.asarray(us[0]["image"]))["caliper_px"] == 0  # grey-scale: nothing
    with pytest.raises(ValueError, match="outside"): A.draw_caliper(a, 200, 3)


def test_hide_marks_removes_marks_and_restores_pixels(us):
    rng = np.random.default_rng(3)
    for r in us[:8]:
        clean = np.asarray(r["image"].convert("RGB"))
        marked = _crossed(r["image"], rng)
        hidden = A.hide_marks(marked)
        assert not A.has_calipers(hidden) and A.caliper_mask(hidden, dilate=0).sum() == 0
        changed = A.caliper_mask(marked, dilate=2)
        np.testing.assert_array_equal(hidden[~changed], marked[~changed])       # only the marks are touched
        cross = A.caliper_mask(marked, dilate=0)
        err = lambda im: np.abs(im.astype(float) - clean)[cross].mean()
        assert err(hidden) < err(marked) / 2
    with pytest.raises(ValueError, match="does not match"): A.hide_marks(marked, np.zeros((3, 3), bool))


def test_mark_association_detects_dependence_and_independence():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    dep = {"label": y, "caliper_px": np.where(y == 1, 50, 0) * (rng.random(200) < 0.9), "text_px": 0}
    dep["mark_px"] = dep["caliper_px"] * 2
    r = A.mark_association(__import__("pandas").DataFrame(dep))
    assert r["p_value"] < 1e-6 and r["marks_only_balanced_accuracy"] > 0.85
    ind = {"label": y, "caliper_px": (rng.random(200) < 0.5) * 50, "text_px": 0}
    ind["mark_px"] = ind["caliper_px"]
    r = A.mark_association(__import__("pandas").DataFrame(ind))
    assert r["p_value"] > 0.001 and r["marks_only_balanced_accuracy"] < 0.65


# ------------------------------------------------------------------ subgroup_report
def test_subgroup_report_matches_sklearn_per_group():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300); g = rng.choice(["doppler", "grey", "calipers"], 300)
    prob1 = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1); probs = np.stack([1 - prob1, prob1], 1)
    rep = A.subgroup_report(y, probs, g, n_boot=30, seed=1)
    pred = probs.argmax(1)
    for k in ["doppler", "grey", "calipers"]:
        s = g == k
        assert rep.loc[k, "n"] == s.sum() and rep.loc[k, "n_class_1"] == (y[s] == 1).sum()
        assert rep.loc[k, "accuracy"] == pytest.approx(accuracy_score(y[s], pred[s]))
        assert rep.loc[k, "balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[s], pred[s]))
        assert rep.loc[k, "sensitivity"] == pytest.approx(recall_score(y[s], pred[s]))
        assert rep.loc[k, "specificity"] == pytest.approx(recall_score(y[s], pred[s], pos_label=0))
        assert rep.loc[k, "auc"] == pytest.approx(roc_auc_score(y[s], probs[s, 1]))
        assert rep.loc[k, "accuracy_lo"] <= rep.loc[k, "accuracy"] <= rep.loc[k, "accuracy_hi"]
    assert rep.loc["all", "n"] == 300
    # smaller groups get wider intervals
    small = A.subgroup_report(y[:40], pred[:40], np.zeros(40), n_boot=60, overall=False)
    big = A.subgroup_report(y, pred, np.zeros(300), n_boot=60, overall=False)
    w = lambda r: (r.accuracy_hi - r.accuracy_lo).iloc[-1]
    assert w(small) > w(big)


def test_subgroup_report_multiclass_and_bad_input():
    y = np.array([0, 1, 2, 2, 1, 0]); p = np.array([0, 1, 1, 2, 1, 0]); g = ["a", "a", "a", "b", "b", "b"]
    rep = A.subgroup_report(y, p, g, n_boot=0)
    assert rep.loc["a", "accuracy"] == pytest.approx(2 / 3) and "sensitivity" not in rep
    with pytest.raises(ValueError, match="lengths differ"): A.subgroup_report(y, p, g[:3])
    with pytest.raises(ValueError, match="shape"): A.subgroup_report(y, np.zeros((6, 2, 2)), g)
    with pytest.raises(ValueError, match="no cases"): A.subgroup_report([], [], [])


# ------------------------------------------------------------------ model card
def _config(classes=("benign", "malignant"), dataset="phantom-uterus-mri"):
    "A config.json as gynlab.tasks.train_classifier writes it (the fields gynlab.runs.read_config checks, and more)."
    return {"task": "classify", "dataset": dataset, "target": "label", "model": "smallcnn", "classes": list(classes),
            "image_size": 64, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "epochs": 3, "n_train": 240,
            "n_valid": 80,
            "validation_split": "validation", "versions": {"gynlab": "0.1.0"}}


def _run(tmp_path, classes=("benign", "malignant"), acc=0.8125, dataset="phantom-uterus-mri"):
    run = tmp_path / "run"; run.mkdir()
    (run / "config.json").write_text(json.dumps(_config(classes, dataset)))
    (run / "metrics.json").write_text(json.dumps({"history": [], "best_epoch": 3, "final": {
        "loss": 0.4321, "accuracy": acc, "balanced_accuracy": 0.7777, "auc": 0.9012,
        "confusion_matrix": [[30, 10], [5, 35]]}}))
    return run


def test_model_card_contains_the_runs_numbers(tmp_path):
    from gynlab.data import card
    run = _run(tmp_path)
    sub = A.subgroup_report([0, 1, 1, 0], [0, 1, 0, 0], ["Doppler", "Doppler", "grey", "grey"], n_boot=0)
    md = A.model_card(run, subgroups=sub, intended_use="Teaching only.", limitations=["Few images."])
    for s in ["0.812", "0.778", "0.901", "0.432", "smallcnn", "phantom-uterus-mri", "Teaching only.", "Few images.",
              "Not for clinical use", "NOT FOR CLINICAL USE", "Doppler", "| grey |", "training images: 240"]:
        assert s in md, f"{s!r} missing from the card"
    assert A._md(card("phantom-uterus-mri").citation) in md
    d = A.model_card_data(run)
    assert d["metrics"]["accuracy"] == 0.8125 and d["classes"] == ["benign", "malignant"] and d["data"]["n_valid"] == 80


def test_model_card_escapes_odd_text(tmp_path):
    run = _run(tmp_path, classes=("<script>alert('x')</script>", "a|b *bold* [link](http://x)"), dataset="no-such-set")
    md = A.model_card(run, extra={"note": "<img src=x onerror=alert(1)>\nnew line"})
    assert "<script>" not in md and "<img" not in md and "&lt;script&gt;" in md
    assert "a\\|b \\*bold\\* \\[link\\]\\(http://x\\)" in md
    assert "\nnew line" not in md
    assert "unknown dataset" in md
    html = A.model_card(run, fmt="html")
    assert "<script>" not in html and html.startswith("<!doctype html>")


def test_model_card_bad_input(tmp_path):
    with pytest.raises(RunError, match="does not exist"): A.model_card(tmp_path / "missing")
    (tmp_path / "half").mkdir(); (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(RunError, match="'model' is missing"): A.model_card(tmp_path / "half")
    (tmp_path / "half" / "config.json").write_text(json.dumps(_config()))
    with pytest.raises(RunError, match="metrics.json is missing"): A.model_card(tmp_path / "half")
    (tmp_path / "half" / "metrics.json").write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"): A.model_card(tmp_path / "half")
    with pytest.raises(UsageError, match="fmt"): A.model_card(_run(tmp_path), fmt="pdf")


def test_model_card_of_a_real_run(tmp_path):
    "A run trained by gynlab.tasks.train_classifier: the card shows its final validation metrics and what it predicts."
    from gynlab.core import read_json
    from gynlab.tasks import train_classifier
    train_classifier("phantom-uterus-mri", out=tmp_path / "run", epochs=1, image_size=32, subset=32, progress=False)
    md = A.model_card(tmp_path / "run")
    final = read_json(tmp_path / "run" / "metrics.json")["final"]
    assert f"| accuracy | {final['accuracy']:.3f} |" in md and "predicts: label" in md and "NOT FOR CLINICAL USE" in md


# ------------------------------------------------------------------ shortcut, exercises, real data
def test_hidden_gap_measures_a_mark_reading_model():
    "A 'model' that only looks at yellow pixels: perfect with the marks, chance-level when they are hidden."
    import torch
    class MarkModel(torch.nn.Module):
        def forward(self, x):  # x normalised (B,3,H,W); yellow = R,G high and B low
            y = ((x[:, 0] + x[:, 1]) / 2 - x[:, 2]).flatten(1).max(1).values
            return torch.stack([-y + 1.5, y - 1.5], 1)
    rng = np.random.default_rng(0)
    base = [np.full((48, 48, 3), 90, np.uint8) + rng.integers(0, 20, (48, 48, 1), dtype=np.uint8) for _ in range(20)]
    labels = np.array([0, 1] * 10)
    imgs = [A.draw_caliper(b, 24, 24, 4) if l else b for b, l in zip(base, labels)]
    r = A.hidden_gap(MarkModel(), imgs, labels, image_size=48)
    assert r["original"]["accuracy"] == 1.0 and r["hidden"]["accuracy"] == 0.5 and r["drop_accuracy"] == 0.5
    with pytest.raises(ValueError, match="labels"): A.hidden_gap(MarkModel(), imgs, labels[:3])


def test_exercise_checkers_accept_solutions_and_reject_wrong_answers():
    def near_pairs(H, d):
        return {(i, j) for i in range(len(H)) for j in range(i + 1, len(H)) if (H[i] != H[j]).sum() <= d}
    assert XR.check_near_pairs(near_pairs)
    assert not XR.check_near_pairs(lambda H, d: {(i, j) for i in range(len(H)) for j in range(i + 1, len(H))
                                                 if (H[i] != H[j]).sum() < d})
    detect = lambda a: bool(((np.minimum(a[..., 0].astype(int), a[..., 1]) - a[..., 2]) > 60).sum() >= 5)
    assert XR.check_caliper_detector(detect)
    assert not XR.check_caliper_detector(lambda a: True)
    from sklearn.metrics import recall_score
    sens = lambda y, p, g: {k: recall_score(np.asarray(y)[np.asarray(g) == k], np.asarray(p)[np.asarray(g) == k])
                            for k in set(g)}
    assert XR.check_group_sensitivity(sens)
    fb = XR.check_group_sensitivity(lambda y, p, g: {k: float((np.asarray(p)[np.asarray(g) == k] == 1).mean())
                                                     for k in set(g)})
    assert not fb and "among all cases" in fb.message


def test_new_checkers_accept_the_answer_and_reject_the_plausible_wrong_one():
    assert XR.check_leak_accuracy((0.42 * 136 + 9) / 146)
    fb = XR.check_leak_accuracy((0.42 + 0.9) / 2)
    assert not fb and "plain average" in fb.message
    import pandas as pd
    t = pd.DataFrame({"panel": ["marks shown"] * 3 + ["marks hidden"] * 3,
                      "group": ["all", "calipers", "no calipers"] * 2,
                      "sensitivity": [0.85, 1.0, 0.14, 0.02, 0.0, 0.14]}).set_index(["panel", "group"])
    assert XR.check_unmeasured_row(("marks hidden", "all"), t)
    assert not XR.check_unmeasured_row(("marks shown", "all"), t) and not XR.check_unmeasured_row("all", t)


def test_leak_experiment_on_phantoms():
    "Second frames planted across the split: the audit finds them, the grouped split moves them, a probe remembers."
    from gynlab.data import leak_free_split, near_duplicate_clusters, split_overlap
    from gynlab.models.pretrained import linear_probe
    data = XR.phantom_leak(n=150, n_leaks=12, seed=1)
    a = A.audit(data)
    split = a.table.split.to_numpy()
    clusters = near_duplicate_clusters(a.hashes)
    grouped = np.array(leak_free_split(split, clusters))
    leaked = (split == "validation") & np.isin(clusters, clusters[split == "train"])
    planted = a.table.file.str.startswith("frame2-").to_numpy()
    assert (leaked == planted).all() and planted.sum() == 12 and len(a.leaks()) >= 12
    assert split_overlap({k: list(clusters[grouped == k]) for k in ("train", "validation")}) == {}
    assert (grouped[planted] == "train").all() and (grouped[~planted] == split[~planted]).all()
    X = A.image_features([data[s][int(i)]["image"] for s, i in zip(a.table.split, a.table["index"])])
    assert X.shape == (len(split), 1280)
    y = a.table.label.to_numpy().astype(int)
    right = linear_probe(X[split == "train"], y[split == "train"]).predict(X) == y
    assert right[planted].mean() > right[(split == "validation") & ~planted].mean() + 0.2


def test_pair_figure_shows_the_leaks(us):
    train, valid = [dict(r) for r in us[:6]], [dict(r) for r in us[6:10]] + [dict(us[2])]
    a = A.audit({"train": train, "validation": valid})
    fig = A.pair_figure(a, {"train": train, "validation": valid})
    assert len(fig.data) == 2 and fig.layout.width <= 900 and "0 bits" in fig.layout.annotations[1].text
    with pytest.raises(UsageError, match="no pairs"): A.pair_figure(a, {}, pairs=a.pairs.iloc[:0])


def test_mmotu_audit_real_data(shared_data):
    from gynlab.data import load
    dd = load("mmotu", root=shared_data / "mmotu_otu2d")
    val = dd["validation"].select(range(40))
    a = A.audit({"validation": val})
    assert len(a.table) == 40 and a.table.label_name.notna().all()
    share = (a.table.caliper_px >= 10).mean()
    assert 0.3 < share < 1.0, f"caliper share {share:.2f}: MMOTU images carry calipers on most, not all, images"
    i = int(a.table.caliper_px.idxmax())
    hidden = A.hide_marks(val[i]["image"])
    assert A.mark_measures(hidden)["caliper_px"] < a.table.caliper_px[i] / 10


def test_shortcut_gap_runs_both_arms_on_a_datasetdict():
    from gynlab.phantoms import phantom_uterus_mri
    dd = phantom_uterus_mri(n=40, image_size=32, seed=0)
    r = A.shortcut_gap(dd, epochs=1, image_size=32)
    assert set(r) == {"trained on original", "trained on hidden"}
    for arm in r.values():
        assert 0 <= arm["original"]["accuracy"] <= 1 and len(arm["hidden"]["pred"]) == len(dd["validation"])
        assert arm["n_lost"] + arm["n_gained"] <= arm["n_changed"] and 0 <= arm["p_value"] <= 1
    with pytest.raises(UsageError, match="validation"): A.shortcut_gap({"train": dd["train"]})
