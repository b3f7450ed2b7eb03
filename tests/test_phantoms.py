"Tests for gynlab.phantoms: exact masks, class statistics, determinism, dataset columns, registry, bad input."
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from gynlab import phantoms as P
from gynlab.core import UsageError
from gynlab.exercises import phantoms as XP

GEN = {"cytology": P.cytology_cell, "pelvic-us": P.pelvic_us, "uterus-mri": P.uterus_mri, "cine": P.cine_loop}
CLASSES = {"cytology": P.CYTOLOGY_CLASSES, "pelvic-us": P.US_CLASSES, "uterus-mri": P.MRI_CLASSES,
           "cine": P.CINE_CLASSES}


def _cells(n, seed=0, cls=None):
    return [P.cytology_cell(P.sample_rng(seed, "cytology", i), cls, nuisance=False) for i in range(n)]


# --- exact masks --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64, 128])
def test_cytology_masks_exact(size):
    for i, cls in enumerate(P.CYTOLOGY_CLASSES * 4):
        d = P.cytology_cell(P.sample_rng(1, "cytology", i), cls, size=size)
        nuc, cell = d["nucleus_mask"], d["cytoplasm_mask"]
        assert d["image"].shape == (size, size, 3) and d["image"].dtype == np.uint8
        assert nuc.dtype == bool and cell.dtype == bool and nuc.shape == (size, size)
        assert nuc.any(), f"{cls}: empty nucleus"
        assert not (nuc & ~cell).any(), f"{cls}: nucleus outside the cell"
        assert set(np.unique(d["mask"]).tolist()) <= {0, 1, 2}
        np.testing.assert_array_equal(d["mask"] == 2, nuc)
        np.testing.assert_array_equal(d["mask"] >= 1, cell)
        f = d["features"]
        assert f["nc_ratio"] == pytest.approx(nuc.sum() / cell.sum(), rel=1e-12)
        assert f["nucleus_area_um2"] == pytest.approx(nuc.sum() * f["pixel_size_um"] ** 2)
        assert d["name"] == cls and P.CYTOLOGY_CLASSES[d["label"]] == cls


def test_nucleus_is_dark_and_cytoplasm_coloured():
    for d in _cells(20):
        img = d["image"].astype(float).mean(-1)
        cyto_only = d["cytoplasm_mask"] & ~d["nucleus_mask"]
        assert img[d["nucleus_mask"]].mean() < img[cyto_only].mean() < img[~d["cytoplasm_mask"]].mean()


def test_pelvic_us_masks():
    f = P._fan(128)
    for i in range(30):
        d = P.pelvic_us(P.sample_rng(2, "pelvic-us", i))
        labels = set(np.unique(d["mask"]).tolist())
        assert labels <= {0, 1, 2, 3, 4} and 1 in labels
        assert (3 in labels) == (d["name"] == "simple_cyst") and (4 in labels) == (d["name"] == "solid")
        assert d["mask"][~f["inside"]].max() == 0 and d["image"][~f["inside"]].max() == 0
        if d["name"] == "normal": assert d["features"]["lesion_diameter_mm"] == 0
        else: assert d["features"]["lesion_diameter_mm"] > 5


def test_ultrasound_physics():
    img = [P.pelvic_us(P.sample_rng(3, "pelvic-us", i), "simple_cyst") for i in range(10)]
    fluid = np.mean([d["image"][d["mask"] == 3].mean() for d in img])
    stroma = np.mean([d["image"][d["mask"] == 1].mean() for d in img])
    assert fluid < 0.5 * stroma, "cysts should be anechoic"
    env = P.rayleigh_speckle(np.full((200, 200), 3.0), np.random.default_rng(0))
    assert env.mean() / env.std() == pytest.approx(1.913, abs=0.1)
    assert (env ** 2).mean() == pytest.approx(9.0, rel=0.1)


def test_uterus_mri_masks():
    for i in range(20):
        d = P.uterus_mri(P.sample_rng(4, "uterus-mri", i))
        labels = set(np.unique(d["mask"]).tolist())
        assert labels <= {0, 1, 2, 3} and 1 in labels
        assert (3 in labels) == (d["features"]["n_fibroids"] > 0) == (d["label"] == 1)
        types = d["features"]["fibroid_types"]
        assert len([t for t in types.split(",") if t]) == d["features"]["n_fibroids"]
        assert all(t in P.FIBROID_TYPES for t in types.split(",") if t)
    with pytest.raises(ValueError, match="unknown uterus MRI class"):
        P.uterus_mri(np.random.default_rng(0), "adenomyosis")


def test_cine_single_frames_carry_no_label():
    T = 12
    for i in range(10):
        still = P.cine_loop(P.sample_rng(5, "cine", i), "still", frames=T)
        beat = P.cine_loop(P.sample_rng(5, "cine", i), "beating", frames=T)
        assert still["frames"].shape == (T, 64, 64) == beat["masks"].shape and still["frames"].dtype == np.uint8
        assert np.ptp((still["masks"] == 2).sum((1, 2))) == 0
        assert np.ptp((beat["masks"] == 2).sum((1, 2))) > 0
        assert beat["features"]["heart_rate_bpm"] >= 120 and still["features"]["heart_rate_bpm"] == 0
    # single-frame statistics: chamber area and mean grey level of one random frame match across classes
    rng = np.random.default_rng(0)
    stats = {c: [] for c in P.CINE_CLASSES}
    for i in range(150):
        for c in P.CINE_CLASSES:
            d = P.cine_loop(P.sample_rng(6, "cine", i), c)
            t = rng.integers(T)
            stats[c].append(((d["masks"][t] == 2).sum(), d["frames"][t].mean()))
    a, b = np.array(stats["still"]), np.array(stats["beating"])
    pooled = np.concatenate([a, b]).std(0)
    assert (np.abs(a.mean(0) - b.mean(0)) / pooled < 0.25).all()


# --- class differences hold statistically ---------------------------------------------------------------------------
def test_cytology_class_statistics():
    cells = _cells(400)
    by = {c: [d["features"] for d in cells if d["name"] == c] for c in P.CYTOLOGY_CLASSES}
    mean = lambda c, k: np.mean([f[k] for f in by[c]])
    assert all(len(v) > 40 for v in by.values())
    assert mean("hsil", "nucleus_area_um2") > 2 * mean("intermediate", "nucleus_area_um2")
    assert mean("lsil", "nucleus_area_um2") > 2 * mean("intermediate", "nucleus_area_um2")
    assert mean("intermediate", "nucleus_area_um2") > mean("superficial", "nucleus_area_um2")
    assert mean("hsil", "nc_ratio") > mean("parabasal", "nc_ratio") > mean("intermediate", "nc_ratio")
    assert mean("hsil", "nucleus_irregularity") > mean("intermediate", "nucleus_irregularity")
    assert mean("hsil", "chromatin_coarseness") > mean("superficial", "chromatin_coarseness")
    assert all(f["perinuclear_halo"] == (c == "lsil") for c, fs in by.items() for f in fs)
    # a nucleus-area threshold separates NILM from SIL well, but not perfectly (parabasal vs HSIL overlap)
    area = np.array([d["features"]["nucleus_area_um2"] for d in cells])
    sil = np.array([d["bethesda"] > 0 for d in cells])
    acc = max(((area >= t) == sil).mean() for t in np.unique(area))
    assert 0.9 < acc


def test_cytology_colour():
    sup = [d["image"][d["cytoplasm_mask"] & ~d["nucleus_mask"]].mean(0) for d in _cells(10, cls="superficial")]
    inter = [d["image"][d["cytoplasm_mask"] & ~d["nucleus_mask"]].mean(0) for d in _cells(10, cls="intermediate")]
    r, g, b = np.mean(sup, 0); assert r > g, "superficial cytoplasm should be pink (eosinophilic)"
    r, g, b = np.mean(inter, 0); assert g > r and b > r, "intermediate cytoplasm should be blue-green (cyanophilic)"


# --- determinism ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", P.PHANTOM_KINDS)
def test_determinism(kind):
    a = GEN[kind](P.sample_rng(0, kind, 5))
    b = GEN[kind](P.sample_rng(0, kind, 5))
    c = GEN[kind](P.sample_rng(1, kind, 5), a["label"])
    key = "frames" if kind == "cine" else "image"
    np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a["masks" if kind == "cine" else "mask"], b["masks" if kind == "cine" else "mask"])
    assert a["features"] == b["features"]
    assert not np.array_equal(a[key], c[key])


def test_sample_independent_of_n():
    small, big = P.phantom_pelvic_us(n=10, image_size=64, seed=3), P.phantom_pelvic_us(n=40, image_size=64, seed=3)
    for split in small:
        for row_s in small[split]:
            row_b = big[split][[r for r in big[split]["index"]].index(row_s["index"])]
            np.testing.assert_array_equal(np.asarray(row_s["image"]), np.asarray(row_b["image"]))
            assert row_s["label"] == row_b["label"] and row_s["group"] == row_b["group"]
    other = P.phantom_pelvic_us(n=10, image_size=64, seed=4)
    assert not np.array_equal(np.asarray(other["train"][0]["image"]), np.asarray(small["train"][0]["image"]))


# --- datasets ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,size", [("cytology", 48), ("pelvic-us", 64), ("uterus-mri", 64), ("cine", 32)])
def test_dataset_columns(kind, size):
    import datasets
    n = 40
    dd = P.phantom_dataset(kind, n=n, image_size=size, seed=0)
    assert isinstance(dd, datasets.DatasetDict) and set(dd) == {"train", "validation", "test"}
    assert sum(len(d) for d in dd.values()) == n
    assert len(dd["train"]) > len(dd["validation"]) > 0 and len(dd["test"]) > 0
    feats = dd["train"].features
    assert isinstance(feats["label"], datasets.ClassLabel) and feats["label"].names == CLASSES[kind]
    groups = [set(d["group"]) for d in dd.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]), "a group leaks across splits"
    row = dd["validation"][0]
    if kind == "cine":
        assert feats["frames"].dtype == "uint8"                    # stored as uint8
        fr = dd["validation"].with_format("numpy", dtype=np.uint8)[0]["frames"]   # plain rows hold nested lists
        assert fr.shape == (12, size, size) and fr.dtype == np.uint8 and fr.max() > 0
    else:
        assert isinstance(feats["image"], datasets.Image) and isinstance(feats["mask"], datasets.Image)
        assert row["image"].size == (size, size) and row["mask"].mode == "L"
        assert row["image"].mode == ("RGB" if kind == "cytology" else "L")
        mx = {"cytology": 2, "pelvic-us": 4, "uterus-mri": 3}[kind]
        assert np.asarray(row["mask"]).max() <= mx
    # the stored sample equals the generator's output for its index
    if kind == "cytology":
        d = P.cytology_cell(P.sample_rng(0, kind, row["index"]), None, size,
                            stain=P.slide_stain(P.sample_rng(0, kind, row["index"] // 4, 1)))
        np.testing.assert_array_equal(np.asarray(row["image"]), d["image"])
        np.testing.assert_array_equal(np.asarray(row["mask"]), d["mask"])
        assert row["nc_ratio"] == pytest.approx(d["features"]["nc_ratio"], rel=1e-6)


def test_cytology_slide_groups():
    dd = P.phantom_cytology(n=40, seed=0)
    df = dd["train"].remove_columns(["image", "mask"]).to_pandas()
    assert (df.groupby("group").size() == 4).all()
    assert df["bethesda"].max() <= 2 and set(dd["train"].features["bethesda"].names) == {"NILM", "LSIL", "HSIL"}


# --- bad arguments -------------------------------------------------------------------------------------------------
def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown cytology class 'carcinoma'"): P.cytology_cell(rng, "carcinoma")
    with pytest.raises(ValueError, match="unknown cytology class"): P.cytology_cell(rng, 9)
    with pytest.raises(ValueError, match="unknown pelvic ultrasound class"): P.pelvic_us(rng, "teratoma")
    with pytest.raises(ValueError, match="unknown phantom kind 'xray'"): P.phantom_dataset("xray")
    with pytest.raises(ValueError, match="unknown phantom kind"): P.sample_rng(0, "ct", 0)
    with pytest.raises(ValueError, match="too small"): P.phantom_cytology(n=0)
    with pytest.raises(ValueError, match="too small"): P.phantom_cytology(n=-5)
    with pytest.raises(ValueError, match="too small"): P.phantom_uterus_mri(n=3)
    with pytest.raises(UsageError, match="n must be an int"): P.phantom_cine(n=10.5)
    with pytest.raises(ValueError, match="image_size=8 is out of range"): P.phantom_pelvic_us(n=10, image_size=8)
    with pytest.raises(ValueError, match="size=16 is out of range"): P.cytology_cell(rng, size=16)
    with pytest.raises(UsageError, match="must be an int"): P.uterus_mri(rng, size=64.0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"): P.phantom_cytology(n=20, seed=-1)
    with pytest.raises(ValueError, match="frames must be an int >= 2"): P.cine_loop(rng, frames=1)
    # a UsageError, which is a GynlabError too
    with pytest.raises(UsageError, match="unknown cytology class"): P.cytology_cell(rng, "carcinoma")


# --- exercise checkers ---------------------------------------------------------------------------------------------
def test_checkers():
    assert XP.check_split_count(4) and not XP.check_split_count(6)           # slides, not cells, are split
    assert XP.check_separating_feature("chromatin_coarseness") and not XP.check_separating_feature("nc_ratio")
    good = lambda a, rng: np.hypot(*(rng.normal(size=(2, *a.shape)) * (a / np.sqrt(2))))
    assert XP.check_speckle(good)
    assert not XP.check_speckle(lambda a, rng: a + rng.normal(size=a.shape))        # additive, not speckle
    assert not XP.check_speckle(lambda a, rng: np.abs(rng.normal(size=a.shape)) * a)
    assert not XP.check_area_threshold(1000.0)
    assert not XP.check_area_threshold(None)


# --- registry integration -----------------------------------------------------------------------------------------
def test_load_through_registry():
    from gynlab import data
    cards = data.cards()
    for name in ("phantom-cytology", "phantom-pelvic-us", "phantom-uterus-mri", "phantom-cine"):
        assert name in cards and cards[name].real is False and cards[name].loader.startswith("gynlab.phantoms:")
    for kind, classes in CLASSES.items():  # the cards (in gynlab.data) agree with the generators
        assert cards[f"phantom-{kind}"].classes == classes
        assert cards[f"phantom-{kind}"].loader == f"gynlab.phantoms:{P.PHANTOM_LOADERS[kind].__name__}"
    dd = data.load("phantom-cytology", n=200, image_size=64, seed=0)
    assert sum(len(d) for d in dd.values()) == 200
    np.testing.assert_array_equal(np.asarray(dd["train"][0]["image"]),
                                  np.asarray(P.phantom_cytology(n=200, image_size=64, seed=0)["train"][0]["image"]))
