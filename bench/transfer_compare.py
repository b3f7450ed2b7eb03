"""Linear probe vs fine-tuning vs training from scratch on MMOTU OTU_2D (8 classes), validation split (lesson 20).

    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/transfer_compare.py            # 128 px, all images
    .venv/bin/python bench/transfer_compare.py --size 32 --n-train 64 --epochs 2 --finder-steps 10   # smoke test

The same images and the same number of epochs for every arm: the probe fits a logistic regression on frozen
EfficientNet-Lite0 features (one forward pass); fine-tuning trains the head for one frozen epoch, runs a
learning-rate finder on a copy, then trains every layer with discriminative rates (pick/10 to pick, one-cycle) and
recomputes the BatchNorm statistics; the SmallCNN from scratch gets its own finder, the same schedule and the same
BatchNorm step. Prints a markdown table: epochs, finder steps, accuracy, balanced accuracy, macro one-vs-rest AUC
(scikit-learn), the AUC of High-grade serous, wall-clock and process CPU minutes. Needs the MMOTU folder
(../shared/data/mmotu_otu2d or $GYNLAB_DATA). Caveats: MMOTU has no patient ids, and the validation split has a
handful of High-grade serous images: its AUC is very uncertain. Not for clinical use.
"""
import argparse
import copy
import json
import os
import sys
import time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from torch.optim.swa_utils import update_bn

from gynlab import data
from gynlab.models import pretrained as P
from gynlab.train import fit, predict, macro_auc
from gynlab.transforms import to_torch

MALIGNANT = "High-grade_Serous_Cystadenoma"


def scores(y, proba, malignant):
    y, proba = np.asarray(y), np.asarray(proba)
    pred = proba.argmax(1)
    return dict(accuracy=accuracy_score(y, pred), balanced_accuracy=balanced_accuracy_score(y, pred),
                macro_auc=macro_auc(y, proba), auc_malignant=roc_auc_score(y == malignant, proba[:, malignant]))


class Timer:
    def __enter__(self): self.w, self.c = time.perf_counter(), time.process_time(); return self
    def __exit__(self, *a): self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def find_lr(net, tr, lo_ratio, steps, device, seed):
    trial, finder = copy.deepcopy(net), P.LRFinder(lo=1e-5, hi=1.0, steps=steps)
    fit(trial, finder.loader(tr, batch_size=16, seed=seed), device=device, progress=False, seed=seed,
        callbacks=[finder], optimizer=lambda p: torch.optim.AdamW(P.param_groups(trial, (lo_ratio, 1.0))))
    return finder


def train_all_layers(net, tr, va, epochs, lr, lo_ratio, a, device):
    groups = P.param_groups(net, (lr * lo_ratio, lr))
    fit(net, tr, va, epochs=epochs, batch_size=a.batch_size, device=device, progress=False, seed=a.seed,
        schedule="onecycle", optimizer=lambda p: torch.optim.AdamW(groups, weight_decay=1e-2))
    update_bn(torch.utils.data.DataLoader(tr, batch_size=64), net, device=device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=0, help="0: all training images")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of fine-tuning (1 frozen + the rest) and of scratch")
    ap.add_argument("--finder-steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="probe,finetune,scratch",
                    help="comma-separated subset of probe,finetune,scratch")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    if a.epochs < 2: sys.exit("--epochs: at least 2 (one frozen epoch, then every layer)")
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    methods = set(a.methods.split(","))
    unknown = methods - {"probe", "finetune", "scratch"}
    if unknown: sys.exit(f"--methods: unknown {unknown}")

    try: us = data.load("mmotu")
    except Exception as e: sys.exit(f"MMOTU not available ({e}); this benchmark needs the real data")
    train = us["train"]
    if a.n_train: train = train.shuffle(seed=a.seed).select(range(min(a.n_train, len(train))))
    names = train.features["label"].names
    mal = names.index(MALIGNANT)
    mean, std = P.normalization("efficientnet_lite0")
    print(f"MMOTU: {len(train)} train / {len(us['validation'])} validation, {len(names)} classes, {a.size} px, "
          f"device {device}, torch threads {torch.get_num_threads()}", flush=True)
    tr_eff, va_eff = (to_torch(s, a.size, mean=mean, std=std, cache=True) for s in (train, us["validation"]))
    tr_s, va_s = (to_torch(s, a.size, cache=True) for s in (train, us["validation"]))
    y_val, results = np.array(us["validation"]["label"]), {}

    if "probe" in methods:
        with Timer() as t:
            net = P.create("efficientnet_lite0", len(names))
            dl = lambda d: torch.utils.data.DataLoader(d, batch_size=64)
            Xtr, ytr = P.extract_features(net, dl(tr_eff), device)
            Xva, _ = P.extract_features(net, dl(va_eff), device)
            probe = P.linear_probe(Xtr, ytr, C=0.5)
            proba = np.zeros((len(Xva), len(names))); proba[:, probe.classes_] = probe.predict_proba(Xva)
        results["linear probe (EfficientNet-Lite0, frozen)"] = dict(scores(y_val, proba, mal), epochs=0, finder_steps=0,
                                                                    wall_min=t.wall / 60, cpu_min=t.cpu / 60)
    if "finetune" in methods:
        with Timer() as t:
            torch.manual_seed(a.seed)
            net = P.freeze(P.create("efficientnet_lite0", len(names)))
            fit(net, tr_eff, va_eff, epochs=1, lr=1e-2, batch_size=a.batch_size, device=device, progress=False,
                seed=a.seed)
            finder = find_lr(P.unfreeze(net), tr_eff, 0.1, a.finder_steps, device, a.seed)
            train_all_layers(net, tr_eff, va_eff, a.epochs - 1, finder.suggestion(), 0.1, a, device)
            proba = predict(net, va_eff, device)
        results["fine-tune (EfficientNet-Lite0)"] = dict(scores(y_val, proba, mal), epochs=a.epochs,
                                                         finder_steps=len(finder.lrs), lr=finder.suggestion(),
                                                         wall_min=t.wall / 60, cpu_min=t.cpu / 60)
    if "scratch" in methods:
        with Timer() as t:
            torch.manual_seed(a.seed)
            net = P.create("smallcnn", len(names), width=16, depth=4)
            finder = find_lr(net, tr_s, 1.0, a.finder_steps, device, a.seed)
            train_all_layers(net, tr_s, va_s, a.epochs, finder.suggestion(), 1.0, a, device)
            proba = predict(net, va_s, device)
        results["scratch (SmallCNN 16x4)"] = dict(scores(y_val, proba, mal), epochs=a.epochs,
                                                  finder_steps=len(finder.lrs), lr=finder.suggestion(),
                                                  wall_min=t.wall / 60, cpu_min=t.cpu / 60)

    print(f"\nMMOTU OTU_2D validation ({len(y_val)} images, {(y_val == mal).sum()} High-grade serous), {a.size} px, "
          f"{len(train)} training images, {a.epochs} epochs per trained arm\n")
    print("| method | epochs | finder steps | accuracy | balanced accuracy | macro AUC | AUC HGS | wall min "
          "| CPU min |\n|---|---|---|---|---|---|---|---|---|")
    for k, r in results.items():
        print(f"| {k} | {r['epochs']} | {r['finder_steps']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} "
              f"| {r['macro_auc']:.3f} | {r['auc_malignant']:.3f} | {r['wall_min']:.1f} | {r['cpu_min']:.1f} |")
    if a.out:
        with open(a.out, "w") as f: json.dump(dict(args=vars(a), results=results), f, indent=1)


if __name__ == "__main__":
    main()
