"""Shortcut learning, measured (lesson 80_responsible, gynlab.audit).

1. Phantoms (always): fibroid phantoms with calipers planted on 90 % of positives / 10 % of negatives; a small CNN
   trained on them, tested on validation images with the marks shown and hidden; a control trained on hidden images.
2. MMOTU (when ../shared/data or $GYNLAB_DATA has it): a small CNN trained on the original training images (64 px),
   tested on the validation images as they are and with caliper/text marks hidden (`gynlab.audit.hide_marks`);
   and a second CNN trained on hidden training images, tested the same way. Also caliper prevalence per class.
   The split is the loader's leak-free default (near-duplicate clusters kept together); `--split csv` gives the
   redistributor's split, where near-identical frames sit on both sides.

Prints absolute accuracies and the differences (original - hidden). The reference is the same model on the
same images in the same run, so the difference is what the marks are worth to the model.

    python bench/shortcut_measure.py [--epochs 15] [--image-size 64] [--seeds 0] [--split grouped|csv] [--no-mmotu]
    python bench/shortcut_measure.py --model efficientnet_lite0 --epochs 4 --image-size 96 --lr 1e-3   # pretrained
"""
from __future__ import annotations
import argparse
import os
import sys
import time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--no-mmotu", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--model", default="smallcnn",
                    help="gynlab.models.pretrained name: smallcnn or efficientnet_lite0 (ImageNet)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--no-control", action="store_true", help="skip the model trained on hidden images")
    ap.add_argument("--split", default="grouped", choices=["grouped", "csv"],
                    help="MMOTU split: near-duplicate clusters kept together (grouped) or the redistributor's (csv)")
    a = ap.parse_args(argv)
    from gynlab.audit import audit, mark_association, shortcut_gap
    from gynlab.exercises.responsible import phantom_shortcut   # the lesson's phantom experiment
    t0 = time.time()
    print("== phantom shortcut (fibroid phantoms, calipers on 90% of positives / 10% of negatives)")
    for seed in a.seeds:
        r = phantom_shortcut(seed=seed, device=a.device)
        for arm in ("shortcut", "control"):
            o, h = r[arm]["original"], r[arm]["hidden"]
            print(f"  seed {seed} {arm:8}: accuracy marks shown {o['accuracy']:.3f}, hidden {h['accuracy']:.3f}, "
                  f"difference {o['accuracy'] - h['accuracy']:+.3f}  "
                  f"(balanced {o['balanced_accuracy']:.3f} -> {h['balanced_accuracy']:.3f})")
    print(f"  ({time.time() - t0:.0f} s)")
    if a.no_mmotu: return 0
    from gynlab.data import load, find_data, DatasetNotFound
    try: find_data("mmotu")
    except DatasetNotFound:
        print("== MMOTU: data not found (../shared/data or $GYNLAB_DATA): skipped"); return 0
    t1 = time.time()
    dd = load("mmotu", split=a.split)
    print(f"== MMOTU split {a.split!r}: " + ", ".join(f"{k} {v.num_rows}" for k, v in dd.items()))
    au = audit(dd)
    tab = au.table.assign(label=au.table.label_name)
    assoc = mark_association(tab)
    print("== MMOTU caliper marks (strongly yellow pixels >= 10)")
    print((assoc["prevalence"].round(3)).to_string())
    print(f"  chi2 {assoc['chi2']:.1f}, p {assoc['p_value']:.2g}, Cramer's V {assoc['cramers_v']:.3f}; "
          "marks-only classifier "
          f"balanced accuracy {assoc['marks_only_balanced_accuracy']:.3f} (chance {assoc['chance']:.3f})")
    va = au.table[au.table.split == "validation"]
    print(f"  validation images with calipers: {(va.caliper_px >= 10).sum()} of {len(va)}")
    print(f"== MMOTU shortcut ({a.model}, {a.epochs} epochs, {a.image_size} px, lr {a.lr}, balanced class weights)")
    for seed in a.seeds:
        res = shortcut_gap(dd, a.model, a.epochs, a.image_size, a.lr, seed, a.device, control=not a.no_control)
        for arm, r in res.items():
            o, h = r["original"], r["hidden"]
            print(f"  seed {seed} {arm:20}: validation accuracy original {o['accuracy']:.3f}, "
                  f"marks hidden {h['accuracy']:.3f}, "
                  f"difference {r['drop_accuracy']:+.3f}; balanced accuracy {o['balanced_accuracy']:.3f} -> "
                  f"{h['balanced_accuracy']:.3f} ({r['drop_balanced_accuracy']:+.3f}); "
                  f"predictions changed {r['n_changed']}, "
                  f"right->wrong {r['n_lost']}, wrong->right {r['n_gained']} (McNemar p {r['p_value']:.2g})")
    print(f"  ({time.time() - t1:.0f} s; total {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
