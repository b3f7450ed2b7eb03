"Sequence models: scratch cells vs PyTorch, shapes, and a sequence model beating a single-frame model on cine."
import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from gynlab.exercises.sequence import check_gru_step, check_motion_energy
from gynlab.models.sequence import CineRNN, FrameCNN, FrameDiffCNN, GRUCellScratch, LSTMCellScratch
from gynlab.train import fit, predict
from gynlab.transforms import cine_tensors


def train_clips(model, x, y, epochs):
    "The lesson's recipe: `fit` on a TensorDataset of clips."
    return fit(model, TensorDataset(x, y), epochs=epochs, lr=3e-3, batch_size=16, progress=False)


def clip_accuracy(model, x, y) -> float:
    return float((predict(model, TensorDataset(x)).argmax(1) == y.numpy()).mean())


def test_scratch_gru_equals_torch():
    torch.manual_seed(0)
    ref, ours = nn.GRUCell(6, 5), GRUCellScratch(6, 5); ours.load_state_dict(ref.state_dict())
    x, h = torch.randn(3, 6), torch.randn(3, 5)
    assert torch.allclose(ours(x, h), ref(x, h), atol=1e-6)
    # gradients agree too
    x1 = x.clone().requires_grad_(); x2 = x.clone().requires_grad_()
    ours(x1, h).sum().backward(); ref(x2, h).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-6)


def test_scratch_lstm_equals_torch():
    torch.manual_seed(0)
    ref, ours = nn.LSTMCell(4, 3), LSTMCellScratch(4, 3); ours.load_state_dict(ref.state_dict())
    x, h, c = torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 3)
    for a, b in zip(ours(x, (h, c)), ref(x, (h, c))): assert torch.allclose(a, b, atol=1e-6)


def test_scratch_gru_in_model_matches_nn_gru():
    torch.manual_seed(0)
    a, b = CineRNN(cell="gru", hidden=4), CineRNN(cell="scratch_gru", hidden=4)
    b.enc.load_state_dict(a.enc.state_dict()); b.head.load_state_dict(a.head.state_dict())
    b.rnn.load_state_dict({k[:-3]: v for k, v in a.rnn.state_dict().items()})   # weight_ih_l0 → weight_ih
    x = torch.rand(2, 5, 1, 16, 16)
    a.eval(); b.eval()
    assert torch.allclose(a(x), b(x), atol=1e-5)


def test_bad_shapes():
    with pytest.raises(ValueError, match="B,T,C,H,W"): CineRNN()(torch.rand(16, 16))
    with pytest.raises(ValueError, match="at least 2 frames"): FrameDiffCNN()(torch.rand(2, 1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 6\)"): GRUCellScratch(6, 5)(torch.rand(3, 7))
    with pytest.raises(ValueError, match="cell="): CineRNN(cell="transformer")


def test_sequence_model_beats_single_frame_on_cine():
    from gynlab.phantoms import phantom_cine
    torch.manual_seed(0)
    d = phantom_cine(n=300, image_size=48, seed=3, frames=8)          # other loops than the lesson's (seed 0)
    x, y = cine_tensors(d["train"]); xt, yt = cine_tensors(d["test"]); xv, yv = cine_tensors(d["validation"])
    xt, yt = torch.cat([xt, xv]), torch.cat([yt, yv])
    seq, frame = CineRNN(), FrameCNN()
    train_clips(seq, x, y, epochs=12); train_clips(frame, x, y, epochs=6)
    a_seq, a_frame = clip_accuracy(seq, xt, yt), clip_accuracy(frame, xt, yt)
    assert a_seq > 0.75 and a_seq > a_frame + 0.15, (a_seq, a_frame)


def test_cine_tensors():
    from gynlab.phantoms import phantom_cine
    d = phantom_cine(n=20, image_size=32, seed=0, frames=4)
    x, y = cine_tensors(d["train"])
    assert x.shape[1:] == (4, 1, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.long and len(y) == len(x)
    with pytest.raises(KeyError, match="frames"): cine_tensors(d["train"].remove_columns("frames"))


def test_checker_rejects_wrong_answer():
    assert not check_gru_step(lambda x, h, cell: h)
    assert check_gru_step(lambda x, h, cell: cell(x, h))
    assert check_motion_energy(lambda clip: clip.diff(dim=0).abs().mean(0))
    assert not check_motion_energy(lambda clip: (clip - clip.mean(0)).abs().mean(0) + 1)
