"""Cine loops (phantom-cine, beating vs still): single-frame CNN vs frame-difference CNN vs CNN-GRU / CNN-LSTM (with and
without the frame-difference channel), over a few seeds. Prints test accuracy (mean ± sd) and the difference to the
single-frame model measured in the same run. Usage: python bench/sequence_compare.py [--seeds 3] [--device cpu]"""
import argparse
import time
import numpy as np
import torch
from torch.utils.data import TensorDataset
from gynlab.phantoms import phantom_cine
from gynlab.models.sequence import CineRNN, FrameCNN, FrameDiffCNN
from gynlab.train import fit, predict
from gynlab.transforms import cine_tensors

MODELS = {"single frame": (FrameCNN, 6), "frame difference": (FrameDiffCNN, 8), "CNN-GRU": (CineRNN, 12),
          "CNN-LSTM": (lambda: CineRNN(cell="lstm"), 12),
          "CNN-GRU frames only": (lambda: CineRNN(motion_input=False), 12)}

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3); p.add_argument("--device", default=None)
    a = p.parse_args()
    res = {k: [] for k in MODELS}; secs = {k: 0.0 for k in MODELS}
    for s in range(a.seeds):
        d = phantom_cine(n=300, image_size=48, seed=s, frames=8)
        x, y = cine_tensors(d["train"]); xt, yt = cine_tensors(d["test"])
        for k, (make, ep) in MODELS.items():
            torch.manual_seed(s); m = make(); t0 = time.time()
            fit(m, TensorDataset(x, y), epochs=ep, lr=3e-3, batch_size=16, seed=s, device=a.device, progress=False)
            secs[k] += time.time() - t0
            res[k].append(float((predict(m, TensorDataset(xt), a.device).argmax(1) == yt.numpy()).mean()))
    base = np.array(res["single frame"])
    print(f"phantom-cine 48 px, 8 frames, 180 training loops, 60 test loops, {a.seeds} seeds (chance 0.5)")
    for k, v in res.items():
        v = np.array(v); d = v - base
        print(f"  {k:20s} test acc {v.mean():.3f} ± {v.std():.3f}   vs single frame {d.mean():+.3f}   "
              f"train {secs[k] / a.seeds:.1f} s/seed")
