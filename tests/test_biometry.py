"gynlab.biometry: Hadlock's formula, the skull plausibility checks, the HC offset, `measure` for a run or a mask."
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from gynlab import biometry
from gynlab.core import BadImageError, DataError, RunError, UsageError


def _ellipse_mask(h=270, w=400, a=90, b=60, angle_deg=0.0, cy=None, cx=None):
    yy, xx = np.mgrid[:h, :w]
    cy, cx = (h / 2 if cy is None else cy), (w / 2 if cx is None else cx)
    th = math.radians(angle_deg)
    u = (xx - cx) * math.cos(th) + (yy - cy) * math.sin(th)
    v = -(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _ramanujan(a, b): return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


# ---------- Hadlock ----------
def test_hadlock_formula_and_range():
    assert biometry.hadlock_ga_weeks(346) == pytest.approx(8.96 + 0.54 * 34.6 + 0.0003 * 34.6 ** 3)
    assert biometry.format_ga(20 + 3 / 7) == "20w 3d" and biometry.format_ga(float("nan")) == "n/a"
    ga = biometry.hadlock_ga_weeks(np.array([100.0, 200.0, 300.0]))
    assert np.all(np.diff(ga) > 0)
    with pytest.raises(UsageError, match="positive"): biometry.hadlock_ga_weeks(-5)


# ---------- a mask in, millimetres out ----------
def test_biometry_from_mask_on_known_ellipse():
    px = 0.3
    r = biometry.biometry_from_mask(_ellipse_mask(), px, image_size=(400, 270))
    assert r["hc_mm"] == pytest.approx(_ramanujan(90 * px, 60 * px), rel=0.01)
    assert r["ga_weeks"] == pytest.approx(biometry.hadlock_ga_weeks(r["hc_mm"]))
    assert r["in_range"] == (r["ga_weeks"] >= 14)
    assert r["checks"]["fill"] > 0.98 and r["checks"]["axis_ratio"] == pytest.approx(60 / 90, abs=0.01)
    json.dumps(r)                                                       # plain values only


@settings(max_examples=25, deadline=None)
@given(a=st.floats(40, 120), ratio=st.floats(0.62, 0.98), angle=st.floats(-90, 90), px=st.floats(0.1, 0.6))
def test_every_plausible_ellipse_is_accepted_and_measured(a, ratio, angle, px):
    b = a * ratio
    hc = _ramanujan(a * px, b * px)
    if not 50 <= hc <= 400: return                  # outside the physiological range: refused on purpose
    r = biometry.biometry_from_mask(_ellipse_mask(a=a, b=b, angle_deg=angle), px)
    assert r["hc_mm"] == pytest.approx(hc, rel=0.015)


@pytest.mark.parametrize("make,msg", [
    (lambda: np.ones((270, 400), bool), "covers 100% of the image"),                                  # full frame
    (lambda: np.pad(np.ones((1, 300), bool), ((135, 134), (50, 50))), "a line, not a head"),          # one line
    (lambda: np.pad(np.ones((2, 300), bool), ((135, 133), (50, 50))), "a line, not a head"),          # a thick line
    (lambda: _ellipse_mask(a=50, b=40, cx=100) | _ellipse_mask(a=50, b=40, cx=300), "pieces"),        # two heads
    (lambda: _ellipse_mask() & ~_ellipse_mask(a=80, b=50) & (np.mgrid[:270, :400][1] < 260), "ellipse"),  # an open ring
    (lambda: np.zeros((270, 400), bool), "empty"),
])
def test_implausible_masks_are_refused(make, msg):
    with pytest.raises(DataError, match=msg):
        biometry.biometry_from_mask(make(), 0.25, image_size=(400, 270))


def test_mask_must_match_the_image_size():
    twice = np.kron(_ellipse_mask(), np.ones((2, 2), bool))             # a mask twice the image size
    with pytest.raises(DataError, match="the mask is 800x540 px but the image is 400x270 px"):
        biometry.biometry_from_mask(twice, 0.25, image_size=(400, 270))
    with pytest.raises(DataError, match="2-D"): biometry.biometry_from_mask(np.ones((2, 3, 4, 5)), 0.25)


@pytest.mark.parametrize("px", [0, -0.2, float("nan"), float("inf"), 5.0, 0.001, "0.2", None, True])
def test_pixel_size_must_be_plausible(px):
    with pytest.raises(UsageError, match="pixel size"): biometry.biometry_from_mask(_ellipse_mask(), px)


def test_head_circumference_must_be_physiological():
    with pytest.raises(DataError, match="outside the range of fetal heads"):
        biometry.biometry_from_mask(_ellipse_mask(), 1.9)
    with pytest.raises(DataError, match="outside the range of fetal heads"):
        biometry.biometry_from_mask(_ellipse_mask(a=20, b=15), 0.2)      # ~ 2 cm: no fetal head


def test_reference_masks_of_hc18_all_pass():
    "The limits were set on these: every reference mask is a plausible skull, ~1.2 mm from the reference HC."
    from gynlab.data import find_data, load
    try: find_data("hc18")
    except DataError: pytest.skip("HC18 is not on this machine")
    diffs = [biometry.biometry_from_mask(np.asarray(r["mask"]) > 0, r["pixel_size_mm"], r["image"].size)["hc_mm"]
             - r["head_circumference_mm"] for split in load("hc18").values() for r in split]
    assert len(diffs) > 700 and 0.8 < np.mean(np.abs(diffs)) < 1.6 and np.max(np.abs(diffs)) < 4


# ---------- measure: a mask file or a run ----------
def _save(path, a):
    Image.fromarray(np.asarray(a, np.uint8) * (255 if np.asarray(a).dtype == bool else 1)).save(path)
    return path


def test_measure_with_a_mask_file(tmp_path):
    img = _save(tmp_path / "case.png", np.zeros((270, 400), np.uint8))
    m = _save(tmp_path / "skull.png", _ellipse_mask())
    out = biometry.measure(img, 0.5, mask=m)
    assert out["hc_mm"] == pytest.approx(biometry.biometry_from_mask(_ellipse_mask(), 0.5)["hc_mm"])
    text = biometry.format_biometry(out)
    assert "head circumference" in text and "not for clinical use" in text
    big = _save(tmp_path / "big.png", np.kron(_ellipse_mask(), np.ones((2, 2), bool)))
    with pytest.raises(DataError, match="800x540 px but the image is 400x270 px"): biometry.measure(img, 0.5, mask=big)
    full = _save(tmp_path / "full.png", np.ones((270, 400), bool))
    with pytest.raises(DataError, match="covers 100%"): biometry.measure(img, 0.5, mask=full)
    line = np.zeros((270, 400), bool); line[100, 20:380] = True
    with pytest.raises(DataError, match="a line"): biometry.measure(img, 0.5, mask=_save(tmp_path / "line.png", line))
    with pytest.raises(UsageError, match="one of the two"): biometry.measure(img, 0.5)
    with pytest.raises(UsageError, match="one of the two"): biometry.measure(img, 0.5, run=tmp_path, mask=m)
    with pytest.raises(UsageError, match="pixel size"): biometry.measure(img, -1, mask=m)
    bad = tmp_path / "broken.png"; bad.write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="broken.png"): biometry.measure(bad, 0.5, mask=m)
    with pytest.raises(BadImageError, match="broken.png"): biometry.measure(img, 0.5, mask=bad)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    "A real segmentation run with four classes (uterus MRI phantom): not a skull segmenter."
    from gynlab.segment import train_segmenter
    out = tmp_path_factory.mktemp("bio") / "mri"
    train_segmenter("phantom-uterus-mri", epochs=1, image_size=32, subset=16, out=out, progress=False)
    return out


def test_biometry_names_the_wrong_kind_of_run(seg_run, tmp_path):
    img = _save(tmp_path / "a.png", np.zeros((30, 30), np.uint8))
    with pytest.raises(UsageError, match="fetal-skull segmenter"): biometry.measure(img, 0.2, run=seg_run)
    cls = tmp_path / "cls"; cls.mkdir()
    cfg = {"task": "classify", "dataset": "phantom-pelvic-us", "model": "smallcnn", "classes": ["a", "b"],
           "image_size": 32, "channels": 1, "mean": [0.5], "std": [0.5]}
    (cls / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="classification run: biometry needs a segmentation run"):
        biometry.measure(img, 0.2, run=cls)
    with pytest.raises(RunError, match="does not exist"): biometry.measure(img, 0.2, run=tmp_path / "missing")


def test_hc_offset_learnt_and_subtracted(tmp_path, monkeypatch):
    "A segmenter that draws every skull 3 px too wide: the offset is learnt on 'training' images and removed."
    import datasets
    px = 0.25
    axes = [(80, 50), (100, 70), (60, 45)]
    split = datasets.Dataset.from_dict({
        "image": [Image.fromarray(_ellipse_mask(a=a, b=b).astype(np.uint8) * 255) for a, b in axes],
        "pixel_size_mm": [px] * 3, "head_circumference_mm": [_ramanujan(a * px, b * px) for a, b in axes]})
    calls = []
    def fake_segment(net, im, cfg, device=None, tta=False):   # the true ellipse grown by 3 px on each semi-axis
        calls.append(tta)
        m = np.asarray(im.convert("L")) > 0; ys, xs = np.nonzero(m)
        a, b = (xs.max() - xs.min() + 1) / 2, (ys.max() - ys.min() + 1) / 2
        return _ellipse_mask(*m.shape, a + 3, b + 3).astype(np.uint8)
    cfg = {"dataset": "hc18", "classes": ["background", "fetal head"]}
    monkeypatch.setattr(biometry, "_skull_segmenter", lambda run, device=None: (None, cfg))
    monkeypatch.setattr(biometry, "segment_image", fake_segment)
    run = tmp_path / "seg"; run.mkdir()
    assert biometry.hc_offset(run) is None
    f = biometry.fit_hc_offset(run, split)
    assert f == run / "biometry.json"
    d = json.loads(f.read_text())
    from gynlab.metrics import head_circumference
    expect = np.mean([head_circumference(fake_segment(None, r["image"], None) > 0, px) - r["head_circumference_mm"]
                      for r in split])
    assert d["n"] == 3 and d["refused"] == 0 and d["hc_offset_mm"] == pytest.approx(expect, rel=1e-9)
    assert 2 * math.pi * 3 * px < d["hc_offset_mm"] < 2 * math.pi * 4 * px     # grown by 3 px (+ rasterisation)
    assert biometry.hc_offset(run) == d["hc_offset_mm"]
    img = tmp_path / "case.png"; split[1]["image"].save(img)
    b = biometry.biometry(img, px, run)
    assert b["hc_mm"] == pytest.approx(b["hc_mm_uncorrected"] - d["hc_offset_mm"])
    truth = split[1]["head_circumference_mm"]
    assert abs(b["hc_mm"] - truth) < abs(b["hc_mm_uncorrected"] - truth) / 3
    assert "hc_mm_uncorrected" not in biometry.biometry(img, px, run, correct=False)
    m = biometry.measure(img, px, run=run)
    assert "mask" not in m and "subtracted" in biometry.format_biometry(m)
    json.dumps(m)
    assert d["tta"] is False and not any(calls)
    biometry.fit_hc_offset(run, split, tta=True)       # learnt with the mirror averaged in: biometry measures so too
    assert json.loads(f.read_text())["tta"] is True and all(calls[-3:])
    calls.clear(); biometry.biometry(img, px, run)
    assert calls == [True]
    calls.clear(); biometry.biometry(img, px, run, correct=False)    # the plain model: no offset, no mirror
    assert calls == [False]
    with pytest.raises(DataError, match="no reference head circumference"):
        biometry.fit_hc_offset(run, split.remove_columns("head_circumference_mm"))
    with pytest.raises(UsageError, match="limit"): biometry.fit_hc_offset(run, split, limit=0)
    (run / "biometry.json").write_text("{oops")
    with pytest.raises(RunError, match="biometry.json is corrupt"): biometry.biometry(img, px, run)
    assert "hc_offset_mm" not in biometry.biometry(img, px, run, correct=False)     # the file is not needed for it
    (run / "biometry.json").write_text(json.dumps({"hc_offset_mm": 3.0, "tta": "yes"}))
    with pytest.raises(RunError, match="tta must be true or false"): biometry.biometry(img, px, run)
    (run / "biometry.json").write_text(json.dumps({"hc_offset_mm": "<b>"}))
    with pytest.raises(RunError, match="biometry.json is corrupt"): biometry.hc_offset(run)


def test_hc_offset_of_a_fold_run_is_learnt_on_the_other_folds(tmp_path, monkeypatch):
    "A cross-validation run (`--fold 1/2`) learns its offset on the training split less fold 1, never on fold 1."
    from gynlab.data import find_data
    from gynlab.segment import segmentation_data
    try: find_data("hc18")
    except DataError: pytest.skip("HC18 is not on this machine")
    rest, held, _ = segmentation_data("hc18", image_size=None, fold="1/2")
    seen = []
    def fake_segment(net, im, cfg, device=None, tta=False):          # a plausible skull, whatever the image
        seen.append(im.size)
        return _ellipse_mask(*im.size[::-1], a=im.size[0] / 4, b=im.size[1] / 4).astype(np.uint8)
    cfg = {"dataset": "hc18", "classes": ["background", "fetal head"], "fold": [1, 2], "seed": 0}
    monkeypatch.setattr(biometry, "_skull_segmenter", lambda run, device=None: (None, cfg))
    monkeypatch.setattr(biometry, "segment_image", fake_segment)
    run = tmp_path / "seg"; run.mkdir()
    d = json.loads(biometry.fit_hc_offset(run).read_text())
    assert d["n"] + d["refused"] == len(rest) == len(seen) and len(rest) + len(held) > len(rest) > 0
    hc = np.array(rest["head_circumference_mm"])
    expect = np.mean([_ramanujan(w / 4 * p, h / 4 * p) for (w, h), p in zip(seen, rest["pixel_size_mm"])] - hc)
    assert d["hc_offset_mm"] == pytest.approx(expect, abs=2.0)      # the rest's references, not fold 1's
