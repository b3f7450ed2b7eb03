"""How fast are the phantoms? Phantoms per second for each kind at its default size, DatasetDict construction time,
and, as a reference measured in the same run, the time to read the same number of same-size PNG files with PIL.

Run: .venv/bin/python bench/phantoms_speed.py   (about 15-30 s on a laptop CPU)
"""
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: F401  (imported before timing, so its import time is not counted)
import numpy as np
from PIL import Image

from gynlab import phantoms as P

# kind: (generator, default size, samples to time, images per sample, dataset loader)
KINDS = {
    "cytology": (P.cytology_cell, 64, 600, 1, P.phantom_cytology),
    "pelvic-us": (P.pelvic_us, 128, 150, 1, P.phantom_pelvic_us),
    "uterus-mri": (P.uterus_mri, 128, 150, 1, P.phantom_uterus_mri),
    "cine": (P.cine_loop, 64, 60, 12, P.phantom_cine),
}
N_DATASET = 200


def _images(out):
    "The uint8 arrays one sample would be stored as (image + mask, or the cine frames)."
    return list(out["frames"]) if "frames" in out else [out["image"], out["mask"]]


def main(scale: float = 1.0):
    print(f"{'kind':<11} {'size':>4} {'n':>5} {'generate/s':>11} {'gen time':>9} {'PNG read':>9} {'gen vs read':>12} "
          f"{f'DatasetDict(n={N_DATASET})':>19}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (fn, size, n, _, loader) in KINDS.items():
            n = max(int(n * scale), 5)
            t0 = time.perf_counter()
            outs = [fn(P.sample_rng(0, kind, i), None, size) for i in range(n)]
            t_gen = time.perf_counter() - t0
            # reference: the same arrays as PNG files on disk (written untimed), read back and decoded with PIL
            files = []
            for i, o in enumerate(outs):
                for j, a in enumerate(_images(o)):
                    f = Path(tmp) / f"{kind}_{i}_{j}.png"; Image.fromarray(a).save(f); files.append(f)
            t0 = time.perf_counter()
            for f in files:
                with Image.open(f) as im: np.asarray(im)
            t_read = time.perf_counter() - t0
            nd = max(int(N_DATASET * scale), 20)
            t0 = time.perf_counter()
            dd = loader(n=nd, image_size=size, seed=0)
            t_ds = time.perf_counter() - t0
            assert sum(len(d) for d in dd.values()) == nd
            ratio = t_read / t_gen
            word = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
            print(f"{kind:<11} {size:>4} {n:>5} {n / t_gen:>11.0f} {t_gen:>8.2f}s {t_read:>8.2f}s {word:>12} "
                  f"{t_ds:>17.2f}s")
            rows.append((kind, n / t_gen, ratio, t_ds))
    print("\n'gen vs read': generating a phantom (image + mask, or 12 cine frames) compared with reading the same")
    print("arrays from PNG files on local disk (warm page cache) with PIL, measured in this run.")
    return rows


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
