"""The application lessons (81-85): their measurements checked against phantom truth and shapes with known answers.

Each test states its tolerance; the numbers they allow are the ones the lessons print on the default settings."""
import numpy as np
import pytest
from scipy import stats

from gynlab.core import UsageError
from gynlab.phantoms import MRI_FOV_MM, cytology_cell, sample_rng, slide_stain, star_q, uterus_mri


# --- lesson 81: cervical screening (gynlab.apps.cervical) -------------------------------------------------------------

from gynlab.apps import cervical as cx  # noqa: E402


def _cells(n, size, seed=5):
    "n phantom cells at `size` px, 4 per slide sharing a stain, as the phantom dataset draws them."
    return [cytology_cell(sample_rng(seed, "cytology", i), None, size,
                          stain=slide_stain(sample_rng(seed, "cytology", i // 4, 1))) for i in range(n)]


def test_cervical_area_and_nc_ratio_equal_phantom_truth():
    "On the true masks, nucleus area (µm²) and N/C ratio are the phantom's own values to rounding (1e-9 relative)."
    for d in _cells(60, 64):
        f = cx.nucleus_features(d["image"], d["mask"], d["features"]["pixel_size_um"])
        assert f["nucleus_area_um2"] == pytest.approx(d["features"]["nucleus_area_um2"], rel=1e-9)
        assert f["nc_ratio"] == pytest.approx(d["features"]["nc_ratio"], rel=1e-9)


def test_cervical_stain_and_shape_features_follow_phantom_parameters():
    "Spearman ρ against the drawing parameters at 64 px: irregularity ≥ 0.6, nuclear OD ≥ 0.7, chromatin CV ≥ 0.9."
    cells = _cells(240, 64)
    f = cx.feature_table([d["image"] for d in cells], [d["mask"] for d in cells], 80 / 64)
    truth = {k: np.array([d["features"][k] for d in cells])
             for k in ("nucleus_irregularity", "nucleus_od", "chromatin_coarseness")}
    assert stats.spearmanr(f[:, 2], truth["nucleus_irregularity"], nan_policy="omit")[0] >= 0.6
    assert stats.spearmanr(f[:, 3], truth["nucleus_od"])[0] >= 0.7
    assert stats.spearmanr(f[:, 4], truth["chromatin_coarseness"])[0] >= 0.9


def test_cervical_irregularity_recovers_the_drawn_value_at_128px():
    "At 128 px the measured irregularity is ≈ 0.8 × the phantom's (the ellipse absorbs harmonic 2): median 0.8 ± 0.15."
    cells = [d for d in _cells(160, 128) if d["features"]["nucleus_irregularity"] > 0.05]
    ratio = [cx.contour_irregularity(d["mask"] == 2) / d["features"]["nucleus_irregularity"] for d in cells]
    assert len(ratio) > 40 and 0.65 <= np.median(ratio) <= 0.95


def test_cervical_irregularity_of_known_shapes():
    "Smooth ellipses and small discs score ~0 (grid floor removed); stars drawn with CV 0.12 score 0.8 × 0.12 ± 20%."
    yy, xx = np.mgrid[0:96, 0:96] + 0.5
    assert cx.contour_irregularity(((yy - 48) / 30) ** 2 + ((xx - 48) / 14) ** 2 <= 1) < 0.01
    assert cx.contour_irregularity(np.hypot(yy - 48, xx - 48) <= 3) < 0.03
    got = []
    for i in range(40):
        rng = np.random.default_rng(i)
        c = (rng.normal(size=5) + 1j * rng.normal(size=5)) / np.sqrt(np.arange(2, 7))
        c *= 0.12 / np.sqrt((np.abs(c) ** 2).sum() / 2)
        got.append(cx.contour_irregularity(star_q(yy, xx, 48, 48, 25, c) <= 1))
    assert 0.8 * 0.12 * 0.8 <= np.mean(got) <= 0.8 * 0.12 * 1.2
    line = np.zeros((20, 20), bool); line[10, 2:12] = True
    assert np.isnan(cx.contour_irregularity(line)) and np.isnan(cx.contour_irregularity(np.zeros((20, 20), bool)))
    with pytest.raises(UsageError, match="2-D"): cx.contour_irregularity(np.zeros((2, 8, 8), bool))


def test_cervical_nucleus_features_edge_cases():
    "No nucleus: all NaN. A nucleus-only mask: N/C NaN. A stray speck of 'nucleus' does not change the area."
    img = np.full((32, 32, 3), 240, np.uint8)
    assert all(np.isnan(v) for v in cx.nucleus_features(img, np.zeros((32, 32), np.uint8)).values())
    yy, xx = np.mgrid[0:32, 0:32]
    nuc = (np.hypot(yy - 16, xx - 16) <= 5).astype(np.uint8)
    f = cx.nucleus_features(img, nuc, 0.5, nucleus=1)
    assert np.isnan(f["nc_ratio"]) and f["nucleus_area_um2"] == pytest.approx(nuc.sum() * 0.25)
    m = np.where(np.hypot(yy - 16, xx - 16) <= 12, 1, 0).astype(np.uint8); m[nuc > 0] = 2; m[1, 1:3] = 2
    f2 = cx.nucleus_features(img, m, 0.5)
    assert f2["nucleus_area_um2"] == pytest.approx(nuc.sum() * 0.25)
    assert f2["nc_ratio"] == pytest.approx(nuc.sum() / (np.hypot(yy - 16, xx - 16) <= 12).sum())


def test_cervical_optical_density_is_beer_lambert():
    "A pixel transmitting exp(-0.7) of the background light has OD 0.7 (± 0.01 from the +1 offset against dark counts)."
    img = np.full((10, 10, 3), 200.0); img[:5] = 200 * np.exp(-0.7)
    od = cx.optical_density(img.round().astype(np.uint8), background=np.arange(100).reshape(10, 10) >= 50)
    assert od[:5].mean() == pytest.approx(0.7, abs=0.01) and od[5:].mean() == pytest.approx(0.0, abs=1e-9)


def test_cervical_slide_scores():
    "A slide scores its most suspicious cell (or the mean of its top k); ids keep first-seen order; bad input refused."
    ids, s = cx.slide_scores([0.2, 0.9, 0.1, 0.3, 0.4], ["b", "b", "a", "a", "a"])
    assert ids == ["b", "a"] and np.allclose(s, [0.9, 0.4])
    assert np.allclose(cx.slide_scores([0.2, 0.9, 0.1, 0.3, 0.4], ["b", "b", "a", "a", "a"], top_k=2)[1], [0.55, 0.35])
    with pytest.raises(UsageError, match="slide ids"): cx.slide_scores([0.1, 0.2], ["a"])
    with pytest.raises(UsageError, match="top_k"): cx.slide_scores([0.1], ["a"], top_k=0)
    with pytest.raises(UsageError, match="masks"): cx.feature_table([np.zeros((4, 4, 3))], [])
    assert cx.feature_table([], []).shape == (0, len(cx.FEATURES))


# --- lesson 84: uterine fibroids (gynlab.apps.fibroids) ---------------------------------------------------------------

from gynlab.apps import fibroids as fb  # noqa: E402

MYO, ENDO, FIB = fb.MYOMETRIUM, fb.ENDOMETRIUM, fb.FIBROID


def _disc(shape, cy, cx_, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    return np.hypot(yy - cy, xx - cx_) <= r


def test_fibroids_ellipsoid_ml():
    "π/6 · 10 · 20 · 30 mm³ = 3.1416 mL."
    assert fb.ellipsoid_ml(10, 20, 30) == pytest.approx(np.pi, rel=1e-12)


def test_fibroids_volume_of_a_drawn_ellipse():
    """Semi-axes 20 x 12 mm drawn on 0.5 mm pixels: diameters within 0.25 mm, volume (d3 = d2) within 1% of
    4/3·π·20·12·12 mm³; on 1.67 mm pixels (the lesson's 96 px) within 1 mm and 5%."""
    for px, tol_mm, tol in ((0.5, 0.25, 0.01), (MRI_FOV_MM / 96, 1.0, 0.05)):
        n = int(120 / px)
        yy, xx = np.mgrid[0:n, 0:n] + 0.5
        m = np.where(((yy * px - 60) / 12) ** 2 + ((xx * px - 60) / 20) ** 2 <= 1, FIB, MYO)
        t = fb.fibroid_table(m, px)
        assert len(t) == 1
        assert t.d1_mm[0] == pytest.approx(40, abs=tol_mm) and t.d2_mm[0] == pytest.approx(24, abs=tol_mm)
        assert t.volume_ml[0] == pytest.approx(4 / 3 * np.pi * 20 * 12 * 12 / 1000, rel=tol)
        assert t.area_mm2[0] == pytest.approx(np.pi * 20 * 12, rel=tol)


def test_fibroids_count_separate_touching_and_specks():
    "Separate fibroids are counted apart (largest first); overlapping ones are one region; specks under 5 mm² ignored."
    m = np.full((100, 100), MYO, np.uint8)
    m[_disc(m.shape, 30, 30, 10)] = FIB; m[_disc(m.shape, 70, 70, 6)] = FIB; m[5, 95] = FIB
    lab, n = fb.label_fibroids(m, 1.0)
    assert n == 2 and (lab == 1).sum() > (lab == 2).sum() and lab[5, 95] == 0
    m[_disc(m.shape, 50, 50, 24)] = FIB                                  # overlaps both
    assert fb.label_fibroids(m, 1.0)[1] == 1
    assert len(fb.fibroid_table(np.full((20, 20), MYO, np.uint8), 1.0)) == 0


def _uterus(fibroid_centre, r=8):
    "A round 'uterus' (myometrium, radius 40 px) with a central endometrial stripe and one fibroid."
    m = np.zeros((120, 120), np.uint8)
    m[_disc(m.shape, 60, 60, 40)] = MYO
    m[50:70, 52:68] = ENDO
    m[_disc(m.shape, *fibroid_centre, r)] = FIB
    return m


def test_fibroids_position_rule_on_drawn_uteri():
    "Touching the cavity: submucosal (gap 0); mid-wall: intramural (gap > 0); centred on the contour: subserosal."
    sub = fb.fibroid_table(_uterus((60, 74)), 1.0).iloc[0]
    intra = fb.fibroid_table(_uterus((60, 86)), 1.0).iloc[0]
    sero = fb.fibroid_table(_uterus((60, 102)), 1.0).iloc[0]
    assert (sub.position, intra.position, sero.position) == ("submucosal", "intramural", "subserosal")
    assert sub.cavity_mm == 0 and intra.cavity_mm > 5 and intra.serosa_mm > 0 and sero.serosa_mm == 0
    assert sero.exposed >= 0.45 > intra.exposed
    assert fb.figo_like_position(True, 0.6) == "subserosal" and fb.figo_like_position(True, 0.1) == "submucosal"


def test_fibroids_area_count_and_position_on_phantom_truth():
    """On 300 true phantom masks at 96 px: total fibroid area equals the phantom's `fibroid_area_mm2` (within 0.01 mm²);
    regions never outnumber the drawn fibroids and match the count on ≥ 70% of images (the lesson measures 77.5%: the
    rest are drawn overlapping); the position call agrees with the generator's type on ≥ 90% of single-fibroid
    images."""
    px = MRI_FOV_MM / 96
    count_ok, single = [], []
    for i in range(300):
        d = uterus_mri(sample_rng(0, "uterus-mri", i), None, 96)
        f, t = d["features"], fb.fibroid_table(d["mask"], px)
        assert t.area_mm2.sum() == pytest.approx(f["fibroid_area_mm2"], abs=0.01)
        assert len(t) <= f["n_fibroids"]
        count_ok.append(len(t) == f["n_fibroids"])
        if f["n_fibroids"] == 1: single.append(t.position[0] == f["fibroid_types"])
    assert np.mean(count_ok) >= 0.7 and len(single) >= 40 and np.mean(single) >= 0.9


def test_fibroids_plan_summary():
    "Counts by position, dominant fibroid first, total volume the sum; an empty uterus gives zeros and NaN gaps."
    m = _uterus((60, 74)); m[_disc(m.shape, 60, 102, 8)] = FIB
    s = fb.plan_summary(m, 1.0)
    t = fb.fibroid_table(m, 1.0)
    assert s["fibroids"] == 2 and s["submucosal"] == 1 and s["subserosal"] == 1 and s["intramural"] == 0
    assert s["total_fibroid_ml"] == pytest.approx(t.volume_ml.sum())
    assert s["dominant_ml"] == pytest.approx(t.volume_ml.max())
    assert s["uterus_ml"] > s["total_fibroid_ml"] > 0
    e = fb.plan_summary(np.full((40, 40), MYO, np.uint8), 1.0)
    assert e["fibroids"] == 0 and e["total_fibroid_ml"] == 0 and np.isnan(e["smallest_cavity_gap_mm"])


def test_fibroids_bad_input():
    "A 3-D mask and a non-positive pixel size are refused with a message naming the problem."
    with pytest.raises(UsageError, match="2-D"): fb.fibroid_table(np.zeros((2, 8, 8), np.uint8), 1.0)
    with pytest.raises(UsageError, match="pixel_size_mm"): fb.label_fibroids(np.zeros((8, 8), np.uint8), 0)
