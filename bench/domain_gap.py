"""Domain gap before/after AdaBN and DANN over a few seeds: phantom scanner shift, and MMOTU grey-scale → colour
Doppler when ../shared/data is present. Prints absolute accuracies and differences to the source-only target accuracy.
Usage: python bench/domain_gap.py [--seeds 3] [--epochs 12] [--no-mmotu] [--device cpu]"""
import argparse
import time
import numpy as np
from gynlab.domain import domain_gap, handcrafted_features, images_to_tensor, mmotu_doppler_split, scanner_shift


def phantom_gap(seed: int = 0, image_size: int = 64, epochs: int = 12, device=None, **shift) -> dict:
    "Lesson 21's phantom experiment in one call (source: seed; target: other patients through `scanner_shift`)."
    from gynlab.phantoms import phantom_pelvic_us
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    src = phantom_pelvic_us(n=500, image_size=image_size, seed=seed)
    tgt = phantom_pelvic_us(n=300, image_size=image_size, seed=seed + 1000)
    xs, ys = images_to_tensor(src["train"], image_size); xs_test, ys_test = images_to_tensor(src["test"], image_size)
    xt, _ = images_to_tensor(tgt["train"], image_size); xtt, ytt = images_to_tensor(tgt["test"], image_size)
    xt, xtt = scanner_shift(xt, seed=seed + 1, **shift), scanner_shift(xtt, seed=seed + 2, **shift)
    r = domain_gap(xs, ys, xt, xtt, ytt, xs_test, ys_test, n_classes=3, epochs=epochs, seed=seed, device=device)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(handcrafted_features(xs), ys.numpy())
    r["handcrafted_source"] = float(clf.score(handcrafted_features(xs_test), ys_test.numpy()))
    r["handcrafted_target"] = float(clf.score(handcrafted_features(xtt), ytt.numpy()))
    return r


def show(name, rows):
    keys = list(rows[0])
    print(f"\n{name}: mean ± sd over {len(rows)} seeds")
    for k in keys:
        v = np.array([r[k] for r in rows])
        sources = ("source", "dann_source", "handcrafted_source")
        d = None if k in sources else np.array([r[k] - r["target"] for r in rows])
        extra = "" if d is None or k == "target" else f"   (vs source-only target: {d.mean():+.3f} ± {d.std():.3f})"
        print(f"  {k:20s} {v.mean():.3f} ± {v.std():.3f}{extra}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3); p.add_argument("--no-mmotu", action="store_true")
    p.add_argument("--epochs", type=int, default=12); p.add_argument("--device", default=None)
    a = p.parse_args()
    t0 = time.time()
    show("phantom-pelvic-us, scanner shift (3 classes; chance 0.33)",
         [phantom_gap(seed=s, epochs=a.epochs, device=a.device) for s in range(a.seeds)])
    print(f"  ({time.time() - t0:.0f} s)")
    if not a.no_mmotu:
        try: mm = mmotu_doppler_split(image_size=64)
        except Exception as e: print("\nMMOTU skipped:", type(e).__name__, e); mm = None
        if mm:
            t0 = time.time()
            print("\nMMOTU sizes:", {k: len(v[1]) for k, v in mm.items()})
            rows = [domain_gap(*mm["grey_train"], mm["doppler"][0], *mm["doppler"], *mm["grey_valid"], n_classes=8,
                               epochs=a.epochs, seed=s, device=a.device) for s in range(a.seeds)]
            major = int(np.bincount(mm["grey_train"][1].numpy()).argmax())
            share = lambda y: (y == major).float().mean()
            print("  majority-class baseline (most frequent grey-scale training class): grey-scale valid "
                  f"{share(mm['grey_valid'][1]):.3f}, Doppler {share(mm['doppler'][1]):.3f}")
            print("  class counts grey-scale train:", np.bincount(mm["grey_train"][1].numpy(), minlength=8).tolist(),
                  " Doppler:", np.bincount(mm["doppler"][1].numpy(), minlength=8).tolist())
            show("MMOTU 8-class, train grey-scale → test colour Doppler (source = grey-scale validation)", rows)
            print(f"  ({time.time() - t0:.0f} s)")
