"""Tests for gynlab.placenta: planted PAS signs match their masks and labels, seeds reproduce, splits are grouped,
the card loads, bad arguments are refused."""
import os

import numpy as np
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gynlab.core import UsageError  # noqa: E402
from gynlab.placenta import (PAS_SIGNS, PLACENTA_CLASSES, PLACENTA_MASK_CLASSES, SIGN_CLASS,  # noqa: E402
                             phantom_placenta, placenta_rng, placenta_us, sign_mask)

WALL, PLACENTA, BLADDER = (PLACENTA_MASK_CLASSES.index(k) for k in ("uterine_wall", "placenta", "bladder"))


def _cases(n=40, size=64, seed=0):
    return [placenta_us(placenta_rng(seed, i), size=size) for i in range(n)]


@pytest.mark.parametrize("size", [64, 96, 160])
def test_placenta_every_label_has_its_mask_and_every_mask_its_label(size):
    for d in _cases(60, size, seed=size):
        for s in PAS_SIGNS:
            assert bool(d["signs"][s]) == bool(sign_mask(d["mask"], s).any()), (size, s, d["signs"])
        assert d["label"] == int(any(d["signs"].values())) == int(sign_mask(d["mask"]).any())
        assert d["name"] == PLACENTA_CLASSES[d["label"]]
        assert d["features"]["n_signs"] == sum(d["signs"].values())


def test_placenta_each_sign_alone_and_all_together():
    for i, s in enumerate(PAS_SIGNS):
        for size in (64, 128):
            d = placenta_us(placenta_rng(7, i), signs=(s,), size=size)
            assert [k for k in PAS_SIGNS if sign_mask(d["mask"], k).any()] == [s]
    every = placenta_us(placenta_rng(7, 99), signs=PAS_SIGNS, size=64)
    assert all(sign_mask(every["mask"], s).sum() > 0 for s in PAS_SIGNS)     # none hides another one
    assert not sign_mask(placenta_us(placenta_rng(7, 100), "no_pas")["mask"]).any()


def test_placenta_signs_only_where_they_can_be():
    for d in _cases(60, 96, seed=3):
        anat, m = d["anatomy"], d["mask"]
        assert not (sign_mask(m) & ~np.isin(anat, [WALL, PLACENTA])).any()             # wall or placenta only
        assert not (sign_mask(m, "lacunae") & (anat != PLACENTA)).any()                 # lacunae inside the placenta
        assert not (sign_mask(m, "bladder_wall_interruption") & (anat != WALL)).any()   # a gap in the wall band
        cols = np.flatnonzero(sign_mask(m).any(0) & (m == BLADDER).any(0))
        for j in cols:  # every sign lies below the bladder
            assert np.flatnonzero(m[:, j] == BLADDER).max() < np.flatnonzero(sign_mask(m[:, j])).min()
        assert d["image"].shape == m.shape == anat.shape and m.dtype == np.uint8
        assert m.max() < len(PLACENTA_MASK_CLASSES)


def test_placenta_thinning_means_under_a_millimetre():
    d = [placenta_us(placenta_rng(11, i), signs=s) for i, s in enumerate([("myometrial_thinning",), ()] * 5)]
    assert all(x["features"]["myometrium_min_mm"] < 1.0 for x in d[0::2])
    assert all(x["features"]["myometrium_min_mm"] > 2.0 for x in d[1::2])


def test_placenta_seeds_reproduce_and_case_i_ignores_n():
    a, b = placenta_us(placenta_rng(5, 3)), placenta_us(placenta_rng(5, 3))
    np.testing.assert_array_equal(a["image"], b["image"]); np.testing.assert_array_equal(a["mask"], b["mask"])
    assert not np.array_equal(a["image"], placenta_us(placenta_rng(6, 3))["image"])
    small, big = phantom_placenta(n=10, image_size=64, seed=2), phantom_placenta(n=25, image_size=64, seed=2)
    for k in small:
        for i in range(len(small[k])):
            assert small[k][i]["group"] == big[k][i]["group"]
            np.testing.assert_array_equal(np.asarray(small[k][i]["mask"]), np.asarray(big[k][i]["mask"]))


def test_placenta_dataset_columns_labels_and_grouped_splits():
    dd = phantom_placenta(n=50, image_size=64, seed=1)
    assert [len(dd[k]) for k in ("train", "validation", "test")] == [30, 10, 10] and len(dd) == 3
    groups = {k: set(v["group"]) for k, v in dd.items()}
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]: assert not groups[a] & groups[b]
    tr = dd["train"]
    assert tr.features["label"].names == PLACENTA_CLASSES
    want = {"image", "mask", "label", "group", "index", "n_signs", "n_lacunae", "myometrium_min_mm", *PAS_SIGNS}
    assert want <= set(tr.column_names)
    for row in tr:
        m = np.asarray(row["mask"])
        assert row["image"].mode == "L" and m.shape == (64, 64)
        for s in PAS_SIGNS: assert row[s] == int((m == SIGN_CLASS[s]).any())
        assert row["label"] == int(row["n_signs"] > 0)
    assert 0 < sum(tr["label"]) < len(tr)
    assert sum(phantom_placenta(n=20, image_size=64, prevalence=0.0)["train"]["label"]) == 0


def test_placenta_card_loads():
    from gynlab import data
    c = data.card("phantom-placenta")
    assert c.real is False and c.loader == "gynlab.placenta:phantom_placenta" and c.classes == PLACENTA_CLASSES
    assert "segmentation" in c.tasks and any("Doppler" in k for k in c.caveats)
    dd = data.load("phantom-placenta", n=15, image_size=64, seed=4)
    np.testing.assert_array_equal(np.asarray(dd["test"][0]["image"]),
                                  np.asarray(phantom_placenta(n=15, image_size=64, seed=4)["test"][0]["image"]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=9), "n=9 is too small"), (dict(n=0), "too small"), (dict(n=12.5), "n must be an integer"),
    (dict(image_size=32), "64 <= image_size <= 512"), (dict(image_size=1024), "out of range"),
    (dict(image_size="128"), "image_size must be an integer"), (dict(seed=-1), "seed must be in"),
    (dict(prevalence=1.5), "prevalence must be in"),
])
def test_placenta_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(UsageError, match=message):
        phantom_placenta(**{"n": 20, "image_size": 64, **kwargs})


def test_placenta_bad_case_arguments_are_refused():
    rng = placenta_rng(0, 0)
    with pytest.raises(UsageError, match="unknown PAS sign 'bulge'"): placenta_us(rng, signs=["bulge"])
    with pytest.raises(UsageError, match="contradicts"): placenta_us(rng, "pas", signs=())
    with pytest.raises(UsageError, match="unknown class"): placenta_us(rng, "accreta")
    with pytest.raises(UsageError, match="size=48 is out of range"): placenta_us(rng, size=48)
    with pytest.raises(UsageError, match="unknown PAS sign"): sign_mask(np.zeros((4, 4)), "lacuna")
