"""Training throughput on the CPU: channels_last and bfloat16 autocast against plain float32, in one run.

    python bench/cpu_speedups.py [--model efficientnet_lite0] [--image-size 224] [--batch-size 16] [--steps 6]
    python bench/cpu_speedups.py --model lite0_unet --image-size 192 --channels 1      # the HC18 recipe's network

Times `--steps` optimisation steps of `gynlab.train.fit` (after one warm-up step) on random images for each setting
(a classifier with cross-entropy, or the U-Net on the Lite0 encoder with Dice + cross-entropy on random masks):
float32 (the reference), channels_last, bf16 autocast (`amp=True`), and both. Prints images per second and the
ratio to float32 measured in the same run, so a busy machine shifts every row alike. bf16 helps only where the
processor has native bfloat16 instructions (AVX-512 BF16 or AMX); the script prints whether this one does.
"""
from __future__ import annotations
import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gynlab.models.pretrained import create
from gynlab.train import fit

SETTINGS = {"float32": {}, "channels_last": {"channels_last": True}, "bf16 autocast": {"amp": True},
            "channels_last + bf16": {"channels_last": True, "amp": True}}


def images_per_second(model_name: str, size: int, batch: int, steps: int, channels: int = 3, **kw) -> float:
    "Training images per second of `fit` for `steps` batches (one warm-up batch first, not timed)."
    torch.manual_seed(0)
    n = (steps + 1) * batch
    x = torch.randn(n, channels, size, size)
    if model_name == "lite0_unet":
        from gynlab.models.encoder_unet import Lite0UNet
        from gynlab.models.unet import DiceCELoss
        net, y, kw = Lite0UNet(channels, 2, pretrained=False), torch.randint(0, 2, (n, size, size)), {**kw,
                                                                                   "loss": DiceCELoss()}
    else: net, y = create(model_name, 8, pretrained=False, in_channels=channels), torch.randint(0, 8, (n,))
    fit(net, TensorDataset(x[:batch], y[:batch]), epochs=1, lr=1e-3, batch_size=batch, progress=False, **kw)
    t0 = time.perf_counter()
    fit(net, TensorDataset(x[batch:], y[batch:]), epochs=1, lr=1e-3, batch_size=batch, progress=False, **kw)
    return steps * batch / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--channels", type=int, choices=[1, 3], default=3)
    a = ap.parse_args(argv)
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: None)()
    print(f"{a.model}, {a.channels} channel(s), {a.image_size} px, batch {a.batch_size}, {a.steps} steps, "
          f"{torch.get_num_threads()} threads; "
          f"native bf16 on this CPU: {bf16}")
    images_per_second(a.model, a.image_size, a.batch_size, 1, a.channels)   # process warm-up (threads, allocator)
    base = None
    for name, kw in SETTINGS.items():
        ips = images_per_second(a.model, a.image_size, a.batch_size, a.steps, a.channels, **kw)
        base = base or ips
        print(f"{name:22} {ips:7.1f} images/s   x{ips / base:.2f} vs float32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
