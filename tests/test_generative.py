"""Lesson 70: PSNR/SSIM (gynlab.metrics) against scikit-image, denoising and anomaly scores with `fit`, a DCGAN
trained by `fit` through its own `train_step`, the two-sample test and MMD (gynlab.metrics), the augmentation trial."""
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import roc_auc_score

from torch.utils.data import TensorDataset

from gynlab import phantoms
from gynlab.exercises import generative as XG
from gynlab.metrics import mmd2, psnr, ssim, two_sample_test
from gynlab.models import generative as gen
from gynlab.train import fit
from gynlab.transforms import stack_images


def train_ae(model, inputs, targets=None, epochs=10, lr=2e-3, device=None):
    "The lesson's recipe: plain `fit` on (input, target) pairs with the MSE loss."
    targets = inputs if targets is None else targets
    return fit(model, TensorDataset(inputs, targets), epochs=epochs, lr=lr, loss=torch.nn.MSELoss(), metrics=None,
               device=device, progress=False)


def train_gan(G, D, images, labels=None, epochs=2, batch_size=16, device=None):
    data = TensorDataset(images) if labels is None else TensorDataset(images, labels)
    return fit(gen.GAN(G, D), data, epochs=epochs, batch_size=batch_size, lr=2e-4, monitor="train_g_loss",
               device=device, progress=False)


def _pair(seed, shape):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(*shape, generator=g)
    return (y + 0.15 * torch.randn(*shape, generator=g)).clamp(0, 1), y


@pytest.mark.parametrize("shape", [(4, 1, 24, 24), (3, 3, 20, 17)])
def test_psnr_matches_skimage(shape):
    x, y = _pair(0, shape)
    ours = psnr(x, y, reduction="none")
    ref = [peak_signal_noise_ratio(y[i].numpy(), x[i].numpy(), data_range=1.0) for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4)
    np.testing.assert_allclose(psnr(x * 255, y * 255, data_range=255).item(), np.mean(ref), rtol=1e-4)


@pytest.mark.parametrize("shape,win", [((4, 1, 24, 24), 7), ((2, 3, 20, 17), 7), ((2, 1, 32, 32), 11)])
def test_ssim_matches_skimage(shape, win):
    x, y = _pair(1, shape)
    ours = ssim(x, y, win_size=win, reduction="none")
    ref = [structural_similarity(y[i].numpy(), x[i].numpy(), data_range=1.0, win_size=win, channel_axis=0)
           for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)
    assert ssim(y, y).item() == pytest.approx(1.0, abs=1e-5)


def test_metric_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="same shape"): psnr(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
    with pytest.raises(ValueError, match="smaller than win_size"):
        ssim(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="odd"): ssim(torch.zeros(1, 1, 9, 9), torch.zeros(1, 1, 9, 9), win_size=4)
    with pytest.raises(ValueError, match="reduction"): psnr(torch.zeros(8, 8), torch.ones(8, 8), reduction="sum")
    with pytest.raises(TypeError, match="tensor or numpy"): psnr([[0.0]], [[0.0]])
    with pytest.raises(ValueError, match=r"\(H,W\)"): psnr(torch.zeros(8), torch.zeros(8))


def test_autoencoder_denoising_improves_psnr():
    torch.manual_seed(0)
    us = phantoms.phantom_pelvic_us(n=100, image_size=32, seed=3)
    train, test = stack_images(us["train"], 32, 1), stack_images(us["test"], 32, 1)
    noisy = gen.add_speckle(test, strength=0.5, seed=1)
    ae = gen.ConvAutoencoder(1, width=8, depth=2)
    train3 = train.repeat(3, 1, 1, 1)
    h = train_ae(ae, gen.add_speckle(train3, strength=0.5, seed=2), train3, epochs=12, lr=3e-3, device="cpu")
    assert h["train_loss"][-1] < h["train_loss"][0]
    out = gen.reconstruct(ae, noisy, device="cpu")
    assert out.shape == test.shape
    assert psnr(out, test) > psnr(noisy, test) + 1.0


def _blobs(n, anomalous, seed):
    "16x16 smooth horizontal ramps; anomalous ones also carry a bright 4x4 square at a random place."
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.6, 16)
    x = (ramp.view(1, 1, 1, 16) * (0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g))).expand(n, 1, 16, 16).clone()
    if anomalous:
        for i in range(n):
            r, c = torch.randint(0, 12, (2,), generator=g).tolist()
            x[i, 0, r:r + 4, c:c + 4] = 1.0
    return x


def test_anomaly_auc_on_easy_case():
    torch.manual_seed(0)
    ae = gen.ConvAutoencoder(1, width=8, depth=2, bottleneck=2)
    train_ae(ae, _blobs(128, False, 0), epochs=15, lr=5e-3)
    normal, odd = _blobs(40, False, 1), _blobs(40, True, 2)
    s = gen.reconstruction_error(ae, torch.cat([normal, odd])).numpy()
    assert s.shape == (80,)
    assert roc_auc_score(np.r_[np.zeros(40), np.ones(40)], s) > 0.9
    assert gen.reconstruction_error(ae, normal, per_pixel=True).shape == (40, 16, 16)


def test_autoencoder_bad_inputs():
    ae = gen.ConvAutoencoder(1, width=4, depth=3)
    with pytest.raises(ValueError, match="multiples of 8"): ae(torch.zeros(1, 1, 20, 20))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"): ae(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="empty split"): stack_images([])


def test_generator_shape_range_and_training_history():
    G, D = gen.Generator(z_dim=8, channels=3, width=8, image_size=16), gen.Discriminator(3, 8, 16)
    x = torch.rand(41, 3, 16, 16)                                   # the last batch holds one image: skipped
    h = train_gan(G, D, x, epochs=2, batch_size=8, device="cpu")
    keys = {"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake"}
    assert keys <= set(h.last) and all(len(h[k]) == 2 for k in keys) and len(h) == 2
    assert all(0 <= v <= 1 for v in h["train_d_real"] + h["train_d_fake"])
    assert h["train_d_real"][-1] > h["train_d_fake"][-1]            # D separates real from fake early on
    s = gen.sample(G, 10, seed=0)
    assert s.shape == (10, 3, 16, 16) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(s, gen.sample(G, 10, seed=0)) and not torch.equal(s, gen.sample(G, 10, seed=1))


def test_conditional_gan_and_bad_inputs():
    G, D = gen.Generator(8, 1, 8, 16, n_classes=3), gen.Discriminator(1, 8, 16, n_classes=3)
    x, y = torch.rand(30, 1, 16, 16), torch.arange(3).repeat(10)
    train_gan(G, D, x, y, epochs=1, batch_size=16)
    assert gen.sample(G, 6, labels=2).shape == (6, 1, 16, 16)
    assert gen.sample(G, 3, labels=[0, 1, 2]).shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="class-conditional"): gen.sample(G, 4)
    with pytest.raises(ValueError, match="exactly when"): train_gan(G, D, x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"): train_gan(G, D, x * 2 - 1, y)
    with pytest.raises(ValueError, match="generator makes"): train_gan(G, D, torch.rand(30, 3, 16, 16), y)
    with pytest.raises(ValueError, match="power of 2"): gen.Generator(image_size=24)
    with pytest.raises(ValueError, match="classes"): gen.GAN(G, gen.Discriminator(1, 8, 16))


def test_gan_training_is_seeded_and_moves_the_generator():
    "Two fits with the same seed give the same generator; the generator changes from its initial weights."
    x = torch.rand(32, 1, 16, 16)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        G, D = gen.Generator(8, 1, 8, 16), gen.Discriminator(1, 8, 16)
        gan = gen.GAN(G, D)
        w0 = G.net[-2].weight.detach().clone()
        train_gan(G, D, x, epochs=1, batch_size=8)
        assert not torch.equal(G.net[-2].weight, w0)
        outs.append(gen.sample(G, 4, seed=0))
    assert torch.equal(outs[0], outs[1])
    opts = gan.configure_optimizers(lr=1e-3)
    assert set(opts) == {"d", "g"} and opts["g"].param_groups[0]["betas"] == (0.5, 0.999)


def test_two_sample_test_identical_vs_distinct():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)  # same distribution
    same = two_sample_test(a, b, seed=0)
    assert 0.4 <= same <= 0.6, same
    far = two_sample_test(a, b + 1.0, seed=0)                                  # shifted means
    assert far >= 0.9, far
    # a narrower set (too little variety, as in mode collapse) fools a linear classifier but not a non-linear one
    narrow = 0.3 * torch.randn(300, 8, generator=g)
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    assert two_sample_test(a, narrow) < 0.7
    assert two_sample_test(a, narrow, classifier=QuadraticDiscriminantAnalysis()) > 0.9
    assert mmd2(a, narrow) > 10 * abs(mmd2(a, b))                             # the MMD sees the spread too
    imgs = two_sample_test(_blobs(60, False, 10), torch.rand(60, 1, 16, 16, generator=g))   # images: flattened pixels
    assert imgs >= 0.95, imgs
    with pytest.raises(ValueError, match="at least 10"): two_sample_test(a[:4], b[:4])
    with pytest.raises(ValueError, match="differ in shape"): two_sample_test(a, torch.rand(20, 3))
    with pytest.raises(ValueError, match="one row"): two_sample_test(torch.zeros(20), torch.zeros(20))


def test_mmd2_matches_direct_formula_and_separates():
    g = torch.Generator().manual_seed(0)
    fx, fy = torch.randn(30, 5, generator=g), torch.randn(40, 5, generator=g) + 0.5
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * 1.5 ** 2))
    X, Y = fx.double().numpy(), fy.double().numpy()
    kxx, kyy, kxy = k(X, X), k(Y, Y), k(X, Y)
    want = ((kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (40 * 39) - 2 * kxy.mean())
    assert mmd2(fx, fy, bandwidth=1.5) == pytest.approx(want, rel=1e-6)
    same = mmd2(torch.randn(200, 5, generator=g), torch.randn(200, 5, generator=g))
    assert abs(same) < 0.02 and mmd2(fx, fy + 3) > 0.2
    with pytest.raises(ValueError, match="same F"): mmd2(torch.zeros(5, 3), torch.zeros(5, 4))


def test_embed_uses_forward_features():
    from gynlab.models.cnn import SmallCNN
    f = gen.embed(SmallCNN(1, 2, width=4, depth=2), torch.rand(5, 1, 16, 16))
    assert f.shape == (5, 8)
    with pytest.raises(TypeError, match="forward_features"): gen.embed(torch.nn.Identity(), torch.rand(2, 1, 8, 8))


def test_augmentation_trial_reports_consistent_numbers():
    cy = phantoms.phantom_cytology(n=100, image_size=32, seed=0)
    x, y = stack_images(cy["train"], 16, 3), np.array(cy["train"]["label"])
    xt, yt = stack_images(cy["test"], 16, 3), np.array(cy["test"]["label"])
    r = XG.augmentation_trial(x, y, xt, yt, n_per_class=3, n_synth_per_class=4, gan_epochs=1, clf_epochs=1, width=8)
    assert 0 <= r["acc_real"] <= 1 and 0 <= r["acc_aug"] <= 1
    assert r["gain"] == pytest.approx(r["acc_aug"] - r["acc_real"])
    with pytest.raises(ValueError, match="fewer than n_per_class"):
        XG.augmentation_trial(x, y, xt, yt, n_per_class=500)


def test_exercise_checkers_accept_right_and_reject_wrong():
    F = torch.nn.functional
    assert XG.check_psnr(lambda x, y: 10 * torch.log10(1 / ((x - y) ** 2).mean()))
    assert not XG.check_psnr(lambda x, y: ((x - y) ** 2).mean())
    assert XG.check_anomaly_score(lambda m, x: ((m(x) - x) ** 2).flatten(1).mean(1))
    bad = XG.check_anomaly_score(lambda m, x: ((m(x) - x) ** 2).mean())
    assert not bad and "one score per image" in str(bad)
    good = lambda r, f: (F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
                         + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))
    assert XG.check_d_loss(good)
    assert not XG.check_d_loss(lambda r, f: good(f, r))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda():
    ae = gen.ConvAutoencoder(1, 4, 2)
    train_ae(ae, torch.rand(8, 1, 16, 16), epochs=1, device="cuda")
    assert gen.reconstruction_error(ae, torch.rand(4, 1, 16, 16), device="cuda").shape == (4,)
    G, D = gen.Generator(8, 1, 8, 16), gen.Discriminator(1, 8, 16)
    train_gan(G, D, torch.rand(16, 1, 16, 16), epochs=1, device="cuda")
    assert next(G.parameters()).device.type == "cuda"
    assert gen.sample(G, 4, device="cuda").device.type == "cpu"
