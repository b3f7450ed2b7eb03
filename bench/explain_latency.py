"""Explorer latency at 128 px on the lessons' SmallCNN: a raw Captum call vs an Explorer update (uncached, cached).

Each method is timed in the same run three ways and the median is reported:
  raw       Captum called directly (same settings as gynlab.interpret.attribute's defaults);
  uncached  Explorer.show(case, method, target) with an empty cache: attribution + overlay PNG + figure update;
  cached    the same call again (served from the LRU cache).
overhead = uncached / raw - 1 (what the explorer adds on top of Captum).
Targets: Saliency and Grad-CAM updates < 100 ms, IG < 1 s, overhead < 10 %.
Run: .venv/bin/python bench/explain_latency.py [--size 128] [--device cpu]   (< 60 s on a laptop CPU)
"""
import argparse
import statistics
import time
import warnings

import torch
import torch.nn as nn
import captum.attr as ca

from gynlab.models.cnn import SmallCNN
from gynlab.widgets import Explorer


def raw_call(model, x, t, method):
    "Captum by hand, with attribute()'s defaults (channel sum included, as the explorer needs one map)."
    B, C, H, W = x.shape
    if method == "saliency": return ca.Saliency(model).attribute(x, target=t).sum(1)
    if method == "gradcam":
        layer = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
        cam = ca.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        return ca.LayerAttribution.interpolate(cam, (H, W), "bilinear")
    if method == "input_x_gradient": return ca.InputXGradient(model).attribute(x, target=t).sum(1)
    if method == "guided_backprop": return ca.GuidedBackprop(model).attribute(x, target=t).sum(1)
    if method == "smoothgrad":
        return ca.NoiseTunnel(ca.Saliency(model)).attribute(x, target=t, nt_type="smoothgrad", nt_samples=10,
                                                            stdevs=0.15, nt_samples_batch_size=64).sum(1)
    if method == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=32,
                                                       internal_batch_size=64).sum(1)
    if method == "gradient_shap":
        return ca.GradientShap(model).attribute(x, baselines=torch.zeros_like(x), target=t, n_samples=16,
                                                stdevs=0.0).sum(1)
    if method == "occlusion":
        w = max(4, H // 8)
        return ca.Occlusion(model).attribute(x, sliding_window_shapes=(C, w, w), strides=(C, w // 2, w // 2),
                                             baselines=0, target=t, perturbations_per_eval=64).sum(1)
    raise ValueError(method)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default=None)
    ap.add_argument("--fast-reps", type=int, default=15)
    ap.add_argument("--slow-reps", type=int, default=3)
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    # the lessons' CNN (weights don't change the cost)
    model = SmallCNN(in_channels=3, n_classes=3, width=8, depth=4).to(dev).eval()
    # the explorer switches in-place ReLUs off while attributing: same here
    for m in model.modules():
        if getattr(m, "inplace", False): m.inplace = False
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, a.size, a.size), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    ex = Explorer(model, data, class_names=["NILM", "LSIL", "HSIL"], device=dev, background=False)
    case, target = 3, 1
    x = data[case][0][None].to(dev)
    t = torch.tensor([target], device=dev)
    print(f"Explorer latency, SmallCNN(width=8, depth=4), {a.size}x{a.size} px, device {dev}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':22s} {'raw ms':>9s} {'update ms':>10s} {'cached ms':>10s} {'overhead':>9s}")
    rows = []
    for method in ex.methods:
        reps = a.fast_reps if method in ("saliency", "gradcam", "input_x_gradient", "guided_backprop") else a.slow_reps
        raw_call(model, x, t, method); ex.show(case, method, target)             # warm-up
        raws, upds = [], []
        for _ in range(reps):                       # interleaved, so a busy machine slows both alike
            t0 = time.perf_counter(); raw_call(model, x, t, method); raws.append(1000 * (time.perf_counter() - t0))
            ex.cache.clear(); t0 = time.perf_counter(); ex.show(case, method, target)
            upds.append(1000 * (time.perf_counter() - t0))
        raw, upd = statistics.median(raws), statistics.median(upds)
        other = (case + 1, method, target); ex.show(*other)                     # revisit: come back from another case
        def revisit():
            ex.show(*other, wait=True); t0 = time.perf_counter(); ex.show(case, method, target)
            return 1000 * (time.perf_counter() - t0)
        cached = statistics.median(revisit() for _ in range(reps))
        assert ex.last_view.ok and ex.last_view.cached, ex.last_view.message
        rows.append((method, raw, upd, cached))
        print(f"{method:22s} {raw:9.1f} {upd:10.1f} {cached:10.2f} {upd / raw - 1:+9.1%}", flush=True)
    d = {r[0]: r for r in rows}
    print("targets: saliency update < 100 ms:", d["saliency"][2] < 100,
          "| gradcam update < 100 ms:", d["gradcam"][2] < 100,
          "| IG update < 1 s:", d["integrated_gradients"][2] < 1000,
          "| overhead < 10 % (median over methods):", statistics.median(r[2] / r[1] - 1 for r in rows) < 0.10)
    ex.close()
    return rows


if __name__ == "__main__":
    main()
