"Tests for gynlab.models.generative: PSNR/SSIM against scikit-image, denoising, anomaly scores, DCGAN, C2ST, MMD."
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import roc_auc_score

from gynlab import phantoms
from gynlab.models import generative as gen
from gynlab.exercises import generative as XG


def _pair(seed, shape):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(*shape, generator=g)
    return (y + 0.15 * torch.randn(*shape, generator=g)).clamp(0, 1), y


@pytest.mark.parametrize("shape", [(4, 1, 24, 24), (3, 3, 20, 17)])
def test_psnr_matches_skimage(shape):
    x, y = _pair(0, shape)
    ours = gen.psnr(x, y, reduction="none")
    ref = [peak_signal_noise_ratio(y[i].numpy(), x[i].numpy(), data_range=1.0) for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4)
    np.testing.assert_allclose(gen.psnr(x * 255, y * 255, data_range=255).item(), np.mean(ref), rtol=1e-4)


@pytest.mark.parametrize("shape,win", [((4, 1, 24, 24), 7), ((2, 3, 20, 17), 7), ((2, 1, 32, 32), 11)])
def test_ssim_matches_skimage(shape, win):
    x, y = _pair(1, shape)
    ours = gen.ssim(x, y, win_size=win, reduction="none")
    ref = [structural_similarity(y[i].numpy(), x[i].numpy(), data_range=1.0, win_size=win, channel_axis=0)
           for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)
    assert gen.ssim(y, y).item() == pytest.approx(1.0, abs=1e-5)


def test_metric_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="same shape"): gen.psnr(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
    with pytest.raises(ValueError, match="smaller than win_size"): gen.ssim(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="odd"): gen.ssim(torch.zeros(1, 1, 9, 9), torch.zeros(1, 1, 9, 9), win_size=4)
    with pytest.raises(ValueError, match="reduction"): gen.psnr(torch.zeros(8, 8), torch.ones(8, 8), reduction="sum")
    with pytest.raises(TypeError, match="tensor or numpy"): gen.psnr([[0.0]], [[0.0]])
    with pytest.raises(ValueError, match=r"\(H,W\)"): gen.psnr(torch.zeros(8), torch.zeros(8))


def test_autoencoder_denoising_improves_psnr():
    torch.manual_seed(0)
    us = phantoms.phantom_pelvic_us(n=100, image_size=32, seed=3)
    train, test = gen.stack_images(us["train"], 32, 1), gen.stack_images(us["test"], 32, 1)
    noisy = gen.add_speckle(test, strength=0.5, seed=1)
    ae = gen.ConvAutoencoder(1, width=8, depth=2)
    train3 = train.repeat(3, 1, 1, 1)
    gen.train_autoencoder(ae, gen.add_speckle(train3, strength=0.5, seed=2), train3, epochs=12, lr=3e-3, device="cpu")
    out = gen.reconstruct(ae, noisy, device="cpu")
    assert out.shape == test.shape
    assert gen.psnr(out, test) > gen.psnr(noisy, test) + 1.0


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
    gen.train_autoencoder(ae, _blobs(128, False, 0), epochs=15, lr=5e-3)
    normal, odd = _blobs(40, False, 1), _blobs(40, True, 2)
    s = gen.reconstruction_error(ae, torch.cat([normal, odd])).numpy()
    assert s.shape == (80,)
    assert roc_auc_score(np.r_[np.zeros(40), np.ones(40)], s) > 0.9
    assert gen.reconstruction_error(ae, normal, per_pixel=True).shape == (40, 16, 16)


def test_autoencoder_bad_inputs():
    ae = gen.ConvAutoencoder(1, width=4, depth=3)
    with pytest.raises(ValueError, match="multiples of 8"): ae(torch.zeros(1, 1, 20, 20))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"): ae(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        gen.train_autoencoder(ae, torch.zeros(4, 1, 16, 16), torch.zeros(4, 1, 8, 8))


def test_generator_shape_range_and_training_history():
    G, D = gen.Generator(z_dim=8, channels=3, width=8, image_size=16), gen.Discriminator(3, 8, 16)
    x = torch.rand(40, 3, 16, 16)
    h = gen.train_gan(G, D, x, epochs=2, batch_size=16, device="cpu")
    assert set(h) == {"d_loss", "g_loss", "d_real", "d_fake"} and all(len(v) == 2 for v in h.values())
    assert all(0 <= v <= 1 for v in h["d_real"] + h["d_fake"])
    s = gen.sample(G, 10, seed=0)
    assert s.shape == (10, 3, 16, 16) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(s, gen.sample(G, 10, seed=0)) and not torch.equal(s, gen.sample(G, 10, seed=1))


def test_conditional_gan_and_bad_inputs():
    G, D = gen.Generator(8, 1, 8, 16, n_classes=3), gen.Discriminator(1, 8, 16, n_classes=3)
    x, y = torch.rand(30, 1, 16, 16), torch.arange(3).repeat(10)
    gen.train_gan(G, D, x, y, epochs=1, batch_size=16)
    assert gen.sample(G, 6, labels=2).shape == (6, 1, 16, 16)
    with pytest.raises(ValueError, match="class-conditional"): gen.sample(G, 4)
    with pytest.raises(ValueError, match="exactly when"): gen.train_gan(G, D, x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"): gen.train_gan(G, D, x * 2 - 1, y)
    with pytest.raises(ValueError, match="generator makes"): gen.train_gan(G, D, torch.rand(30, 3, 16, 16), y)
    with pytest.raises(ValueError, match="power of 2"): gen.Generator(image_size=24)


def test_two_sample_test_identical_vs_distinct():
    g = torch.Generator().manual_seed(0)
    a, b = _blobs(200, False, 10), _blobs(200, False, 11)                      # same distribution
    same = gen.two_sample_test(a, b, seed=0)
    assert 0.35 <= same <= 0.65, same
    far = gen.two_sample_test(a, _blobs(200, True, 12), seed=0)                 # a bright square in every image
    assert far >= 0.9, far
    noise = gen.two_sample_test(a, torch.rand(200, 1, 16, 16, generator=g), seed=0)
    assert noise >= 0.95, noise
    with pytest.raises(ValueError, match="at least 8"): gen.two_sample_test(a[:4], b[:4])
    with pytest.raises(ValueError, match="differ in shape"): gen.two_sample_test(a, torch.rand(20, 3, 16, 16))


def test_mmd2_matches_direct_formula_and_separates():
    g = torch.Generator().manual_seed(0)
    fx, fy = torch.randn(30, 5, generator=g), torch.randn(40, 5, generator=g) + 0.5
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * 1.5 ** 2))
    X, Y = fx.double().numpy(), fy.double().numpy()
    kxx, kyy, kxy = k(X, X), k(Y, Y), k(X, Y)
    want = ((kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (40 * 39) - 2 * kxy.mean())
    assert gen.mmd2(fx, fy, bandwidth=1.5) == pytest.approx(want, rel=1e-6)
    same = gen.mmd2(torch.randn(200, 5, generator=g), torch.randn(200, 5, generator=g))
    assert abs(same) < 0.02 and gen.mmd2(fx, fy + 3) > 0.2
    with pytest.raises(ValueError, match="same F"): gen.mmd2(torch.zeros(5, 3), torch.zeros(5, 4))


def test_embed_uses_forward_features():
    from gynlab.models.cnn import SmallCNN
    f = gen.embed(SmallCNN(1, 2, width=4, depth=2), torch.rand(5, 1, 16, 16))
    assert f.shape == (5, 8)
    with pytest.raises(TypeError, match="forward_features"): gen.embed(torch.nn.Identity(), torch.rand(2, 1, 8, 8))


def test_augmentation_trial_reports_consistent_numbers():
    cy = phantoms.phantom_cytology(n=100, image_size=32, seed=0)
    x, y = gen.stack_images(cy["train"], 16, 3), np.array(cy["train"]["label"])
    xt, yt = gen.stack_images(cy["test"], 16, 3), np.array(cy["test"]["label"])
    r = gen.augmentation_trial(x, y, xt, yt, n_per_class=3, n_synth_per_class=4, gan_epochs=1, clf_epochs=1, width=8)
    assert 0 <= r["acc_real"] <= 1 and 0 <= r["acc_aug"] <= 1
    assert r["gain"] == pytest.approx(r["acc_aug"] - r["acc_real"])
    with pytest.raises(ValueError, match="fewer than n_per_class"):
        gen.augmentation_trial(x, y, xt, yt, n_per_class=500)


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
    gen.train_autoencoder(ae, torch.rand(8, 1, 16, 16), epochs=1, device="cuda")
    assert gen.reconstruction_error(ae, torch.rand(4, 1, 16, 16), device="cuda").shape == (4,)
    G, D = gen.Generator(8, 1, 8, 16), gen.Discriminator(1, 8, 16)
    gen.train_gan(G, D, torch.rand(16, 1, 16, 16), epochs=1, device="cuda")
    assert gen.sample(G, 4, device="cuda").device.type == "cpu"
