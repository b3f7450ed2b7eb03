"""Segmentation metrics (gynlab.metrics) against scikit-learn, SciPy and (if installed) MONAI; edge cases; head
circumference."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, directed_hausdorff
from sklearn.metrics import f1_score, jaccard_score

from gynlab.metrics import (dice, iou, hd95, boundary, per_class_scores, segmentation_metrics, ellipse_perimeter,
                            fit_ellipse, fitted_ellipse_mask, head_circumference, largest_component)
from gynlab.exercises.seg_metrics import check_dice, check_hc_from_diameters

DATA = Path(__file__).parents[1].parent / "shared" / "data"


def blobs(rng, shape=(40, 48), p=0.5):
    "A random binary mask made of a few rectangles (sometimes empty)."
    m = np.zeros(shape, bool)
    for _ in range(rng.integers(0, 4)):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        m[y : y + rng.integers(1, 15), x : x + rng.integers(1, 15)] = True
    return m


def ref_hd(p, g, spacing=(1.0, 1.0), q=95):
    "Brute-force reference: boundary points, all pairwise distances (scipy cdist), per-point minimum, percentile."
    bp, bg = np.argwhere(boundary(p)) * spacing, np.argwhere(boundary(g)) * spacing
    d = cdist(bp, bg)
    return max(np.percentile(d.min(1), q), np.percentile(d.min(0), q))


@pytest.mark.parametrize("seed", range(6))
def test_dice_iou_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    p, g = blobs(rng), blobs(rng)
    assert dice(p, g) == pytest.approx(f1_score(g.ravel(), p.ravel(), zero_division=1.0))
    assert iou(p, g) == pytest.approx(jaccard_score(g.ravel(), p.ravel(), zero_division=1.0))
    assert dice(p, g) == pytest.approx(2 * iou(p, g) / (1 + iou(p, g)))


def test_edge_cases():
    z, one = np.zeros((9, 9), bool), np.zeros((9, 9), bool)
    one[4, 4] = True
    assert (dice(z, z), iou(z, z), hd95(z, z)) == (1.0, 1.0, 0.0)          # both empty: agreement
    assert (dice(z, one), iou(one, z)) == (0.0, 0.0)                      # one empty
    assert hd95(z, one) == float("inf") and hd95(one, z) == float("inf")
    assert (dice(one, one), iou(one, one), hd95(one, one)) == (1.0, 1.0, 0.0)  # one-pixel object
    other = np.zeros((9, 9), bool); other[7, 8] = True                    # 3 rows, 4 columns away
    assert dice(one, other) == 0.0 and hd95(one, other) == pytest.approx(5.0)
    assert hd95(one, other, spacing=(2.0, 0.5)) == pytest.approx(np.hypot(6.0, 2.0))
    with pytest.raises(ValueError, match="binary"): dice(one * 2, one)
    with pytest.raises(ValueError, match="shape"): iou(one, one[:5])


@pytest.mark.parametrize("seed", range(6))
def test_hd95_matches_bruteforce_and_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    p, g = blobs(rng), blobs(rng)
    if not p.any() or not g.any():
        p[3:8, 3:8] = True; g[20:30, 10:12] = True
    assert hd95(p, g) == pytest.approx(ref_hd(p, g))
    assert hd95(p, g, spacing=(0.7, 1.3)) == pytest.approx(ref_hd(p, g, np.array([0.7, 1.3])))
    # the 100th percentile is the classic Hausdorff distance between the two outlines (SciPy)
    bp, bg = np.argwhere(boundary(p)), np.argwhere(boundary(g))
    classic = max(directed_hausdorff(bp, bg)[0], directed_hausdorff(bg, bp)[0])
    assert hd95(p, g, percentile=100) == pytest.approx(classic)


def test_hd95_matches_monai():
    monai_metrics = pytest.importorskip("monai.metrics", reason="MONAI (a dev requirement) is not installed")
    import warnings
    rng = np.random.default_rng(7)
    for _ in range(5):
        p, g = blobs(rng), blobs(rng)
        p[5:12, 5:12] = True; g[8:20, 6:16] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = monai_metrics.compute_hausdorff_distance(torch.tensor(p)[None, None].float(),
                                                           torch.tensor(g)[None, None].float(),
                                                           percentile=95, spacing=[0.5, 2.0])
        assert hd95(p, g, spacing=(0.5, 2.0)) == pytest.approx(float(want), rel=1e-5)


def test_segmentation_metrics_and_per_class():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, (4, 16, 16))
    pred = truth.copy(); pred[0, :8] = 0; pred[2] = 1
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 3).permute(0, 3, 1, 2).float()
    m = segmentation_metrics(logits, torch.tensor(truth), ["bg", "a", "b"])
    want = np.mean([np.mean(per_class_scores(pred[i], truth[i], 3)["dice"]) for i in range(4)])
    assert m["dice"] == pytest.approx(want)
    assert m["dice_b"] == pytest.approx(np.mean([dice(pred[i] == 2, truth[i] == 2) for i in range(4)]))
    assert m["iou"] < m["dice"] < 1.0
    # images where a class is absent from both count as 1 for that class
    z = torch.zeros(2, 8, 8, dtype=torch.long)
    assert segmentation_metrics(torch.nn.functional.one_hot(z, 2).permute(0, 3, 1, 2).float(), z)["dice"] == 1.0


def ellipse_mask(shape, center, a, b, angle_deg=0.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    t = np.radians(angle_deg); dy, dx = yy - center[0], xx - center[1]
    u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


@pytest.mark.parametrize("a,b,angle,px", [(30, 20, 30, 0.5), (60, 45, -70, 0.25), (12, 9, 10, 1.2), (40, 40, 0, 1.0)])
def test_head_circumference_synthetic(a, b, angle, px):
    m = ellipse_mask((150, 160), (75, 80), a, b, angle)
    want = ellipse_perimeter(a * px, b * px)
    assert abs(head_circumference(m, px) - want) / want < 0.01
    e = fit_ellipse(m)
    assert e["a"] == pytest.approx(a, rel=0.02) and e["b"] == pytest.approx(b, rel=0.02)


def test_head_circumference_of_a_speck_is_nan():
    "A prediction whose largest blob has 1 or 2 pixels has no skull to fit: NaN (counted as a failure), not an error."
    from gynlab.core import UsageError
    for n in (0, 1, 2):
        m = np.zeros((20, 20), bool); m[5, 5:5 + n] = True
        assert np.isnan(head_circumference(m, 0.5))
    m = np.zeros((20, 20), bool); m[5, 5:8] = True
    assert head_circumference(m, 0.5) > 0
    with pytest.raises(UsageError, match="2 pixels"): fit_ellipse(m[:, :7])     # the fit itself still refuses


def test_head_circumference_cleans_predictions():
    m = ellipse_mask((120, 120), (60, 60), 40, 30, 0)
    noisy = m.copy(); noisy[55:60, 50:58] = False; noisy[2:5, 2:5] = True   # a hole and a stray blob
    assert head_circumference(noisy, 1.0) == pytest.approx(head_circumference(m, 1.0), rel=1e-6)
    assert head_circumference(noisy, 1.0, clean=False) != pytest.approx(head_circumference(m, 1.0), rel=1e-3)
    assert np.isnan(head_circumference(np.zeros((10, 10)), 1.0))
    assert not largest_component(np.zeros((5, 5))).any()
    with pytest.raises(ValueError, match="ellipse"): fit_ellipse(np.eye(4)[:2, :2])


@pytest.mark.parametrize("r_radius, c_radius, rotation", [(30, 20, 0.0), (22, 35, 0.5), (40, 28, -1.1), (9, 6, 2.0)])
def test_fitted_ellipse_mask_redraws_an_ellipse_drawn_by_scikit_image(r_radius, c_radius, rotation):
    """An ellipse drawn by scikit-image comes back from fit-and-redraw almost pixel for pixel, whatever its tilt (a
    wrong sign of the angle would halve the overlap of a tilted ellipse); a stray blob and a hole change nothing."""
    from skimage.draw import ellipse
    m = np.zeros((100, 110), bool)
    m[ellipse(50, 55, r_radius, c_radius, shape=m.shape, rotation=rotation)] = True
    redrawn = fitted_ellipse_mask(m)
    assert redrawn.dtype == bool and redrawn.shape == m.shape
    assert dice(redrawn, m) > (0.97 if r_radius < 10 else 0.99)
    noisy = m.copy(); noisy[48:52, 50:56] = False; noisy[1:4, 1:4] = True        # a hole and a blob far away
    assert (fitted_ellipse_mask(noisy) == redrawn).all() and not redrawn[1:4, 1:4].any()
    assert head_circumference(redrawn) == pytest.approx(head_circumference(m), rel=0.01)


def test_fitted_ellipse_mask_of_nothing_is_empty():
    "No skull (an empty mask, a 2-pixel speck) gives an empty ellipse, scored Dice 0 against a real skull; 3-D refused."
    from gynlab.core import UsageError
    for n in (0, 2):
        m = np.zeros((20, 20), bool); m[5, 5:5 + n] = True
        out = fitted_ellipse_mask(m)
        assert out.shape == (20, 20) and not out.any()
    with pytest.raises(UsageError, match="2-D"): fitted_ellipse_mask(np.ones((2, 5, 5), bool))


def test_case_rows_score_the_fitted_ellipse_of_a_ragged_skull():
    "HC18 rows carry the Dice of the predicted skull's ellipse: above a ragged mask's own Dice, and computed as named."
    from gynlab.segment import _case_row
    truth = torch.from_numpy(ellipse_mask((96, 96), (48, 48), 36, 27, 20).astype(np.int64))
    pred = truth.clone(); pred[10:14, 80:86] = 1; pred[46:50, 10:40] = 0                     # a blob; a bite
    row = _case_row(0, pred, truth, [{"file": "x.png", "pixel_size_mm": 0.2, "head_circumference_mm": 60.0}],
                    ["file", "pixel_size_mm", "head_circumference_mm"], 2)
    assert row["dice_ellipse"] == pytest.approx(dice(fitted_ellipse_mask(pred.numpy() == 1), truth.numpy() == 1))
    assert row["dice"] < row["dice_ellipse"] <= 1 and row["dice_ellipse"] > 0.98


def test_ramanujan():
    assert ellipse_perimeter(1, 1) == pytest.approx(2 * np.pi)
    # against the exact perimeter by numerical integration
    a, b = 50.0, 30.0
    t = np.linspace(0, 2 * np.pi, 200001)
    exact = np.trapezoid(np.hypot(a * np.sin(t), b * np.cos(t)), t)
    assert ellipse_perimeter(a, b) == pytest.approx(exact, rel=1e-5)


@pytest.mark.skipif(not (DATA / "hc18").is_dir(), reason="real HC18 data not present at ../shared/data/hc18")
def test_hc18_truth_masks_close_to_official_hc():
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gynlab.data import load
    v = load("hc18", root=DATA)["validation"]
    v = v.select(range(0, len(v), 3))
    err = np.array([head_circumference(np.asarray(r["mask"]) > 0, r["pixel_size_mm"]) - r["head_circumference_mm"]
                    for r in v])
    assert np.abs(err).mean() < 2.0 and np.abs(err).max() < 5.0


def test_checkers():
    assert check_dice(lambda p, t: 1.0 if (p.sum() + t.sum()) == 0 else 2 * (p & t).sum() / (p.sum() + t.sum()))
    assert not check_dice(lambda p, t: (p & t).sum() / (p | t).sum())              # that is IoU
    with np.errstate(invalid="ignore"):
        assert not check_dice(lambda p, t: 2 * (p & t).sum() / (p.sum() + t.sum()))  # nan for two empty masks
    hc = lambda bpd, ofd: ellipse_perimeter(ofd / 2, bpd / 2)
    assert check_hc_from_diameters(hc)
    assert not check_hc_from_diameters(lambda bpd, ofd: ellipse_perimeter(ofd, bpd))
