"""Tests for gynlab.models.attention: shapes, MHSA vs PyTorch, SE/gate ranges, rollout, Attention U-Net training;
lesson 40's comparisons (gynlab.exercises.attention)."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gynlab.models import attention as A
from gynlab.models.attention import attention_rollout, rollout_map
from gynlab.exercises import attention as XA


def test_se_block_shape_and_range():
    torch.manual_seed(0)
    se = A.SEBlock(12, reduction=3)
    x = torch.randn(4, 12, 9, 7) * 5
    w = se.weights(x)
    assert w.shape == (4, 12)
    assert ((w > 0) & (w < 1)).all()
    y = se(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x * w[:, :, None, None])
    # same image twice → same weights; different images → different weights (the block looks at the input)
    assert not torch.allclose(w[0], w[1])


def test_spatial_attention_and_cbam():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 10, 12)
    sa = A.SpatialAttention(kernel_size=5)
    w = sa.weights(x)
    assert w.shape == (2, 1, 10, 12) and ((w > 0) & (w < 1)).all()
    torch.testing.assert_close(sa(x), x * w)
    assert A.CBAM(8)(x).shape == x.shape


@pytest.mark.parametrize("kind", [None, "se", "spatial", "cbam"])
def test_attention_cnn_shapes(kind):
    m = A.AttentionCNN(1, 3, width=4, depth=3, attention=kind)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    n_plain = sum(p.numel() for p in A.AttentionCNN(1, 3, width=4, depth=3, attention=None).parameters())
    n = sum(p.numel() for p in m.parameters())
    assert (n > n_plain) == (kind is not None)


def test_attention_cnn_bad_kind():
    with pytest.raises(ValueError, match="unknown attention"):
        A.AttentionCNN(attention="transformer")


def test_sdpa_matches_torch():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, 11, 16).unbind(0)
    out, attn = A.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 11))


@pytest.mark.parametrize("dim,heads,n", [(32, 4, 7), (24, 3, 1), (16, 1, 5)])
def test_mhsa_matches_pytorch_reference(dim, heads, n):
    torch.manual_seed(1)
    ours = A.MultiHeadSelfAttention(dim, heads)
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight); ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight); ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, n, dim)
    out, attn = ours(x)
    out_ref, attn_ref = ref(x, x, x, average_attn_weights=False)
    assert attn.shape == (3, heads, n, n)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn, attn_ref, atol=1e-6, rtol=1e-5)


def test_mhsa_bad_heads():
    with pytest.raises(ValueError, match="divisible"):
        A.MultiHeadSelfAttention(30, 4)


def test_tinyvit_shapes_and_attention():
    vit = A.TinyViT(image_size=32, patch=8, dim=16, depth=3, heads=2, n_classes=4, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    logits, attns = vit(x, return_attn=True)
    assert logits.shape == (2, 4)
    assert len(attns) == 3 and all(a.shape == (2, 2, 17, 17) for a in attns)
    for a in attns: torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 17))
    torch.testing.assert_close(vit(x), logits)
    with pytest.raises(ValueError, match="built for 32x32"):
        vit(torch.randn(1, 1, 40, 40))
    with pytest.raises(ValueError, match="multiple of patch"):
        A.TinyViT(image_size=30, patch=8)


def test_tinyvit_position_embedding_matters():
    "Without the position embedding a ViT's class token is invariant to shuffling patches; with it, not."
    torch.manual_seed(0)
    vit = A.TinyViT(image_size=16, patch=8, dim=16, depth=2, heads=2, n_classes=3, in_channels=1, dropout=0.0).eval()
    x = torch.randn(1, 1, 16, 16)
    swapped = x.clone(); swapped[..., :8, :], swapped[..., 8:, :] = x[..., 8:, :], x[..., :8, :]
    with torch.no_grad():
        vit.pos.normal_(0, 1.0)
        assert not torch.allclose(vit(x), vit(swapped), atol=1e-4)
        vit.pos.zero_()
        torch.testing.assert_close(vit(x), vit(swapped), atol=1e-5, rtol=1e-5)


def test_rollout_hand_made():
    eye = torch.eye(5)[None, None]
    torch.testing.assert_close(attention_rollout([eye, eye, eye]), torch.eye(5)[None])
    assert torch.equal(rollout_map([eye], grid=(2, 2)), torch.zeros(1, 2, 2))
    # class token attends only to patch 3 (grid position (1, 0)) → that patch lights up
    one = torch.eye(5)[None, None].clone(); one[0, 0, 0] = torch.tensor([0., 0., 0., 1., 0.])
    assert torch.equal(rollout_map([one], grid=(2, 2), residual=False)[0], torch.tensor([[0., 0.], [1., 0.]]))
    # uniform attention without residual → uniform rollout; two layers compose by matrix product
    uni = torch.full((1, 2, 5, 5), 0.2)
    torch.testing.assert_close(attention_rollout([uni, uni], residual=False), torch.full((1, 5, 5), 0.2))
    a1, a2 = torch.rand(1, 1, 5, 5).softmax(-1), torch.rand(1, 1, 5, 5).softmax(-1)
    torch.testing.assert_close(attention_rollout([a1, a2], residual=False)[0], a2[0, 0] @ a1[0, 0])
    # head fusion: max/min over heads; rows still sum to 1 after renormalising
    two = torch.stack([a1[0, 0], a2[0, 0]])[None]                              # (1, 2 heads, 5, 5)
    for fusion, f in (("max", torch.maximum), ("min", torch.minimum)):
        want = f(a1[0, 0], a2[0, 0]); want = want / want.sum(-1, keepdim=True)
        torch.testing.assert_close(attention_rollout([two], head_fusion=fusion, residual=False)[0], want)
    torch.testing.assert_close(attention_rollout([two], discard_ratio=0.5).sum(-1), torch.ones(1, 5))
    assert rollout_map([eye], grid=(2, 2), image_size=(8, 8)).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="head_fusion"): attention_rollout([two], head_fusion="median")
    with pytest.raises(ValueError, match="at least one"): attention_rollout([])
    with pytest.raises(ValueError, match="heads, N, N"): attention_rollout([torch.rand(1, 2, 5, 4)])


def test_vit_rollout_map():
    torch.manual_seed(0)
    vit = A.TinyViT(image_size=32, patch=8, dim=16, depth=2, heads=2, n_classes=2)
    x = torch.randn(3, 3, 32, 32)
    m = A.vit_rollout(vit, x)
    assert m.shape == (3, 4, 4) and (m >= 0).all()
    assert A.vit_rollout(vit, x, upsample=True).shape == (3, 32, 32)
    assert vit.training  # the mode is restored


def test_attention_gate_range_and_size():
    torch.manual_seed(0)
    gate = A.AttentionGate(F_g=16, F_l=8, F_int=4)
    x, g = torch.randn(2, 8, 24, 20), torch.randn(2, 16, 12, 10)
    out, alpha = gate(g, x)
    assert out.shape == x.shape and alpha.shape == (2, 1, 24, 20)
    assert alpha.min() >= 0 and alpha.max() <= 1
    torch.testing.assert_close(out, x * alpha)


@pytest.mark.parametrize("size,depth", [(64, 3), (50, 2), (37, 4)])
def test_attention_unet_shapes(size, depth):
    net = A.AttentionUNet(1, 3, base=4, depth=depth)
    logits, gates = net(torch.randn(2, 1, size, size), return_gates=True)
    assert logits.shape == (2, 3, size, size)
    assert len(gates) == depth
    want = [math.ceil(size / 2 ** (depth - 1 - i)) for i in range(depth)]
    assert [g.shape[-1] for g in gates] == want and [g.shape[-2] for g in gates] == want
    assert all(g.shape[:2] == (2, 1) and g.min() >= 0 and g.max() <= 1 for g in gates)
    with pytest.raises(ValueError, match="depth >= 1"):
        A.AttentionUNet(1, 3, depth=0)


def test_attention_unet_training_reduces_loss():
    from gynlab.data import load
    from gynlab.transforms import to_torch
    from gynlab.models.unet import DiceCELoss
    torch.manual_seed(0)
    dd = load("phantom-uterus-mri", n=10, image_size=32, seed=0)
    ds = to_torch(dd["train"], 32, 1, "mask", mean=0.5, std=0.5)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.stack([ds[i][1] for i in range(len(ds))])
    net = A.AttentionUNet(1, 4, base=4, depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = DiceCELoss()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_checkers_accept_right_and_reject_wrong():
    right = lambda q, k, v: (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v
    assert XA.check_sdpa(right)
    no_scale = XA.check_sdpa(lambda q, k, v: (q @ k.transpose(-2, -1)).softmax(-1) @ v)
    assert not no_scale and "√d" in str(no_scale)
    assert not XA.check_sdpa(lambda q, k, v: (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-2) @ v)
    assert XA.check_n_tokens(lambda s, p: (s // p) ** 2 + 1)
    assert "class token" in str(XA.check_n_tokens(lambda s, p: (s // p) ** 2))
    good = lambda x, w1, b1, w2, b2: torch.sigmoid(F.relu(x.mean((2, 3)) @ w1.T + b1) @ w2.T + b2)
    assert XA.check_se_weights(good)
    assert not XA.check_se_weights(lambda x, w1, b1, w2, b2: F.relu(x.mean((2, 3)) @ w1.T + b1) @ w2.T + b2)


def test_make_classifier():
    assert isinstance(XA.make_classifier("vit", 3, 5), A.TinyViT)
    assert XA.make_classifier("cnn+se", 1, 2)(torch.randn(1, 1, 64, 64)).shape == (1, 2)
    with pytest.raises(ValueError, match="unknown classifier"):
        XA.make_classifier("resnet", 3, 2)


def test_compare_segmenters_tiny():
    rows, nets, (valid, info, mean, std) = XA.compare_segmenters(image_size=32, epochs=1, subset=8, batch_size=4,
                                                                 base=4, depth=2, return_models=True)
    assert [r["model"] for r in rows] == ["unet", "attention-unet"] and all(0 <= r["dice"] <= 1 for r in rows)
    assert isinstance(nets["attention-unet"], A.AttentionUNet) and len(valid) == 8 and mean == [0.5]
    assert rows[0]["params"] < rows[1]["params"]                               # the gates add parameters


def test_compare_classifiers_tiny():
    rows = XA.compare_classifiers("phantom-cytology", ("cnn", "vit"), n=40, image_size=32, epochs=1, batch_size=16)
    assert [r["model"] for r in rows] == ["cnn", "vit"]
    assert all(0 <= r["accuracy"] <= 1 and r["params"] > 0 for r in rows)
    assert rows[0]["n_train"] == rows[1]["n_train"] > 0
