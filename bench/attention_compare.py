"""CNN vs CNN+SE vs TinyViT (classification) and U-Net vs Attention U-Net (binary lesion segmentation), same budget.

    .venv/bin/python bench/attention_compare.py                        # MMOTU, all images, 64 px (long on CPU)
    # the settings measured for lesson 40 (2-core CPU, seed 0):
    .venv/bin/python bench/attention_compare.py --skip seg --size 64 --subset 400 --cls-epochs 10
    .venv/bin/python bench/attention_compare.py --skip cls --size 32 --base 8 --depth 3 --subset 200 --seg-epochs 8
    .venv/bin/python bench/attention_compare.py --dataset-cls phantom-cytology --dataset-seg phantom-uterus-mri \\
        --cls-epochs 2 --seg-epochs 2 --subset 48                                 # smoke test, no real data needed

Each pair is trained on the same split, image size, epochs, optimiser (AdamW), learning rate, batch size and
seed (lesson 40's `gynlab.exercises.attention.compare_classifiers` / `compare_segmenters`); prints markdown tables
and writes JSON with `--out`. MMOTU: the default split, near-duplicate frames kept together (136 validation images;
no patient ids, so other frames of one woman may still straddle the split: optimistic scores). One seed is one
sample: differences of a few points are within run-to-run noise. Not for clinical use.
"""
import argparse
import json
import os
import time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from gynlab.exercises.attention import compare_classifiers, compare_segmenters


def table(rows):
    cols = list(rows[0])
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset-cls", default="mmotu")
    ap.add_argument("--dataset-seg", default="mmotu")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--cls-epochs", type=int, default=10)
    ap.add_argument("--seg-epochs", type=int, default=8)
    ap.add_argument("--subset", type=int, default=0, help="cap each split (0: all images)")
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", choices=["cls", "seg"], default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    out = {"settings": vars(a)}
    if a.skip != "cls":
        t = time.perf_counter()
        out["classification"] = compare_classifiers(a.dataset_cls, ("cnn", "cnn+se", "vit"), image_size=a.size,
                                                    epochs=a.cls_epochs,
                                                    subset=a.subset or None, seed=a.seed, device=a.device)
        print(f"## classification: {a.dataset_cls}, {a.size} px, {a.cls_epochs} epochs "
              f"({time.perf_counter() - t:.0f} s)\n")
        print(table(out["classification"]) + "\n", flush=True)
    if a.skip != "seg":
        t = time.perf_counter()
        out["segmentation"] = compare_segmenters(a.dataset_seg, image_size=a.size, epochs=a.seg_epochs,
                                                 subset=a.subset or None,
                                                 base=a.base, depth=a.depth, seed=a.seed, device=a.device)
        print(f"## segmentation: {a.dataset_seg}, {a.size} px, base {a.base}, depth {a.depth}, {a.seg_epochs} epochs "
              f"({time.perf_counter() - t:.0f} s)\n")
        print(table(out["segmentation"]), flush=True)
    if a.out:
        with open(a.out, "w") as f: json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
