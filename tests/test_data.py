"""Tests for gynlab.data and gynlab.datasets: registry, search order, loaders on fixtures in official layouts,
bad input, cache, downloads."""
import csv
import functools
import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gynlab
import gynlab.data as gd
import gynlab.datasets as gds
from gynlab.data import DataError, DatasetNotFound, DownloadError, UnknownDataset
from gynlab.exercises import data as XD
from gynlab.exercises.transforms import demo_splits


def fixture(name, tmp_path, **kw):
    return gds.make_fixture(name, tmp_path / "data", **kw)


# ---------------------------------------------------------------- registry and search order
def test_registry_has_the_real_sets_with_loaders():
    cs = gd.cards()
    for n in ["mmotu", "hc18", "isbi2014", "sipakmed", "herlev"]:
        c = cs[n]
        assert c.real and c.folder and c.citation and c.source and c.layout and c.caveats
        mod, fn = c.loader.split(":")
        assert callable(getattr(__import__(mod, fromlist=[fn]), fn))
    assert len(gd.card("mmotu").classes) == 8


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownDataset) as e:
        gd.load("no-such-set")
    msg = str(e.value)
    assert "no-such-set" in msg and "mmotu" in msg and "hc18" in msg and "herlev" in msg
    assert isinstance(e.value, KeyError) and isinstance(e.value, DataError)


def test_register_rejects_bad_cards():
    with pytest.raises(ValueError, match="module:function"):
        gd.register(gd.DatasetCard("x-bad", loader="nocolon"))
    with pytest.raises(TypeError):
        gd.register({"name": "x"})


def test_missing_dataset_says_where_and_what(monkeypatch, tmp_path, gynlab_cache):
    monkeypatch.delenv("GYNLAB_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFound) as e:
        gd.load("herlev")
    msg = str(e.value)
    for part in ["$GYNLAB_DATA: (not set)", "../shared/data", "user cache", str(gynlab_cache / "herlev"),
                 "root=", "GYNLAB_DATA", gd.card("herlev").source, "New database pictures"]:
        assert part in msg, part
    # the lessons fall back to phantoms with `except FileNotFoundError`: a missing dataset must be one
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, gd.DataError)


def test_search_order_explicit_root_then_env(monkeypatch, tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=5)
    monkeypatch.setenv("GYNLAB_DATA", str(root.parent))
    assert gd.find_data("mmotu") == root                     # $GYNLAB_DATA wins over ../shared/data
    ds = gd.load("mmotu")
    assert sum(d.num_rows for d in ds.values()) == 5
    other = gds.make_fixture("mmotu", tmp_path / "other", n=3)
    assert sum(d.num_rows for d in gd.load("mmotu", root=other).values()) == 3          # root= wins
    assert sum(d.num_rows for d in gd.load("mmotu", root=other.parent).values()) == 3   # a folder of folders
    with pytest.raises(DatasetNotFound, match="not a folder"):
        gd.find_data("mmotu", root=tmp_path / "nowhere")


def test_shared_data_only_beside_this_checkout(monkeypatch, tmp_path, gynlab_cache):
    "A shared/data planted beside the working folder (or any of its parents) is not searched; only the checkout's is."
    monkeypatch.delenv("GYNLAB_DATA", raising=False)
    work = tmp_path / "anyone" / "work"; work.mkdir(parents=True)
    gds.make_fixture("herlev", tmp_path / "anyone" / "shared" / "data", n=2)     # ../shared/data seen from `work`
    gds.make_fixture("herlev", tmp_path / "shared" / "data", n=2)                # ../../shared/data
    monkeypatch.chdir(work)
    with pytest.raises(DatasetNotFound):
        gd.find_data("herlev")
    beside = Path(gynlab.__file__).resolve().parents[1].parent / "shared" / "data"
    assert [p for w, p in gd.data_roots() if w == "../shared/data"] == [beside]


def test_lessons_find_shared_data_from_nbs(shared_data, monkeypatch):
    monkeypatch.delenv("GYNLAB_DATA", raising=False)
    monkeypatch.chdir(Path(gynlab.__file__).resolve().parents[1] / "nbs")      # where the lessons run
    assert gd.find_data("mmotu") == shared_data / "mmotu_otu2d"


def test_phantom_fallback_without_real_data(monkeypatch, tmp_path, gynlab_cache):
    "With no real data anywhere, lessons get phantoms (demo_splits) and a DatasetNotFound, a FileNotFoundError."
    monkeypatch.setattr(gd, "data_roots", lambda: [("nowhere", tmp_path / "empty")])
    for name in ("mmotu", "hc18", "isbi2014"):
        with pytest.raises(FileNotFoundError):
            gd.load(name)
    name, dd = demo_splits("mmotu_otu2d", "phantom-pelvic-us", image_size=32, n=10)
    assert name == "phantom-pelvic-us" and sum(len(d) for d in dd.values()) == 10
    with pytest.raises(DatasetNotFound, match="none of the datasets"):
        demo_splits("mmotu", "hc18")


def test_broken_real_data_is_not_silently_replaced_by_phantoms(monkeypatch, tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=3)
    (root / "images" / "1.JPG").write_bytes(b"garbage")
    monkeypatch.setenv("GYNLAB_DATA", str(root.parent))
    with pytest.raises(DataError, match="1.JPG"):
        demo_splits("mmotu", "phantom-pelvic-us")


def test_loader_resolved_at_call_time(monkeypatch):
    "Cards name loaders as strings; data imports no loader module itself, and a bad name is a clear error."
    assert all(":" in c.loader for c in gd.cards().values())
    missing = gd.DatasetCard("x-missing", loader="gynlab_no_such_module:load", real=False)
    monkeypatch.setitem(gd._REGISTRY, "x-missing", missing)
    with pytest.raises(DataError, match="'gynlab_no_such_module' is not installed"):
        gd.load("x-missing")
    monkeypatch.setitem(gd._REGISTRY, "x-nofn", gd.DatasetCard("x-nofn", loader="gynlab.datasets:nope", real=False))
    with pytest.raises(DataError, match="gynlab.datasets has no function 'nope'"):
        gd.load("x-nofn")


def test_registry_complete_without_importing_loaders():
    "gynlab.data lists every card, phantoms included, without importing gynlab.datasets or gynlab.phantoms."
    import subprocess
    import sys
    code = ("import sys, gynlab.data as d\n"
            "assert {'mmotu', 'herlev', 'phantom-cine', 'phantom-cytology'} <= set(d.cards())\n"
            "assert not {'gynlab.datasets', 'gynlab.phantoms', 'gynlab.transforms'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cache_used_and_refreshed_when_a_file_changes(tmp_path, gynlab_cache):
    root = fixture("hc18", tmp_path, n=3)
    gd.load("hc18", root=root)
    entries = list((gynlab_cache / "converted" / "hc18").iterdir())
    assert len(entries) == 1 and (entries[0] / "manifest.json").exists()
    gd.load("hc18", root=root)
    assert len(list((gynlab_cache / "converted" / "hc18").iterdir())) == 1      # reused
    p = root / "training_set" / "001_HC.png"
    Image.new("L", (40, 27), 7).save(p); os.utime(p, ns=(1, 10**18))
    gd.load("hc18", root=root)
    assert len(list((gynlab_cache / "converted" / "hc18").iterdir())) == 2      # new key, new folder


# ---------------------------------------------------------------- loaders on official-layout fixtures
def test_mmotu_fixture(tmp_path, gynlab_cache):
    ds = gd.load("mmotu", root=fixture("mmotu", tmp_path, n=9))
    assert set(ds) == {"train", "validation"} and ds["validation"].num_rows == 3
    assert ds["train"].features["label"].names == gd.MMOTU_CLASSES
    r = ds["train"][1]
    m, les = np.asarray(r["mask"]), np.asarray(r["lesion_mask"])
    assert r["mask"].mode == "L" and set(np.unique(m)) == {0, r["label"] + 1}
    assert set(np.unique(les)) == {0, 1} and ((m > 0) == (les > 0)).all()
    assert r["group"] == Path(r["file"]).stem
    small = gd.load("mmotu", root=fixture("mmotu", tmp_path / "s", n=3), image_size=16)["train"][0]
    assert small["image"].size == small["mask"].size == (16, 16)


def test_mmotu_near_duplicates_kept_in_one_split(tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=9)                        # 3, 6, 9 are validation in labels.csv
    img = root / "images"
    Image.open(img / "1.JPG").resize((40, 27)).resize((48, 32)).save(img / "3.JPG", quality=80)   # 3 = copy of 1
    Image.open(img / "6.JPG").save(img / "5.JPG", quality=95)                                        # 5 (train) = 6
    csv_split, grouped = gd.load("mmotu", root=root, split="csv"), gd.load("mmotu", root=root)
    assert gd.split_overlap(csv_split) == {"1": ["train", "validation"], "5": ["train", "validation"]}
    assert gd.split_overlap(grouped) == {}
    # a tie (one image on each side) goes to the larger split, train
    assert sorted(grouped["validation"]["file"]) == ["9.JPG"]
    g = dict(zip(grouped["train"]["file"], grouped["train"]["group"]))
    assert g["3.JPG"] == g["1.JPG"] == "1" and g["6.JPG"] == g["5.JPG"] == "5" and g["2.JPG"] == "2"
    with pytest.raises(gd.UsageError, match="split: unknown value 'official'"):
        gd.load("mmotu", root=root, split="official")


def test_dhash_and_clusters():
    imagehash = pytest.importorskip("imagehash")
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 255, (40, 60), np.uint8))
    for hs in (8, 16):
        np.testing.assert_array_equal(gd.dhash(a, hs), imagehash.dhash(a, hs).hash.ravel())
    assert gd.hamming([gd.dhash(a, as_hex=True)], [gd.dhash(a)])[0, 0] == 0 and len(gd.dhash(a, as_hex=True)) == 64
    H = np.zeros((5, 16), bool); H[1, :2] = True; H[2, :4] = True; H[3, 8:] = True; H[4, 9:] = True
    # 0-1 (2 bits), 1-2 (2 bits) chain into one cluster though 0-2 are 4 bits apart; 3-4 (1 bit)
    assert gd.near_duplicate_pairs(H, 2) == [(0, 1, 2), (1, 2, 2), (3, 4, 1)]
    assert gd.near_duplicate_clusters(H, 2).tolist() == [0, 0, 0, 3, 3]
    assert gd.near_duplicate_clusters(H, 2, groups=["a", "b", "c", "a", "d"]).tolist() == [0, 0, 0, 0, 0]
    assert gd.near_duplicate_pairs(H, 2, block=2) == gd.near_duplicate_pairs(H, 2)   # blocks change nothing
    assert gd.leak_free_split(["t", "t", "v", "v", "t"], [0, 0, 0, 3, 3]) == ["t"] * 5   # majority; tie: larger split
    assert gd.leak_free_split(["t", "v", "v", "t", "t"], [0, 1, 1, 3, 4]) == ["t", "v", "v", "t", "t"]  # nothing moves
    with pytest.raises(gd.UsageError, match="different lengths"): gd.hamming(H, np.zeros((1, 3), bool))
    with pytest.raises(gd.UsageError, match="hash_size"): gd.dhash(a, 1)


@pytest.mark.parametrize("outline", [True, False])
def test_hc18_outline_or_filled_gives_filled_mask(tmp_path, gynlab_cache, outline):
    ds = gd.load("hc18", root=fixture("hc18", tmp_path, n=6, outline=outline))
    m = np.asarray(ds["train"][0]["mask"])
    ref = np.asarray(gds._ellipse((40, 27), (6, 4, 33, 22), fill=1))
    inter, union = ((m > 0) & (ref > 0)).sum(), ((m > 0) | (ref > 0)).sum()
    assert set(np.unique(m)) == {0, 1} and inter / union > 0.9


def test_hc18_grouped_split_and_pixel_size(tmp_path, gynlab_cache):
    root = fixture("hc18", tmp_path, n=10)
    ds = gd.load("hc18", root=root)
    assert sum(d.num_rows for d in ds.values()) == 15 and gd.split_overlap(ds) == {}
    assert set(ds["train"]["group"]) | set(ds["validation"]["group"]) == {f"{e:03d}" for e in range(1, 11)}
    small = gd.load("hc18", root=root, image_size=20)
    row = small["train"][0]
    assert row["image"].size == (20, 20)
    assert row["pixel_size_mm"] == pytest.approx(0.25 * 40 / 20)          # longer side 40 px -> 20 px
    full = {r["file"]: r["head_circumference_mm"] for r in ds["train"]}
    assert full[row["file"]] == row["head_circumference_mm"]                # HC itself does not change
    # seeded: reproducible
    assert list(gd.load("hc18", root=root)["validation"]["file"]) == list(ds["validation"]["file"])


def test_isbi_fixture(tmp_path, gynlab_cache):
    ds = gd.load("isbi2014", root=fixture("isbi2014", tmp_path, n=4))
    assert {k: v.num_rows for k, v in ds.items()} == {"synthetic": 4, "edf": 2}
    syn, edf = ds["synthetic"][0], ds["edf"][0]
    assert len(syn["cytoplasm"]) == 1 % 3 + 1 and set(np.unique(np.asarray(syn["cytoplasm"][0]))) == {0, 1}
    assert edf["cytoplasm"] == [] and np.asarray(edf["mask"])[18, 19] == 1          # EDF outline filled


@pytest.mark.parametrize("nested", [True, False])
def test_sipakmed_fixture_grouped_by_source_image(tmp_path, gynlab_cache, nested):
    root = fixture("sipakmed", tmp_path, n=6)
    if not nested:                                   # also accept im_X/CROPPED without the doubled folder
        for c in gd.SIPAKMED_CLASSES:
            shutil.move(str(root / f"im_{c}" / f"im_{c}" / "CROPPED"), str(root / f"im_{c}" / "CROPPED"))
    ds = gd.load("sipakmed", root=root)
    assert sum(d.num_rows for d in ds.values()) == 30 and gd.split_overlap(ds) == {}
    rows = list(ds["train"]) + list(ds["validation"])
    assert all(r["group"].split("/")[1] == r["file"].split("_")[0] for r in rows)
    names = ds["train"].features["label"].names
    for r in rows:
        assert r["binary_label"] == (names[r["label"]] in ("Koilocytotic", "Dyskeratotic"))


def test_herlev_fixture(tmp_path, gynlab_cache):
    root = fixture("herlev", tmp_path, n=4)
    one = next((root / "New database pictures" / "carcinoma_in_situ").glob("*-d.bmp")); one.unlink()
    ds = gd.load("herlev", root=root, image_size=12)
    rows = list(ds["train"]) + list(ds["validation"])
    assert len(rows) == 14 and sum(r["segmentation"] is None for r in rows) == 1   # not dropped, just no segmentation
    assert {r["binary_label"] for r in rows} == {0, 1} and rows[0]["image"].size == (12, 12)


# ---------------------------------------------------------------- bad input: clear errors naming the file
def _rewrite_csv(path, fn):
    rows = list(csv.reader(open(path)))
    rows = fn(rows)
    with open(path, "w", newline="") as f: csv.writer(f).writerows(rows)


def test_corrupt_image_named(tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=4)
    p = root / "images" / "2.JPG"
    p.write_bytes(p.read_bytes()[:200])                  # truncated JPEG
    with pytest.raises(DataError, match=r"2\.JPG: corrupt or unreadable image"):
        gd.load("mmotu", root=root)
    assert not any((gynlab_cache / "converted" / "mmotu").glob("*/manifest.json"))   # nothing half-cached
    assert not any(p.name.startswith(".") for p in (gynlab_cache / "converted" / "mmotu").iterdir())


def test_not_an_image_at_all(tmp_path, gynlab_cache):
    root = fixture("sipakmed", tmp_path, n=2)
    bad = next((root / "im_Parabasal" / "im_Parabasal" / "CROPPED").glob("*.bmp"))
    bad.write_text("hello")
    with pytest.raises(DataError, match=f"{bad.name}: corrupt or unreadable image"):
        gd.load("sipakmed", root=root)


def test_size_mismatch_named(tmp_path, gynlab_cache):
    root = fixture("hc18", tmp_path, n=3)
    Image.new("RGB", (30, 30)).save(root / "training_set" / "002_HC_Annotation.png")
    with pytest.raises(DataError, match=r"002_HC_Annotation\.png: mask is 30x30 but its image 002_HC\.png is 40x27"):
        gd.load("hc18", root=root)


def test_unknown_mask_colour_named(tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=3)
    p = root / "annotations" / "3.PNG"
    a = np.asarray(Image.open(p)).copy(); a[1, 2] = (10, 20, 30); Image.fromarray(a).save(p)
    with pytest.raises(DataError, match=r"3\.PNG: unknown mask colour\(s\) \(10, 20, 30\) first at x=2, y=1"):
        gd.load("mmotu", root=root)


def test_mask_class_disagrees_with_label(tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=3)
    _rewrite_csv(root / "labels.csv", lambda rows: [rows[0], [*rows[1][:2], "Teratoma", rows[1][3]], *rows[2:]])
    with pytest.raises(DataError, match=r"1\.PNG: mask colours say \['Chocolate_Cyst'\] but labels.csv says Teratoma"):
        gd.load("mmotu", root=root)


def test_labels_csv_checked_again_with_a_warm_cache(tmp_path, gynlab_cache):
    "The cache key covers labels.csv: a CSV that now contradicts the masks is caught even though no image changed."
    root = fixture("mmotu", tmp_path, n=3)
    gd.load("mmotu", root=root)                                              # warm cache
    p = root / "labels.csv"; st = p.stat()
    _rewrite_csv(p, lambda rows: [rows[0], [*rows[1][:2], "Teratoma", rows[1][3]], *rows[2:]])
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))                         # even with the old timestamp
    with pytest.raises(DataError, match=r"1\.PNG: mask colours say \['Chocolate_Cyst'\] but labels.csv says Teratoma"):
        gd.load("mmotu", root=root)


def test_csv_row_pointing_to_missing_file(tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=3)
    (root / "annotations" / "2_binary.PNG").unlink()
    with pytest.raises(DataError, match=r"labels\.csv, line 3: the binary mask .*2_binary\.PNG does not exist"):
        gd.load("mmotu", root=root)
    root = fixture("hc18", tmp_path / "h", n=3)
    _rewrite_csv(root / "training_set_pixel_size_and_HC.csv", lambda rows: rows + [["099_HC.png", "0.2", "60"]])
    with pytest.raises(DataError, match=r"099_HC\.png does not exist"):
        gd.load("hc18", root=root)


def test_image_without_label(tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=3)
    shutil.copy(root / "images" / "1.JPG", root / "images" / "77.JPG")
    with pytest.raises(DataError, match=r"1 image\(s\) have no row in labels\.csv \(missing label\): 77\.JPG"):
        gd.load("mmotu", root=root)
    root = fixture("hc18", tmp_path / "h", n=3)
    (root / "training_set" / "003_HC_Annotation.png").unlink()
    with pytest.raises(DataError, match=r"003_HC\.png: image without an annotation \(missing label\)"):
        gd.load("hc18", root=root)
    root = fixture("hc18", tmp_path / "k", n=3)
    _rewrite_csv(root / "training_set_pixel_size_and_HC.csv", lambda rows: rows[:2])
    with pytest.raises(DataError, match=r"no row in training_set_pixel_size_and_HC\.csv"):
        gd.load("hc18", root=root)


def test_empty_folders(tmp_path, gynlab_cache):
    root = fixture("sipakmed", tmp_path, n=2)
    crop = root / "im_Metaplastic" / "im_Metaplastic" / "CROPPED"
    for p in crop.iterdir(): p.unlink()
    with pytest.raises(DataError, match="CROPPED: empty folder"):
        gd.load("sipakmed", root=root)
    empty = tmp_path / "empty"; empty.mkdir()
    with pytest.raises(DataError, match="empty folder"):
        gd.load("herlev", root=empty)
    with pytest.raises(DataError, match="labels.csv is missing"):
        gd.load("mmotu", root=empty)
    hc = fixture("hc18", tmp_path / "h", n=2)
    for p in (hc / "training_set").iterdir(): p.unlink()
    with pytest.raises(DataError, match="empty folder"):
        gd.load("hc18", root=hc)


def test_unknown_class_folder(tmp_path, gynlab_cache):
    root = fixture("herlev", tmp_path, n=2)
    (root / "New database pictures" / "normal_superficial_typo").mkdir()
    with pytest.raises(DataError, match="unknown class folder.*normal_superficial_typo"):
        gd.load("herlev", root=root)


def test_open_outline_is_an_error(tmp_path, gynlab_cache):
    root = fixture("hc18", tmp_path, n=2)
    a = np.zeros((27, 40), np.uint8); a[5, 5:30] = 255; a[5:20, 5] = 255
    Image.fromarray(a).save(root / "training_set" / "002_HC_Annotation.png")
    with pytest.raises(DataError, match=r"002_HC_Annotation\.png: the outline is not closed"):
        gd.load("hc18", root=root)


def test_all_problems_reported_not_just_the_first(tmp_path, gynlab_cache):
    root = fixture("mmotu", tmp_path, n=4)
    for i in (1, 3): (root / "images" / f"{i}.JPG").write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        gd.load("mmotu", root=root)
    assert "2 problem(s)" in str(e.value) and "1.JPG" in str(e.value) and "3.JPG" in str(e.value)


def test_validate_rechecks_despite_cache(tmp_path, gynlab_cache):
    root = fixture("hc18", tmp_path, n=3)
    gd.load("hc18", root=root)
    p = root / "training_set" / "001_HC.png"
    st = p.stat(); data = bytearray(p.read_bytes())
    data[40:] = b"\0" * (len(data) - 40)                  # same size, same mtime, broken pixels
    p.write_bytes(bytes(data)); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    gd.load("hc18", root=root)                             # the cache still vouches for it...
    with pytest.raises(DataError, match=r"001_HC\.png: corrupt or unreadable image"):
        gd.validate("hc18", root=root)                     # ...validate re-reads every file


def test_real_files_copied_and_broken(shared_data, tmp_path, gynlab_cache):
    src = shared_data / "mmotu_otu2d"
    root = tmp_path / "mmotu_otu2d"; (root / "images").mkdir(parents=True); (root / "annotations").mkdir()
    rows = list(csv.DictReader(open(src / "labels.csv")))[:3]
    for r in rows:
        shutil.copy(src / "images" / r["image"], root / "images")
        for a in (r["annotation"], r["annotation"].replace(".PNG", "_binary.PNG")):
            shutil.copy(src / "annotations" / a, root / "annotations")
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
    ds = gd.load("mmotu", root=root, image_size=32)
    assert sum(d.num_rows for d in ds.values()) == 3
    p = root / "annotations" / rows[0]["annotation"]
    a = np.asarray(Image.open(p).convert("RGB")).copy(); a[0, 0] = (255, 0, 255); Image.fromarray(a).save(p)
    with pytest.raises(DataError, match=rf"{rows[0]['annotation']}: unknown mask colour\(s\) \(255, 0, 255\) "
                                        r"first at x=0, y=0"):
        gd.load("mmotu", root=root)


# ---------------------------------------------------------------- real data (skipped without ../shared/data)
def test_real_mmotu(shared_data, monkeypatch):
    monkeypatch.delenv("GYNLAB_DATA", raising=False)
    csv_split = gd.load("mmotu", split="csv")
    assert (csv_split["train"].num_rows, csv_split["validation"].num_rows) == (1177, 146)
    assert len(gd.split_overlap(csv_split)) >= 5                  # the redistributor's split leaks near-duplicates
    ds = gd.load("mmotu")                                          # the default: split="grouped"
    assert sum(d.num_rows for d in ds.values()) == 1323 and ds["validation"].num_rows >= 120
    assert ds["train"].features["label"].names == gd.MMOTU_CLASSES
    r = ds["validation"][0]
    assert r["image"].size == r["mask"].size and set(np.unique(np.asarray(r["mask"]))) <= {0, r["label"] + 1}
    assert 150 < sum(ds["train"]["doppler"]) + sum(ds["validation"]["doppler"]) < 250


def test_real_mmotu_grouped_split_has_no_near_duplicate_across(shared_data, monkeypatch):
    "Recompute every image's dHash from its file: no pair within the near-duplicate distance straddles the split."
    monkeypatch.delenv("GYNLAB_DATA", raising=False)
    ds = gd.load("mmotu")
    where = [s for s in ("train", "validation") for _ in range(ds[s].num_rows)]
    folder = shared_data / "mmotu_otu2d" / "images"
    H = np.stack([gd.dhash(folder / f) for s in ("train", "validation") for f in ds[s]["file"]])
    assert [gd.dhash(ds["validation"][i]["image"], as_hex=True) for i in range(3)] == ds["validation"]["dhash"][:3]
    pairs = gd.near_duplicate_pairs(H)
    assert len(pairs) > 50                                         # MMOTU is full of near-duplicates...
    assert not [(i, j) for i, j, _ in pairs if where[i] != where[j]]     # ...and none straddles the split
    assert gd.split_overlap(ds) == {}
    csv_split = gd.load("mmotu", split="csv")
    n_tr = csv_split["train"].num_rows
    hashes = list(csv_split["train"]["dhash"]) + list(csv_split["validation"]["dhash"])
    across = [p for p in gd.near_duplicate_pairs(hashes) if (p[0] < n_tr) != (p[1] < n_tr)]
    assert len(across) >= 10                                       # what the grouped split fixes


def test_real_hc18_and_isbi(shared_data, monkeypatch):
    monkeypatch.delenv("GYNLAB_DATA", raising=False)
    hc = gd.load("hc18")
    assert sum(d.num_rows for d in hc.values()) == 799 and gd.split_overlap(hc) == {}
    assert len(set(hc["train"]["group"]) | set(hc["validation"]["group"])) < 799          # several frames per exam
    m = np.asarray(hc["train"][0]["mask"])
    assert set(np.unique(m)) == {0, 1} and m.mean() > 0.05                                # filled, not an outline
    isbi = gd.load("isbi2014")
    assert {k: v.num_rows for k, v in isbi.items()} == {"synthetic": 45, "edf": 16}
    assert np.asarray(isbi["edf"][0]["mask"]).mean() > 2 * (np.asarray(Image.open(
        shared_data / "isbi2014_cervical_cytology/edf/nuclei_gt_outlines/EDF000_GT.png")) > 0).mean()


# ---------------------------------------------------------------- downloads against a local server
class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    "Serves files with HTTP Range support (the stdlib handler ignores Range)."
    seen_ranges: list = []

    def log_message(self, *a): pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file(): return self.send_error(404)
        data = path.read_bytes(); rng = self.headers.get("Range")
        type(self).seen_ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416); self.end_headers(); return
            body = data[start:]
            self.send_response(206); self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data; self.send_response(200)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)


class _PlainHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture
def server(tmp_path):
    def start(handler):
        www = tmp_path / "www"; www.mkdir(exist_ok=True)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(www)))
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return www, f"http://127.0.0.1:{httpd.server_address[1]}"
    servers = []
    yield start
    for s in servers: s.shutdown(); s.server_close()


PAYLOAD = bytes(range(256)) * 400


def test_download_and_verify(server, tmp_path):
    www, url = server(_PlainHandler)
    (www / "f.bin").write_bytes(PAYLOAD)
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    out = gds.download(f"{url}/f.bin", tmp_path / "dl" / "f.bin", sha, progress=False)
    assert out.read_bytes() == PAYLOAD and not (tmp_path / "dl" / "f.bin.part").exists()
    (www / "f.bin").write_bytes(b"changed")              # already there with the right hash: not fetched again
    assert gds.download(f"{url}/f.bin", out, sha, progress=False).read_bytes() == PAYLOAD


def test_download_resumes_with_range(server, tmp_path):
    www, url = server(_RangeHandler)
    _RangeHandler.seen_ranges = []
    (www / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:30000])     # an interrupted earlier download
    gds.download(f"{url}/f.bin", dest, hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD and _RangeHandler.seen_ranges == ["bytes=30000-"]


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    www, url = server(_PlainHandler)
    (www / "f.bin").write_bytes(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes from somewhere else")
    gds.download(f"{url}/f.bin", tmp_path / "f.bin", hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_download_bad_hash_leaves_nothing(server, tmp_path):
    www, url = server(_RangeHandler)
    (www / "f.bin").write_bytes(PAYLOAD)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        gds.download(f"{url}/f.bin", tmp_path / "f.bin", "ab" * 32, progress=False)
    assert list(tmp_path.glob("f.bin*")) == []


def test_download_http_error_and_offline(server, tmp_path):
    www, url = server(_PlainHandler)
    with pytest.raises(DownloadError, match="HTTP 404"):
        gds.download(f"{url}/missing.bin", tmp_path / "m.bin", progress=False)
    with pytest.raises(DownloadError, match="no network.*put the file at"):
        gds.download("http://127.0.0.1:9/nothing.zip", tmp_path / "n.zip", progress=False, timeout=5)
    assert list(tmp_path.glob("*.zip*")) == []


# ---------------------------------------------------------------- exercises
def test_exercise_checkers_accept_right_and_reject_wrong():
    ok = lambda g, f, s: tuple(map(list, (gd.grouped_split(g, {"t": 1 - f, "v": f}, s).values())))
    assert XD.check_grouped_split(ok)
    assert not XD.check_grouped_split(lambda g, f, s: (list(range(0, len(g), 2)), list(range(1, len(g), 2))))
    assert XD.check_pixel_size(0.5) and not XD.check_pixel_size(0.125) and not XD.check_pixel_size(0.25)
    tab = XD.leak_candidates()["table"]
    assert XD.check_leaky_splits({"A", "B"}, tab)
    assert not XD.check_leaky_splits({"A"}, tab) and not XD.check_leaky_splits({"A", "B", "C"}, tab)


def test_show_batch_and_overlay():
    dd = gd.load("phantom-pelvic-us", n=10, image_size=64)
    fig = gd.show_batch(dd["train"], n=3, size=48, title="t")
    assert len(fig.data) == 6 and fig.layout.width <= 900 and fig.data[0].z.shape[:2] == (48, 48)
    assert len(gd.show_batch(dd["train"], n=2, mask_col=None).data) == 2
    r = dd["train"][0]
    over = gd.overlay_mask(r["image"], r["mask"])
    m = np.asarray(r["mask"]) > 0
    assert over.shape == (64, 64, 3) and (over[~m] == np.asarray(r["image"].convert("RGB"))[~m]).all()
    assert (over[m] != over[m][:, :1]).any()                                       # coloured where the mask is
    with pytest.raises(DataError, match="mask is 3x3"):
        gd.overlay_mask(r["image"], np.zeros((3, 3), np.uint8))
