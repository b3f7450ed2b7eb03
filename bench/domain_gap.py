"""Domain gap before/after AdaBN and DANN over a few seeds: phantom scanner shift, and MMOTU grey-scale → colour
Doppler when ../shared/data is present. Prints absolute accuracies and differences to the source-only target accuracy.
Usage: python bench/domain_gap.py [--seeds 3] [--no-mmotu] [--device cpu]"""
import argparse, time
import numpy as np
from gynlab.domain import phantom_gap, mmotu_doppler_split, domain_gap

def show(name, rows):
    keys = list(rows[0])
    print(f"\n{name}: mean ± sd over {len(rows)} seeds")
    for k in keys:
        v = np.array([r[k] for r in rows])
        d = np.array([r[k] - r["target"] for r in rows]) if k not in ("source", "dann_source", "handcrafted_source") else None
        extra = f"   (vs source-only target: {d.mean():+.3f} ± {d.std():.3f})" if d is not None and k != "target" else ""
        print(f"  {k:20s} {v.mean():.3f} ± {v.std():.3f}{extra}")

if __name__ == "__main__":
    p = argparse.ArgumentParser(); p.add_argument("--seeds", type=int, default=3); p.add_argument("--no-mmotu", action="store_true")
    p.add_argument("--device", default=None); a = p.parse_args()
    t0 = time.time()
    show("phantom-pelvic-us, scanner shift (3 classes; chance 0.33)", [phantom_gap(seed=s, device=a.device) for s in range(a.seeds)])
    print(f"  ({time.time() - t0:.0f} s)")
    if not a.no_mmotu:
        try: mm = mmotu_doppler_split(image_size=64)
        except Exception as e: print("\nMMOTU skipped:", type(e).__name__, e); mm = None
        if mm:
            t0 = time.time()
            print("\nMMOTU sizes:", {k: len(v[1]) for k, v in mm.items()})
            rows = [domain_gap(*mm["grey_train"], mm["doppler"][0], *mm["doppler"], *mm["grey_valid"], n_classes=8,
                               epochs=12, seed=s, device=a.device) for s in range(a.seeds)]
            major = int(np.bincount(mm["grey_train"][1].numpy()).argmax())
            print("  majority-class baseline (most frequent grey-scale training class): grey-scale valid "
                  f"{(mm['grey_valid'][1] == major).float().mean():.3f}, Doppler {(mm['doppler'][1] == major).float().mean():.3f}")
            print("  class counts grey-scale train:", np.bincount(mm["grey_train"][1].numpy(), minlength=8).tolist(),
                  " Doppler:", np.bincount(mm["doppler"][1].numpy(), minlength=8).tolist())
            show("MMOTU 8-class, train grey-scale → test colour Doppler (source = grey-scale validation)", rows)
            print(f"  ({time.time() - t0:.0f} s)")
