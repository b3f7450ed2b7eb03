"""Lessons 82 (ovarian tumour triage, gynlab.apps.ovarian) and 83 (endometriosis, gynlab.apps.endometriosis):
the IOTA simple rules, the three-way triage and the lesion-focus measurement on inputs with known answers, and the
checkers of both lessons with a right and a plausible wrong answer."""
import itertools

import numpy as np
import pytest
import torch

from gynlab.apps import endometriosis as en
from gynlab.apps import ovarian as ov
from gynlab.core import UsageError
from gynlab.data import MMOTU_CLASSES
from gynlab.exercises.endometriosis import check_focus_verdict, check_random_share
from gynlab.exercises.ovarian import check_sensitivity_claim, check_simple_rules_guess


# --- lesson 82: ovarian tumour triage (gynlab.apps.ovarian) ---------------------------------------------------------

def test_iota_features_are_the_ten_of_the_simple_rules():
    "Five B- and five M-features (Timmerman et al. 2008), each with a definition and a visibility note."
    assert list(ov.IOTA_B) == [f"B{i}" for i in range(1, 6)] and list(ov.IOTA_M) == [f"M{i}" for i in range(1, 6)]
    for definition, visible in [*ov.IOTA_B.values(), *ov.IOTA_M.values()]:
        assert definition and visible.split(":")[0].split(",")[0] in ("yes", "partly", "no", "rarely")
    assert "colour score 1" in ov.IOTA_B["B5"][0] and "colour score 4" in ov.IOTA_M["M5"][0]


def test_simple_rules_on_every_pair_of_features():
    "Malignant: M only; benign: B only; inconclusive: both kinds or none — for all single features and all pairs."
    feats = [*ov.IOTA_B, *ov.IOTA_M]
    assert ov.simple_rules([]) == "inconclusive"
    for f in feats: assert ov.simple_rules([f]) == ("benign" if f[0] == "B" else "malignant")
    for a, b in itertools.combinations(feats, 2):
        kinds = {a[0], b[0]}
        want = "inconclusive" if kinds == {"B", "M"} else "benign" if kinds == {"B"} else "malignant"
        assert ov.simple_rules([a, b]) == want
    assert ov.simple_rules("m1") == "malignant"                      # one feature as a string, any case
    with pytest.raises(UsageError, match="unknown IOTA feature"): ov.simple_rules(["B1", "M6"])


def test_triage_thresholds_and_uncertainty():
    "P < low → benign, P ≥ high → malignant, between → expert; uncertainty only moves benign cases to the expert."
    p = np.array([0.01, 0.05, 0.2, 0.5, 0.9, 0.01, 0.9])
    unc = np.array([0, 0, 0, 0, 0, 1, 1], bool)
    got = ov.triage(p, 0.05, 0.5, unc)
    assert got.tolist() == ["benign", "needs expert", "needs expert", "malignant", "malignant", "needs expert",
                            "malignant"]
    assert ov.triage(p, 0.05, 0.5).tolist()[5] == "benign"
    assert set(ov.triage(p, 0.3, 0.3)) == {"benign", "malignant"}      # low == high: a plain threshold, no expert
    with pytest.raises(UsageError, match="above the rule-in"): ov.triage(p, 0.6, 0.5)
    with pytest.raises(UsageError, match="uncertainty flags"): ov.triage(p, 0.1, 0.5, [True])
    with pytest.raises(UsageError): ov.triage(p, -0.1, 0.5)


def test_triage_summary_counts():
    "The table adds up to the cases; a cancer called benign is a miss; shares sum to 1."
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    calls = ["malignant", "needs expert", "benign", "benign", "benign", "needs expert", "malignant", "benign"]
    s = ov.triage_summary(y, calls)
    assert s["table"].values.sum() == 8 and s["n_malignant"] == 3
    assert s["missed"] == 1 and s["caught"] == 2
    assert s["table"].loc["not malignant", "benign"] == 3 and s["table"].loc["not malignant", "malignant"] == 1
    assert s["share"]["benign"] == pytest.approx(0.5) and sum(s["share"].values()) == pytest.approx(1)
    with pytest.raises(UsageError, match="unknown calls"): ov.triage_summary(y, ["maybe"] * 8)
    with pytest.raises(UsageError, match="labels but"): ov.triage_summary(y, calls[:3])


def test_ovarian_checkers_right_and_wrong():
    ev = {"k": 4, "n": 4, "lower": 0.51}
    assert check_sensitivity_claim("no", ev) and not check_sensitivity_claim("yes", ev)
    assert check_sensitivity_claim("yes", {"k": 60, "n": 60, "lower": 0.94})
    cases = {"A": ["B1"], "B": ["M1", "M5"], "C": ["B4", "M3"], "D": []}
    right = {n: ov.simple_rules(f) for n, f in cases.items()}
    assert check_simple_rules_guess(right, cases)
    assert not check_simple_rules_guess({**right, "C": "malignant"}, cases)   # "any M-feature means malignant"
    assert not check_simple_rules_guess({**right, "D": "benign"}, cases)      # "no feature means benign"


# --- lesson 83: endometriosis (gynlab.apps.endometriosis) -----------------------------------------------------------

def test_binary_rows_on_mmotu_classes():
    "Endometrioma = 1, the four other benign cysts = 0, everything else left out; the order of rows is kept."
    labels = list(range(len(MMOTU_CLASSES))) * 2
    idx, y = en.binary_rows(labels, MMOTU_CLASSES)
    kept = [MMOTU_CLASSES[labels[i]] for i in idx]
    assert set(kept) == {en.ENDOMETRIOMA, *en.OTHER_BENIGN_CYSTS} and idx == sorted(idx)
    assert y.tolist() == [int(c == en.ENDOMETRIOMA) for c in kept] and y.sum() == 2
    assert "Ovary_Normal" not in kept and "High-grade_Serous_Cystadenoma" not in kept
    with pytest.raises(UsageError, match="unknown class"): en.binary_rows([0], MMOTU_CLASSES, "Endometrioma")
    with pytest.raises(UsageError, match="both the positive"):
        en.binary_rows([0], MMOTU_CLASSES, "Teratoma", ["Teratoma"])


def _discs(n=6, size=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([np.hypot(yy - rng.integers(12, 36), xx - rng.integers(12, 36)) < rng.integers(4, 10)
                     for _ in range(n)])


def test_lesion_focus_known_answers():
    "A map on the lesion scores 1; a uniform map scores the area fraction; 'random' is the area fraction."
    m = _discs()
    area = m.reshape(len(m), -1).mean(1)
    on = en.lesion_focus(m * 1.0, m)
    assert np.allclose(on["inside"], 1) and np.allclose(on["random"], area)
    assert np.allclose(on["enrichment"], 1 / area, rtol=1e-5)
    assert (on["swapped"] < 1).all()                  # another image's lesion is elsewhere (the discs differ)
    flat = en.lesion_focus(np.ones(m.shape), m)
    assert np.allclose(flat["inside"], area, atol=1e-6) and np.allclose(flat["swapped"], area, atol=1e-6)


def test_lesion_focus_random_maps_average_to_the_area_fraction():
    "The random-map baseline: 400 maps of independent uniform values put the area fraction inside, within 0.01."
    m = np.repeat(_discs(1)[:1], 400, 0)
    maps = torch.rand(m.shape, generator=torch.Generator().manual_seed(1))
    assert en.lesion_focus(maps, m)["inside"].mean() == pytest.approx(m[0].mean(), abs=0.01)


def test_lesion_focus_refuses_bad_input():
    m = _discs(2)
    with pytest.raises(UsageError, match="must both be"): en.lesion_focus(np.ones((2, 8, 8)), m)
    with pytest.raises(UsageError, match="at least two"): en.lesion_focus(np.ones(m[:1].shape), m[:1])
    with pytest.raises(UsageError, match="non-empty"): en.lesion_focus(np.ones(m.shape), np.zeros(m.shape, bool))


def test_endometriosis_checkers_right_and_wrong():
    assert check_random_share(0.2, 0.2) and not check_random_share(0.5, 0.2)
    weak = {"trained model": 0.15, "random map": 0.1, "swapped map": 0.13, "randomised model": 0.12}
    assert check_focus_verdict("fails", weak) and not check_focus_verdict("passes", weak)
    strong = {"trained model": 0.5, "random map": 0.1, "swapped map": 0.2, "randomised model": 0.15}
    assert check_focus_verdict("passes", strong) and not check_focus_verdict("fails", strong)
