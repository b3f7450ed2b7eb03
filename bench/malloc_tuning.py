"""CPU time of training with the C library's default allocator settings against `gynlab.core.keep_freed_memory`.

    python bench/malloc_tuning.py [--model efficientnet_lite0] [--image-size 160] [--batch-size 32] [--steps 8]
    python bench/malloc_tuning.py --model lite0_unet --image-size 192 --channels 1 --batch-size 16   # HC18's U-Net

The setting applies to a whole process, so each measurement is a fresh process that times `--steps` optimisation
steps of `gynlab.train.fit` on random images (as `bench/cpu_speedups.py` does, one warm-up step first), with the
default allocator or with `keep_freed_memory()` called first; the two alternate `--repeats` times, so a busy machine
shifts both alike. Prints CPU seconds (user + system) and wall seconds per step, and the ratios tuned / default.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(a) -> None:
    "One measurement in this process: CPU and wall seconds of `a.steps` training steps, as JSON on stdout."
    from cpu_speedups import images_per_second
    from gynlab.core import keep_freed_memory
    applied = keep_freed_memory() if a.child == "tuned" else False
    if a.child == "tuned" and not applied: raise SystemExit("keep_freed_memory does not apply on this machine")
    kw = {"channels_last": True}
    images_per_second(a.model, a.image_size, a.batch_size, 1, a.channels, **kw)          # imports, first allocations
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    images_per_second(a.model, a.image_size, a.batch_size, a.steps, a.channels, **kw)
    wall, u1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"user": u1.ru_utime - u0.ru_utime, "sys": u1.ru_stime - u0.ru_stime, "wall": wall}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--channels", type=int, choices=[1, 3], default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    for name in ("image_size", "batch_size", "steps", "repeats"):
        if getattr(a, name) < 1: ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.child: return child(a) or 0
    from gynlab.core import keep_freed_memory
    if not keep_freed_memory():
        print("keep_freed_memory does not apply here (not Linux with glibc): nothing to compare", file=sys.stderr)
        return 2
    args = [sys.executable, __file__, "--model", a.model, "--image-size", str(a.image_size), "--batch-size",
            str(a.batch_size), "--steps", str(a.steps), "--channels", str(a.channels)]
    got: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(a.repeats):
        for setting in got:
            p = subprocess.run([*args, "--child", setting], capture_output=True, text=True)
            if p.returncode != 0:
                print(f"the {setting} measurement failed:\n{p.stderr.strip()[-2000:]}", file=sys.stderr)
                return 1
            got[setting].append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"{a.model}, {a.image_size} px, batch {a.batch_size}, {a.steps} steps, channels_last, {a.repeats} repeats "
          f"(median)")
    per = {}
    for setting, ms in got.items():
        per[setting] = {k: statistics.median(m[k] for m in ms) / a.steps for k in ("user", "sys", "wall")}
        s = per[setting]
        print(f"  {setting:8s} CPU {s['user'] + s['sys']:.2f} s per step (user {s['user']:.2f}, "
              f"system {s['sys']:.2f}), wall {s['wall']:.2f} s")
    cpu = {k: v["user"] + v["sys"] for k, v in per.items()}
    print(f"tuned / default: CPU time {cpu['tuned'] / cpu['default']:.2f}x, "
          f"wall time {per['tuned']['wall'] / per['default']['wall']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
