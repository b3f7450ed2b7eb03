"""Do GAN-synthesised cells help a classifier trained on few real ones? Measured on phantom Pap-smear cells.

    OMP_NUM_THREADS=2 .venv/bin/python bench/generative_measure.py      # 3 seeds x n_per_class 10, 30 (minutes)
    .venv/bin/python bench/generative_measure.py --seeds 1 --sizes 5 --gan-epochs 2 --clf-epochs 1   # smoke test

For each seed and each `n_per_class`, `gynlab.exercises.generative.augmentation_trial` (lesson 70) picks n real cells
per class, trains a class-conditional DCGAN on exactly those, then two SmallCNNs with the same number of updates (real
only, repeated; real + synthetic) and scores both by balanced accuracy on the held-out real test split. Prints one row
per trial and, per size, the mean and standard deviation of both accuracies and of their difference (synthetic minus
real only; the reference is the real-only classifier measured in the same run). Phantom data only; not for clinical use.
"""
import argparse
import json
import os
import sys
import time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from gynlab import phantoms
from gynlab.exercises.generative import augmentation_trial
from gynlab.transforms import stack_images


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1500, help="phantom cells generated (60%% train, 20%% test)")
    ap.add_argument("--size", type=int, default=32, help="image size (power of 2)")
    ap.add_argument("--sizes", default="10,30", help="comma-separated real images per class")
    ap.add_argument("--synth", type=int, default=100, help="synthetic images per class")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--gan-epochs", type=int, default=100)
    ap.add_argument("--clf-epochs", type=int, default=10)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cy = phantoms.phantom_cytology(n=a.n, image_size=max(32, a.size), seed=0)
    x, y = stack_images(cy["train"], a.size, 3), np.array(cy["train"]["label"])
    xt, yt = stack_images(cy["test"], a.size, 3), np.array(cy["test"]["label"])
    print(f"phantom cytology {a.size}px: {len(x)} train / {len(xt)} test cells, "
          f"{len(phantoms.CYTOLOGY_CLASSES)} classes; "
          f"device {a.device or ('cuda' if torch.cuda.is_available() else 'cpu')}\n")
    print("| n real/class | seed | real only | real + synthetic | difference | seconds |\n|---|---|---|---|---|---|")
    rows = []
    for n in [int(s) for s in a.sizes.split(",")]:
        for seed in range(a.seeds):
            t = time.perf_counter()
            r = augmentation_trial(x, y, xt, yt, n_per_class=n, n_synth_per_class=a.synth, gan_epochs=a.gan_epochs,
                                   clf_epochs=a.clf_epochs, seed=seed, device=a.device)
            r["seconds"] = time.perf_counter() - t; rows.append(r)
            print(f"| {n} | {seed} | {r['acc_real']:.3f} | {r['acc_aug']:.3f} | {r['gain']:+.3f} "
                  f"| {r['seconds']:.0f} |",
                  flush=True)
    print("\nSummary (mean ± sd over seeds; balanced accuracy on the real test split):\n")
    print("| n real/class | real only | real + synthetic | difference (synthetic − real) |\n|---|---|---|---|")
    for n in sorted({r["n_per_class"] for r in rows}):
        rs = [r for r in rows if r["n_per_class"] == n]
        ms = {k: (np.mean([r[k] for r in rs]), np.std([r[k] for r in rs])) for k in ("acc_real", "acc_aug", "gain")}
        print(f"| {n} | {ms['acc_real'][0]:.3f} ± {ms['acc_real'][1]:.3f} "
              f"| {ms['acc_aug'][0]:.3f} ± {ms['acc_aug'][1]:.3f} "
              f"| {ms['gain'][0]:+.3f} ± {ms['gain'][1]:.3f} |")
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if a.out:
        with open(a.out, "w") as f: json.dump(dict(args=vars(a), trials=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
