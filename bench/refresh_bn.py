"""What refreshing the BatchNorm statistics does to a trained run: the run's saved weights scored on its validation
images (its fold, for a cross-validation run) twice, first with the statistics it was saved with, then with statistics
recomputed over its training images (`gynlab.tasks.refresh_batchnorm`, what `refresh_bn` does at the end of training).
The same weights both times, so the difference is the refresh's alone, not training noise. Nothing is written.

    python bench/refresh_bn.py runs/bench-hc18-s0-cv*of3 runs/bench-mmotu-classify-s0-cv*of3

Scores: accuracy, balanced accuracy and macro AUC for a classifier; mean Dice for a segmenter. A run trained with
`refresh_bn` already holds refreshed statistics: it is measured all the same (marked), and should barely move.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scores(run: Path) -> tuple[dict, dict, dict]:
    "(scores as saved, scores after the refresh, config) of one run."
    from gynlab.runs import load_run, run_task
    from gynlab.tasks import refresh_batchnorm
    from gynlab.transforms import to_torch
    task = run_task(run)
    net, cfg = load_run(run, task=task)
    if task == "segment":
        from gynlab.segment import evaluate_segmenter, segmentation_data
        train, valid, info = segmentation_data(cfg["dataset"], image_size=cfg["image_size"], target=cfg.get("target"),
                                               seed=cfg["seed"], subset=cfg.get("subset"), fold=cfg.get("fold"))
        target, channels = info["target"], info["channels"]
        def score(): return {"dice": evaluate_segmenter(net, valid, info, mean=cfg["mean"], std=cfg["std"])[0]["dice"]}
    else:
        from gynlab.tasks import run_splits
        from gynlab.train import evaluate
        train, valid, _ = run_splits(cfg["dataset"], image_size=cfg["image_size"], seed=cfg["seed"],
                                     subset=cfg.get("subset"), fold=cfg.get("fold"), target=cfg["target"])
        target, channels = cfg["target"], cfg["channels"]
        va = to_torch(valid, cfg["image_size"], channels, target, mean=cfg["mean"], std=cfg["std"])
        def score():
            m = evaluate(net, va)
            return {k: m[k] for k in ("accuracy", "balanced_accuracy", "auc")}
    before = score()
    refresh_batchnorm(net, to_torch(train, cfg["image_size"], channels, target, mean=cfg["mean"], std=cfg["std"]),
                      batch_size=cfg.get("batch_size", 32))
    return before, score(), cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (as `gynlab train` writes them)")
    a = ap.parse_args(argv)
    from gynlab.core import GynlabError
    from gynlab.runs import is_run
    missing = [str(r) for r in a.runs if not is_run(r)]
    if missing:
        print(f"not a run folder (no config.json and model.safetensors): {', '.join(missing)}", file=sys.stderr)
        return 2
    deltas: dict[str, list[float]] = {}
    for run in a.runs:
        t0 = time.process_time()
        try: before, after, cfg = scores(run)
        except GynlabError as e:
            print(f"{run}: {e}", file=sys.stderr)
            return 1
        note = " (trained with refresh_bn: already refreshed)" if cfg.get("refresh_bn") else ""
        shown = ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f} ({after[k] - before[k]:+.4f})" for k in before)
        print(f"{run}: {shown}; {time.process_time() - t0:.0f} CPU-s{note}", flush=True)
        for k in before: deltas.setdefault(k, []).append(after[k] - before[k])
    for k, d in deltas.items():
        print(f"{k}: mean change {sum(d) / len(d):+.4f} over {len(d)} runs (min {min(d):+.4f}, max {max(d):+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
