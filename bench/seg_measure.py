"""Measure the lesson-30 U-Net on real data (CPU by default): MMOTU binary lesion Dice/IoU/HD95 and HC18 skull
Dice + head-circumference error (mm), full train/validation splits, with the CPU time each run took.

    python bench/seg_measure.py                       # defaults below (about 10-15 CPU minutes on 2 cores)
    python bench/seg_measure.py --epochs 20 --image-size 128 --device cuda

Prints one JSON line per dataset and writes them to runs/seg_measure.json (git-ignored). Needs the real data
(../shared/data or $GYNLAB_DATA). Not for clinical use.
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

from gynlab.segment import train_segmenter


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["mmotu", "hc18"])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/seg_measure.json")
    a = p.parse_args(argv)
    results = []
    for name in a.datasets:
        t0, c0 = time.perf_counter(), time.process_time()
        m = train_segmenter(name, epochs=a.epochs, image_size=a.image_size, base=a.base, depth=a.depth, lr=a.lr,
                            batch_size=a.batch_size, seed=a.seed, device=a.device, progress=False)
        r = {"dataset": name, **{k: v for k, v in m.items() if k != "history"},
             "valid_dice_per_epoch": [round(h["dice"], 4) for h in m["history"]],
             "cpu_minutes": round((time.process_time() - c0) / 60, 2),
             "wall_minutes": round((time.perf_counter() - t0) / 60, 2),
             "settings": {k: v for k, v in vars(a).items() if k not in ("datasets", "out")},
             "torch_threads": torch.get_num_threads(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
        print(json.dumps(r), flush=True)
        results.append(r)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
