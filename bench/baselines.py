"""Real-data baselines: train each recipe of `gynlab.tasks.RECIPES` and print our figures beside the published ones.

    python bench/baselines.py [--recipes mmotu-classify,mmotu-lesions,hc18] [--seeds 0 1] [--reuse] [--quick]
    python bench/baselines.py --recipes mmotu-classify --cv 3 [--set image_size=224 --set epochs=7 ...]

For each recipe and seed: `gynlab train --recipe NAME` (the same function, in-process), timed in CPU minutes
(process time: both cores count), then scored on the validation split of the run: accuracy, balanced accuracy and
macro one-vs-rest AUC for classification (also with test-time augmentation, `gynlab predict --tta`); mean Dice for
segmentation; for HC18 also the Dice of the ellipse fitted to each predicted skull (what the HC18 challenge scored,
`gynlab.metrics.fitted_ellipse_mask`) and the head-circumference mean absolute difference in mm, before and after
subtracting the offset learnt on the training images (`gynlab calibrate --run RUN`). Runs go to
runs/bench-<recipe>-s<seed> (git-ignored); `--reuse` scores existing runs again (their CPU minutes
as recorded when they were trained). The table and the learning curves are written to
bench/results/baselines.json, which the Results page of the site shows. `--quick` trains on a small subset for one
epoch (a smoke test of this script, not a result).

`--cv K` cross-validates instead: K runs per recipe and seed, each trained on the training split less one fold and
scored on that fold (`gynlab train --fold I/K`; near-duplicate clusters and HC18 exams stay whole, MMOTU's classes
spread over the folds, the same folds for every seed and setting), reported as the mean and spread over the folds (each
fold's learning curve is kept too); the
validation split is not used (HC18's offset is learnt on the other folds). `--set KEY=VALUE` (JSON values) changes a
recipe setting, so that two settings can be compared on the same folds. Results go to the "cv" list of the same file.

Published figures (GPU, full resolution, their own splits) are quoted from ../shared/DESIGN.md.
"""
from __future__ import annotations
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"                    # git-ignored; --runs changes it
sys.path.insert(0, str(ROOT))

PUBLISHED = {
    "mmotu-classify": "acc 0.921, AUC 0.990 (EfficientNet-B7 + Swin, Garcia-Atutxa et al. 2025); acc 0.919, AUC 0.98 "
                      "(two-branch EfficientNet-B3, Alsubai et al. 2025)",
    "mmotu-lesions": "Dice 0.72 (U-Net), 0.74 (Attention U-Net) (Zhao et al. 2022)",
    "hc18": "HC error 2.4-2.8 mm, Dice 0.97-0.985 (recent work); reference masks through our ellipse fit: ~1.2 mm",
}
TARGETS = {"mmotu-classify": {"accuracy": 0.80, "balanced_accuracy": 0.65, "auc": 0.93},
           "mmotu-lesions": {"dice": 0.78}, "hc18": {"hc_mae_mm_corrected": 2.5, "dice": 0.97}}


def variant_name(overrides: dict) -> str:
    "'' for the recipe as it is, else its changed settings as 'key=value,...'."
    return ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(overrides.items()))


def _changed_settings(run: Path, settings: dict) -> list[str]:
    """The settings a run's config.json records with another value than `settings` (a recipe changed since it ran).
    A lesion-crop run records `crop` as a dict of its crop settings (`crop_margin` as `margin`, ...)."""
    from gynlab.roi import CROP_SETTINGS
    try: cfg = json.loads((run / "config.json").read_text())
    except (OSError, ValueError): return ["config.json (missing or unreadable)"]
    if not isinstance(cfg, dict): return ["config.json (not a JSON object)"]
    crop = cfg.get("crop") if isinstance(cfg.get("crop"), dict) else {}
    recorded = {**cfg, "crop": "lesion" if crop else cfg.get("crop"),
                **{k: crop[k.removeprefix("crop_")] for k in CROP_SETTINGS if k.removeprefix("crop_") in crop}}
    return sorted(k for k, v in settings.items() if k in recorded and json.dumps(recorded[k]) != json.dumps(v))


def train(name: str, seed: int, quick: bool, reuse: bool, overrides: dict | None = None,
          fold: tuple[int, int] | None = None) -> tuple[Path, float]:
    """Train recipe `name` (with `overrides`; on the training split less `fold` I/K) into
    runs/bench-<name>[-<variant>]-s<seed>[-cv<I>of<K>]; (run folder, CPU minutes; as recorded when reused)."""
    import re
    from gynlab.tasks import recipe, train_classifier
    from gynlab.segment import train_segmenter
    overrides = overrides or {}
    tag = re.sub(r"[^A-Za-z0-9._=,-]+", "", variant_name(overrides)).replace(",", "-").replace("=", "")
    run = RUNS / (f"bench-{name}{'-' + tag if tag else ''}-s{seed}{f'-cv{fold[0]}of{fold[1]}' if fold else ''}"
                           f"{'-quick' if quick else ''}")
    import inspect
    from gynlab.roi import CROP_SETTINGS, train_lesion_classifier
    r = recipe(name)
    fns = [train_classifier, train_lesion_classifier] if r["task"] == "classify" else [train_segmenter]
    fixed = {"dataset", "out", "seed", "recipe", "overwrite", "progress", "subset", "fold", "resume", "data_root",
             "device", "return_model", "settings", "locate"}
    settings = sorted(set(r) - {"task", "dataset", "budget_cpu_min"}
                      | {k for fn in fns for k in inspect.signature(fn).parameters} - fixed)
    unknown = set(overrides) - set(settings)
    if unknown: raise SystemExit(f"--set: {', '.join(sorted(unknown))} is not a setting of {name} "
                                 f"({', '.join(settings)})")
    r.update(overrides)
    task, dataset = r.pop("task"), r.pop("dataset")
    r.pop("budget_cpu_min", None)
    if quick: r.update(epochs=1, image_size=min(r["image_size"], 64), freeze_epochs=0) if task == "classify" else \
        r.update(epochs=1, image_size=64)
    crop = r.pop("crop", None)
    if crop == "lesion" and quick: r.update(locator_size=64, locator_epochs=1)
    if crop != "lesion": [r.pop(k, None) for k in CROP_SETTINGS]
    if reuse and (run / "model.safetensors").is_file():
        changed = _changed_settings(run, {**r, "crop": crop})
        if not changed: return run, _recorded_cpu_min(run)
        print(f"{_shown(run)} was trained with other settings ({', '.join(changed)}): training it again", flush=True)
    t0 = time.process_time()
    if task == "classify":
        (train_lesion_classifier if crop == "lesion" else train_classifier)(
            dataset, r.pop("model"), run, **r, seed=seed, recipe=name, overwrite=True, progress=False,
            subset=64 if quick else None, fold=fold)
    else:
        train_segmenter(dataset, out=run, seed=seed, overwrite=True, progress=False, subset=32 if quick else None,
                        recipe=name, fold=fold, **r)
    cpu_min = (time.process_time() - t0) / 60
    (run / "bench.json").write_text(json.dumps({"cpu_min": cpu_min}))
    return run, cpu_min


def _shown(run: Path) -> str:
    "A run folder as a command shows it: relative to the repository where it is inside it."
    return str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run)


def _recorded_cpu_min(run: Path) -> float:
    "CPU minutes of an existing run: from its bench.json, else the cpu_s a segmentation run records, else NaN."
    if (run / "bench.json").is_file(): return float(json.loads((run / "bench.json").read_text())["cpu_min"])
    cpu_s = json.loads((run / "metrics.json").read_text()).get("cpu_s")
    return cpu_s / 60 if isinstance(cpu_s, (int, float)) else float("nan")


def _refreshed(run: Path) -> bool:
    "Whether the run's BatchNorm statistics were recomputed for its final weights (runs before `refresh_bn`: no)."
    return bool(json.loads((run / "config.json").read_text()).get("refresh_bn", False))


def score(name: str, run: Path) -> dict:
    "The validation figures of a run (see the module docstring)."
    cfg, metrics = json.loads((run / "config.json").read_text()), json.loads((run / "metrics.json").read_text())
    if cfg.get("task", "classify") == "classify":
        out = {k: metrics["final"][k] for k in ("accuracy", "balanced_accuracy", "auc")}
        out.update({f"{k}_tta": v for k, v in _tta_scores(run, cfg).items()})
        return out
    tta = _seg_scores(run, tta=True)
    out = {"dice": metrics["dice"], "dice_tta": tta["dice"]}
    if "hc_mae_mm" in metrics:
        ellipse = (metrics["dice_ellipse"] if "dice_ellipse" in metrics       # runs trained before it was recorded:
                   else _seg_scores(run)["dice_ellipse"])                     # scored now
        out.update(dice_ellipse=ellipse, dice_ellipse_tta=tta["dice_ellipse"])
        from gynlab.biometry import fit_hc_offset
        out.update(hc_mae_mm_model_size=metrics["hc_mae_mm"])
        from gynlab.core import DataError
        for tta in (False, True):                      # the last one fitted stays in run/biometry.json
            try: offset = json.loads(Path(fit_hc_offset(run, tta=tta)).read_text())["hc_offset_mm"]
            except DataError as e:                     # a model too weak to find any skull (e.g. --quick)
                print(f"  {run.name}: no HC offset ({e}); HC figures are NaN", file=sys.stderr)
                offset = float("nan")
            raw, corrected, reference = _native_hc_mae(run, offset, tta)
            sfx = "_tta" if tta else ""
            out.update({f"hc_offset_mm{sfx}": offset, f"hc_mae_mm{sfx}": raw, f"hc_mae_mm_corrected{sfx}": corrected,
                        "hc_mae_mm_reference_masks": reference})
    return out


def _seg_scores(run: Path, tta: bool = False) -> dict:
    """`evaluate_segmenter`'s summary on the validation split at the model's size (with `tta`, the left-right mirror
    averaged in): mean foreground Dice, and for HC18 the Dice of the fitted ellipse."""
    from gynlab.runs import load_run
    from gynlab.segment import evaluate_segmenter, segmentation_data
    net, cfg = load_run(run, task="segment")
    _, valid, info = segmentation_data(cfg["dataset"], image_size=cfg["image_size"], target=cfg.get("target"),
                                       seed=cfg["seed"], subset=cfg.get("subset"), fold=cfg.get("fold"))
    return evaluate_segmenter(net, valid, info, mean=cfg["mean"], std=cfg["std"], tta=tta)[0]


def _tta_scores(run: Path, cfg: dict) -> dict:
    """Accuracy, balanced accuracy and macro AUC on the validation split with the left-right mirror averaged in; a
    lesion-crop run predicts the validation image files as `gynlab predict --tta` does, through its locator."""
    import torch
    from gynlab.runs import load_run
    from gynlab.tasks import run_splits
    from gynlab.train import classification_metrics, predict
    from gynlab.transforms import to_torch
    if cfg.get("crop"):
        import datasets
        from gynlab.roi import predict_images
        _, valid, _ = run_splits(cfg["dataset"], image_size=None, seed=cfg["seed"], subset=cfg.get("subset"),
                                 fold=cfg.get("fold"), target=cfg["target"])
        files = [Path(v["path"]) for v in valid.cast_column("image", datasets.Image(decode=False))["image"]]
        rows, _ = predict_images(run, files, tta=True)
        p = torch.tensor([[r[f"prob_{c}"] for c in cfg["classes"]] for r in rows])
    else:
        net, cfg = load_run(run)
        _, valid, _ = run_splits(cfg["dataset"], image_size=cfg["image_size"], seed=cfg["seed"],
                                 subset=cfg.get("subset"), fold=cfg.get("fold"), target=cfg["target"])
        ds = to_torch(valid, cfg["image_size"], cfg["channels"], cfg["target"], mean=cfg["mean"], std=cfg["std"])
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        p = (predict(net, x) + predict(net, x.flip(-1))) / 2
    y = torch.tensor(valid[cfg["target"]])
    m = classification_metrics(torch.log(torch.as_tensor(p).clamp_min(1e-12)), y)
    return {k: m[k] for k in ("accuracy", "balanced_accuracy", "auc")}


def _native_hc_mae(run: Path, offset: float, tta: bool) -> tuple[float, float, float]:
    """HC mean absolute difference (mm) on the validation split, masks at each image's own size (what
    `gynlab predict` writes and `gynlab biometry` measures): (raw, after subtracting the training-set offset,
    the reference masks themselves through the same ellipse fit)."""
    from gynlab.metrics import head_circumference
    from gynlab.runs import load_run
    from gynlab.segment import segment_image, segmentation_data
    net, cfg = load_run(run, task="segment")
    _, valid, _ = segmentation_data(cfg["dataset"], image_size=None, seed=cfg["seed"], subset=cfg.get("subset"),
                                    fold=cfg.get("fold"))
    err = np.array([head_circumference(segment_image(net, r["image"], cfg, tta=tta) == 1, r["pixel_size_mm"])
                    - r["head_circumference_mm"] for r in valid])
    ref = np.array([head_circumference(np.asarray(r["mask"]) > 0, r["pixel_size_mm"]) - r["head_circumference_mm"]
                    for r in valid])
    return float(np.nanmean(np.abs(err))), float(np.nanmean(np.abs(err - offset))), float(np.mean(np.abs(ref)))


def main(argv=None) -> int:
    from gynlab.core import keep_freed_memory
    from gynlab.tasks import RECIPES
    keep_freed_memory()                          # as `gynlab train` does: the recipes' budgets are measured with it
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--reuse", action="store_true", help="score existing runs again instead of training")
    ap.add_argument("--quick", action="store_true", help="1 epoch on a subset: a smoke test of this script")
    ap.add_argument("--cv", type=int, default=None, metavar="K", help="K-fold cross-validation on the training split")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a recipe setting")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "baselines.json"))
    ap.add_argument("--runs", default=None, help="folder for the run folders (default runs/)")
    a = ap.parse_args(argv)
    global RUNS
    RUNS = Path(a.runs) if a.runs else ROOT / "runs"
    try: overrides = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    except ValueError: raise SystemExit(f"--set: give KEY=VALUE with a JSON value (e.g. image_size=224), got {a.set}")
    if a.cv is not None: return cross_validate(a, overrides)
    if overrides: raise SystemExit("--set is for comparing settings under --cv; change the recipe itself otherwise")
    rows = []
    for name in a.recipes.split(","):
        for seed in a.seeds:
            run, cpu_min = train(name, seed, a.quick, a.reuse)
            s = score(name, run)
            hist = json.loads((run / "metrics.json").read_text()).get("history", [])
            rows.append({"recipe": name, "seed": seed, "cpu_min": cpu_min, "refresh_bn": _refreshed(run),
                         "budget_cpu_min": RECIPES[name]["budget_cpu_min"], "scores": s,
                         "targets": TARGETS.get(name, {}), "published": PUBLISHED.get(name, ""),
                         "command": f"gynlab train --recipe {name} --seed {seed} --out {_shown(run)}",
                         "history": hist, "quick": a.quick})
            shown = ", ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float))
            print(f"{name} seed {seed}: {shown}; {cpu_min:.1f} CPU-min (budget {RECIPES[name]['budget_cpu_min']})")
            print(f"  published: {PUBLISHED.get(name, '')}")
    if not a.quick:
        from gynlab.core import write_json
        out = Path(a.out)                       # rows of other recipes and seeds measured before are kept
        old = json.loads(out.read_text()) if out.is_file() else {"rows": []}
        done = {(r["recipe"], r["seed"]) for r in rows}
        kept = [r for r in old["rows"] if (r["recipe"], r["seed"]) not in done]
        write_json(out, {**old, "rows": kept + rows, "created": time.strftime("%Y-%m-%d")})   # "cv" is kept too
        print(f"wrote {a.out}")
    return 0


CV_KEYS = ("accuracy", "balanced_accuracy", "auc", "accuracy_tta", "balanced_accuracy_tta", "auc_tta", "dice",
           "dice_tta", "dice_ellipse", "dice_ellipse_tta", "hc_mae_mm_corrected", "hc_mae_mm_corrected_tta")


def flags(overrides: dict) -> str:
    "Changed settings as `gynlab train` flags (a boolean as --amp / --no-amp)."
    def one(k, v):
        f = "--" + k.replace("_", "-")
        return (f if v else f"--no-{f[2:]}") if isinstance(v, bool) else f"{f} {v}"
    return " ".join(one(k, v) for k, v in overrides.items())


def cross_validate(a, overrides: dict) -> int:
    "`--cv K`: every recipe and seed on K folds of the training split; mean and spread over the folds."
    from gynlab.core import write_json
    variant, rows = variant_name(overrides), []
    for name in a.recipes.split(","):
        first = len(rows)
        for seed in a.seeds:
            for i in range(1, a.cv + 1):
                run, cpu_min = train(name, seed, a.quick, a.reuse, overrides, (i, a.cv))
                s = score(name, run)
                recorded = {**json.loads((run / "metrics.json").read_text()),
                            **json.loads((run / "config.json").read_text())}    # n_valid: either, by task
                command = [f"gynlab train --recipe {name} --seed {seed} --fold {i}/{a.cv}", flags(overrides),
                           f"--out {_shown(run)}"]
                rows.append({"recipe": name, "variant": variant, "seed": seed, "fold": [i, a.cv], "cpu_min": cpu_min,
                             "refresh_bn": _refreshed(run),
                             "scores": s, "n_valid": recorded["n_valid"], "command": " ".join(filter(None, command)),
                             "history": recorded.get("history", []), "quick": a.quick})
                shown = ", ".join(f"{k} {s[k]:.3f}" for k in CV_KEYS if k in s)
                print(f"{name} [{variant or 'recipe'}] seed {seed} fold {i}/{a.cv}: {shown}; {cpu_min:.1f} CPU-min",
                      flush=True)
        mine = rows[first:]
        print(f"{name} [{variant or 'recipe'}]:")
        for k in (k for k in CV_KEYS if k in mine[0]["scores"]):
            v = np.array([r["scores"][k] for r in mine])
            print(f"  {k}: mean {v.mean():.3f}, sd {v.std(ddof=1) if len(v) > 1 else 0:.3f} over {len(v)} folds")
    if not a.quick:
        out = Path(a.out)
        old = json.loads(out.read_text()) if out.is_file() else {"rows": []}
        done = {(r["recipe"], r["variant"], r["seed"], tuple(r["fold"])) for r in rows}
        kept = [r for r in old.get("cv", []) if (r["recipe"], r["variant"], r["seed"], tuple(r["fold"])) not in done]
        write_json(out, {**old, "cv": kept + rows, "created": time.strftime("%Y-%m-%d")})
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
