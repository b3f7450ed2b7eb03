"""The CAD figures: MMOTU calibration and operating points, HC18 head circumference and gestational age.

    python bench/cad_measure.py [--skip mmotu|hc18] [--epochs 5] [--image-size 128] [--seg-epochs 10] [--seg-size 96]

MMOTU: EfficientNet-Lite0 fine-tuned (lesson 20 recipe), then `CADPipeline.calibrate` on the validation split for the
`malignant` and `neoplasm` groupings at a target sensitivity of 0.9 (temperature and threshold cross-fitted over 2
folds;
Wilson intervals for sensitivity/specificity, stratified bootstrap for AUC). HC18: U-Net, validation images segmented
at their own resolution, HC from the ellipse fit vs the challenge's reference, and gestational age (Hadlock 1984) in
days; the same fit applied to the reference masks gives the floor of the measurement itself, and the plausibility
measures of every reference mask (train and validation) are the evidence for `biometry.SKULL_LIMITS`.
Runs are written under runs/bench-cad-* (git-ignored, replaced by each call); --reuse measures an earlier call's runs
again. CPU: about 10 minutes on 2 idle cores.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gynlab import biometry, cad  # noqa: E402


def mmotu(a):
    from gynlab.tasks import train_classifier
    run = ROOT / "runs" / "bench-cad-mmotu"
    if a.reuse and (run / "model.safetensors").exists(): print(f"reusing {run}")
    else:
        t0 = time.process_time()
        train_classifier("mmotu", "efficientnet_lite0", run, epochs=a.epochs, image_size=a.image_size, progress=False,
                         overwrite=True)
        cpu_min = (time.process_time() - t0) / 60
        print(f"trained EfficientNet-Lite0 {a.image_size} px, {a.epochs} epochs: {cpu_min:.1f} CPU min")
    pipe = cad.CADPipeline.from_run(run)
    for g in ("malignant", "neoplasm"):
        t0 = time.perf_counter()
        s = pipe.calibrate(grouping_name=g, sensitivity=0.9)
        print(cad.format_summary(s), f"\n({time.perf_counter() - t0:.0f} s)\n")
    pipe.calibrate(grouping_name="malignant", sensitivity=0.9); pipe.save()


def reference_shapes():
    "The plausibility measures of all HC18 reference masks: what the limits of `check_skull_mask` must let through."
    from gynlab.core import DataError
    from gynlab.segment import segmentation_data
    train, valid, _ = segmentation_data("hc18", image_size=None)
    shapes, refused = [], 0
    for split in (train, valid):
        for r in split:
            try: shapes.append(biometry.check_skull_mask(np.asarray(r["mask"]) > 0, r["image"].size)[1])
            except DataError: refused += 1
    v = {k: np.array([s[k] for s in shapes]) for k in ("cover", "main", "fill", "axis_ratio")}
    print(f"HC18 reference masks: {len(shapes) + refused} ({refused} refused by the plausibility checks); "
          f"frame covered {v['cover'].min():.0%}–{v['cover'].max():.0%}; largest piece ≥ {v['main'].min():.0%} of the "
          f"mask; IoU with the fitted ellipse ≥ {v['fill'].min():.3f}; short/long axis "
          f"{v['axis_ratio'].min():.2f}–{v['axis_ratio'].max():.2f}")


def hc18(a):
    reference_shapes()
    from gynlab.core import DataError, read_json
    from gynlab.metrics import head_circumference
    from gynlab.runs import load_run
    from gynlab.segment import segment_image, segmentation_data, train_segmenter
    run = ROOT / "runs" / "bench-cad-hc18"
    if a.reuse and (run / "model.safetensors").exists(): print(f"reusing {run}")
    else:
        t0 = time.process_time()
        train_segmenter("hc18", epochs=a.seg_epochs, image_size=a.seg_size, out=run, progress=False, overwrite=True)
        print(f"trained U-Net {a.seg_size} px, {a.seg_epochs} epochs: {(time.process_time() - t0) / 60:.1f} CPU min")
    net, cfg = load_run(run, task="segment")
    pred, true, floor, refused = [], [], [], 0
    for r in segmentation_data("hc18", image_size=None)[1]:       # validation images at their own resolution
        px = r["pixel_size_mm"]
        mask = segment_image(net, r["image"], cfg) == 1
        try: pred.append(biometry.biometry_from_mask(mask, px, r["image"].size)["hc_mm"])
        except DataError: refused += 1; continue                  # an implausible mask: counted, not measured
        true.append(r["head_circumference_mm"])
        floor.append(head_circumference(np.asarray(r["mask"]) > 0, px))
    pred, true, floor = map(np.array, (pred, true, floor))
    off = read_json(biometry.fit_hc_offset(run))         # the systematic over-estimate, learnt on training images only
    e2 = pred - off["hc_offset_mm"] - true
    print(f"bias learnt on the {off['n']} training images: {off['hc_offset_mm']:+.1f} mm; "
          f"validation HC mean absolute difference after "
          f"subtracting it {np.mean(np.abs(e2)):.1f} mm (median {np.median(np.abs(e2)):.1f})")
    ga_p, ga_t = biometry.hadlock_ga_weeks(pred), biometry.hadlock_ga_weeks(true)
    inr = ga_t >= biometry.HADLOCK_RANGE_WEEKS[0]
    err = pred - true
    print(f"HC18 validation ({len(true)} images measured, segmented at full resolution; "
          f"{refused} masks refused as implausible):")
    print(f"  HC mean absolute difference {np.mean(np.abs(err)):.1f} mm "
          f"(median {np.median(np.abs(err)):.1f}, bias {np.mean(err):+.1f}); "
          f"reference masks through the same fit: {np.mean(np.abs(floor - true)):.1f} mm")
    print(f"  gestational age (Hadlock 1984), {inr.sum()} images of 14 weeks or more: mean absolute difference "
          f"{7 * np.mean(np.abs(ga_p - ga_t)[inr]):.1f} days (median {7 * np.median(np.abs(ga_p - ga_t)[inr]):.1f}); "
          f"{(~inr).sum()} earlier images outside the formula's range")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", action="append", default=[], choices=["mmotu", "hc18"])
    ap.add_argument("--epochs", type=int, default=5); ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seg-epochs", type=int, default=10); ap.add_argument("--seg-size", type=int, default=96)
    ap.add_argument("--reuse", action="store_true", help="use the runs of an earlier call instead of training again")
    a = ap.parse_args()
    if "mmotu" not in a.skip: mmotu(a)
    if "hc18" not in a.skip: hc18(a)
