"""Linear probe vs fine-tuning vs training from scratch on MMOTU OTU_2D (8 classes), validation split.

    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/transfer_compare.py            # 128 px, all images
    .venv/bin/python bench/transfer_compare.py --size 64 --n-train 300 --ft-epochs 1 --scratch-epochs 1   # smoke test

Prints a markdown table: accuracy, balanced accuracy, macro one-vs-rest AUC (scikit-learn) and wall-clock /
process CPU minutes of each method. Needs the MMOTU folder (../shared/data/mmotu_otu2d or $GYNLAB_DATA).
Caveats: MMOTU has no patient ids (near-duplicate frames may straddle the split: optimistic scores) and
146 validation images (one image = 0.7 points of accuracy). Not for clinical use.
"""
import argparse
import json
import os
import sys
import time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from gynlab import data
from gynlab.models import pretrained as P
from gynlab.train import fit, predict, macro_auc
from gynlab.transforms import to_torch, ultrasound_augment


def scores(y, proba):
    y, proba = np.asarray(y), np.asarray(proba)
    return dict(accuracy=accuracy_score(y, proba.argmax(1)),
                balanced_accuracy=balanced_accuracy_score(y, proba.argmax(1)),
                macro_auc=macro_auc(y, proba))


class UnfreezeAll:
    "fit callback: after the first epoch (head only), train every layer group."
    def after_epoch(self, t): P.unfreeze(t.model)


class Timer:
    def __enter__(self): self.w, self.c = time.perf_counter(), time.process_time(); return self
    def __exit__(self, *a): self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=0, help="0: all training images")
    ap.add_argument("--ft-epochs", type=int, default=5)
    ap.add_argument("--scratch-epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                    help="ultrasound augmentation for fine-tune/scratch")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="probe,finetune,scratch",
                    help="comma-separated subset of probe,finetune,scratch")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(a.seed)

    try: us = data.load("mmotu")
    except Exception as e: sys.exit(f"MMOTU not available ({e}); this benchmark needs the real data")
    train = us["train"]
    if a.n_train: train = train.shuffle(seed=a.seed).select(range(min(a.n_train, len(train))))
    names = train.features["label"].names
    mean, std = P.normalization("efficientnet_lite0")
    aug = (lambda: ultrasound_augment(seed=a.seed)) if a.augment else (lambda: None)
    print(f"MMOTU: {len(train)} train / {len(us['validation'])} validation, {len(names)} classes, {a.size} px, "
          f"device {device}, torch threads {torch.get_num_threads()}", flush=True)

    # decode + resize every image once (shared by the three methods; timed separately)
    with Timer() as t_load:
        tr_eff = to_torch(train, a.size, mean=mean, std=std, cache=True)
        va_eff = to_torch(us["validation"], a.size, mean=mean, std=std, cache=True)
        for d in (tr_eff, va_eff): [d._load(i) for i in range(len(d))]
    results, y_val = {}, np.array(us["validation"]["label"])

    def with_cache(src, **kw):  # same cached [0,1] tensors, other normalisation / augmentation
        d = to_torch(src.split, a.size, cache=True, **kw); d._cache = src._cache; return d

    methods = set(a.methods.split(","))
    unknown = methods - {"probe", "finetune", "scratch"}
    if unknown: sys.exit(f"--methods: unknown {unknown}")
    if "probe" in methods:
        with Timer() as t:
            net = P.create("efficientnet_lite0", len(names))
            dl = lambda d: torch.utils.data.DataLoader(d, batch_size=64)
            Xtr, ytr = P.extract_features(net, dl(tr_eff), device)
            Xva, _ = P.extract_features(net, dl(va_eff), device)
            probe = P.linear_probe(Xtr, ytr, C=0.5)
            proba = np.zeros((len(Xva), len(names))); proba[:, probe.classes_] = probe.predict_proba(Xva)
        results["linear probe (EfficientNet-Lite0, frozen)"] = dict(scores(y_val, proba), wall_min=t.wall / 60,
                                                                    cpu_min=t.cpu / 60)
        print(results, flush=True)

    if "finetune" in methods:
        with Timer() as t:
            torch.manual_seed(a.seed)
            net = P.create("efficientnet_lite0", len(names))
            P.freeze(net)                                   # epoch 1: head only; then everything, discriminative lrs
            fit(net, with_cache(tr_eff, mean=mean, std=std, augment=aug()), va_eff, epochs=a.ft_epochs,
                batch_size=a.batch_size,
                optimizer=lambda params: torch.optim.AdamW(P.param_groups(net, (1e-4, 2e-3)), weight_decay=1e-4),
                callbacks=[UnfreezeAll()], device=device, seed=a.seed, progress=False)
            proba = predict(net, va_eff, device)
        results["fine-tune (EfficientNet-Lite0)"] = dict(scores(y_val, proba), wall_min=t.wall / 60, cpu_min=t.cpu / 60)
        print(results, flush=True)

    if "scratch" in methods:
        with Timer() as t:
            torch.manual_seed(a.seed)
            net = P.create("smallcnn", len(names), width=32, depth=5)
            fit(net, with_cache(tr_eff, augment=aug()), with_cache(va_eff), epochs=a.scratch_epochs, lr=2e-3,
                weight_decay=1e-4,
                batch_size=a.batch_size, device=device, seed=a.seed, progress=False)
            proba = predict(net, with_cache(va_eff), device)
        results["scratch (SmallCNN 32x5)"] = dict(scores(y_val, proba), wall_min=t.wall / 60, cpu_min=t.cpu / 60)

    print(f"\nMMOTU OTU_2D validation ({len(y_val)} images), {a.size} px, {len(train)} training images; "
          f"fine-tune {a.ft_epochs} epochs, scratch {a.scratch_epochs} epochs; "
          f"image decoding {t_load.wall / 60:.2f} min (not included)\n")
    print("| method | accuracy | balanced accuracy | macro AUC | wall min | CPU min |\n|---|---|---|---|---|---|")
    for k, r in results.items():
        print(f"| {k} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['macro_auc']:.3f} "
              f"| {r['wall_min']:.1f} | {r['cpu_min']:.1f} |")
    if a.out:
        with open(a.out, "w") as f: json.dump(dict(args=vars(a), results=results), f, indent=1)


if __name__ == "__main__":
    main()
