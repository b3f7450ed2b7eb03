"""Overhead of `gynlab.train.fit` against a plain PyTorch loop: same model, data, batch size, optimizer, device.

Prints the training throughput (images/s, median of a few repeats) of both and the ratio fit/plain (1.0 = no overhead;
below 1 = fit is slower). Both timings include building the optimizer and the DataLoader; neither validates.
Run: .venv/bin/python bench/train_overhead.py [--device cuda] [--repeats 5]
"""
import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gynlab.core import get_device
from gynlab.train import fit


def make_model(width: int):
    torch.manual_seed(0)
    try:
        from gynlab.models.cnn import SmallCNN
        return SmallCNN(in_channels=3, n_classes=5, width=width, depth=3)
    except ImportError:  # the CNN lesson's module is not there: an equivalent small network
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 5))


def plain_loop(model, ds, epochs, bs, lr, dev):
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    dl = DataLoader(ds, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(0))
    for _ in range(epochs):
        for x, y in dl:
            x, y = x.to(dev), y.to(dev)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    if dev.type == "cuda": torch.cuda.synchronize()


def with_fit(model, ds, epochs, bs, lr, dev):
    fit(model, ds, epochs=epochs, lr=lr, batch_size=bs, device=dev, progress=False, metrics=None)
    if dev.type == "cuda": torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=512, help="training images")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--width", type=int, default=8)
    a = ap.parse_args()
    dev = get_device(a.device)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(a.n, 3, a.image_size, a.image_size, generator=g),
                       torch.randint(0, 5, (a.n,), generator=g))
    runs = {"plain": plain_loop, "fit": with_fit}
    for fn in runs.values(): fn(make_model(a.width), ds, 1, a.batch_size, 1e-3, dev)  # warm-up (imports, allocator)
    times = {k: [] for k in runs}
    for _ in range(a.repeats):          # interleaved, so that machine load hits both alike
        for k, fn in runs.items():
            m = make_model(a.width)
            t = time.perf_counter(); fn(m, ds, a.epochs, a.batch_size, 1e-3, dev)
            times[k].append(time.perf_counter() - t)
    ips = {k: a.n * a.epochs / statistics.median(v) for k, v in times.items()}
    print(f"device {dev}, {a.n} images {a.image_size}px x {a.epochs} epochs, batch {a.batch_size}, "
          f"median of {a.repeats} repeats, torch threads {torch.get_num_threads()}")
    for k in runs: print(f"  {k:>5}: {ips[k]:9.1f} images/s   (times {', '.join(f'{t:.2f}' for t in times[k])} s)")
    print(f"  ratio fit/plain: {ips['fit'] / ips['plain']:.3f}")


if __name__ == "__main__":
    main()
