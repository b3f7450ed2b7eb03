"""gynlab.widgets.Explorer without a browser: the truth comes from the run's own label column and the ✗ marks are the
model's real mistakes; run folders (classification and segmentation) open with their own preprocessing and cases;
cache, IG preview refined in the background, stale background work cancelled; plain-text messages; the compare
pictures and the snapshot; the widget's layout (wrapping controls, width, colour scale)."""
import os
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn as nn

from gynlab.core import UsageError
from gynlab.exercises import interpret as XI
from gynlab.interpret import FAST_METHODS, attribute
from gynlab.widgets import PREVIEW, Explorer, Picture


class TinySeg(nn.Module):
    "A 2-class segmenter: conv body, a 3x3 'decoder' conv, a 1x1 logits head."
    def __init__(self, k=2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(6, k, 1)
    def forward(self, x): return self.head(self.body(x))


class AlwaysNILM(nn.Module):
    "A 'model' whose mistakes are known in advance: it predicts class 0 (NILM) for every image."
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
    def forward(self, x): return 1e-3 * self.conv(x).mean((2, 3)) + torch.tensor([5.0, 0.0, 0.0])


class Slow(nn.Module):
    "A classifier that takes `delay` seconds per forward pass: background work on it is easy to catch in flight."
    def __init__(self, delay=0.05):
        super().__init__()
        self.delay, self.conv, self.fc = delay, nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)
    def forward(self, x):
        time.sleep(self.delay)
        return self.fc(self.conv(x).relu().mean((2, 3)))


@pytest.fixture(scope="module")
def xb():
    torch.manual_seed(1)
    return torch.randn(3, 3, 16, 16)


@pytest.fixture(scope="module")
def trained():
    model, cyto, classes = XI.lesson_cnn()
    return model, None, classes, cyto


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A classification run trained (seconds) on the phantom cells' Bethesda column: its config says target='bethesda'."
    from gynlab.tasks import train_classifier
    out = tmp_path_factory.mktemp("runs") / "cells"
    train_classifier("phantom-cytology", out=out, epochs=2, image_size=32, subset=48, target="bethesda", progress=False)
    return out


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    "A segmentation run (a tiny U-Net, one epoch) on the uterus MRI phantoms: 4 classes."
    from gynlab.segment import train_segmenter
    out = tmp_path_factory.mktemp("runs") / "uterus"
    train_segmenter("phantom-uterus-mri", epochs=1, image_size=32, subset=12, batch_size=4, base=4, depth=2, out=out,
                    progress=False)
    return out


# ---- the explorer on a model and a split ----

@pytest.fixture(scope="module")
def explorer(trained):
    from gynlab.widgets import Explorer
    model, _, classes, cyto = trained
    ex = Explorer(model, cyto["validation"].select(range(10)), class_names=classes, target="bethesda", image_size=48,
                  background=False)
    yield ex
    ex.close()


def test_explorer_show_and_cache(explorer):
    v1 = explorer.show(case=2, method="gradcam", target=None)
    assert v1.ok and not v1.cached and v1.overlay.shape == (48, 48) and np.isclose(v1.probs.sum(), 1, atol=1e-5)
    assert v1.pred == int(v1.probs.argmax()) and "case 2" in explorer.status_w.value
    t0 = time.perf_counter(); v2 = explorer.show(case=2, method="gradcam", target=None); dt = time.perf_counter() - t0
    assert v2.cached and np.array_equal(v1.overlay, v2.overlay) and "cached" in explorer.status_w.value
    assert dt < 0.5
    v3 = explorer.show(case=5, method="saliency", target=1)
    assert v3.ok and not np.array_equal(v3.overlay, v1.overlay)
    assert explorer.case_w.value == 5 and explorer.method_w.value == "saliency" and explorer.target_w.value == 1
    src = explorer.fig.data[2].source
    explorer.show(case=5, method="integrated_gradients", target=1)
    assert explorer.fig.data[2].source != src, "the overlay must change with the method"
    # the same attribution as attribute() itself
    x = explorer._item(5)[0][None]
    direct = attribute(explorer.model, x, 1, "saliency")[0].numpy()
    assert np.allclose(explorer.cache.get((5, "saliency", 1))[0], direct, atol=1e-6)


def test_explorer_bad_selections(explorer, trained):
    from gynlab.widgets import Explorer
    v = explorer.show(case=1, method="saliency", target=7)
    assert not v.ok and "out of range" in v.message and "⚠" in explorer.status_w.value
    assert "does not exist" in explorer.show(case=99, method="saliency", target=None).message
    assert "unknown method" in explorer.show(case=1, method="lime", target=None).message
    model, _, classes, cyto = trained
    empty = Explorer(model, cyto["validation"].select([]), class_names=classes)
    assert "empty" in empty.last_view.message and not empty.show(case=0).ok
    # 1 channel: wrong for this model
    grey = torch.utils.data.TensorDataset(torch.randn(3, 1, 20, 20), torch.tensor([0, 1, 2]))
    wrong = Explorer(model, grey, class_names=classes)
    v = wrong.show(case=0, method="saliency", target=None)
    assert not v.ok and "cannot process" in v.message


def test_explorer_background_thread(trained):
    from gynlab.widgets import Explorer
    model, _, classes, cyto = trained
    ex = Explorer(model, cyto["validation"].select(range(4)), class_names=classes, target="bethesda", image_size=48,
                  background=True)
    v = ex._request(1, "occlusion", None)
    assert "background" in v.message and "computing" in ex.status_w.value
    ex._pool.shutdown(wait=True)
    assert ex.last_view.ok and ex.last_view.method == "occlusion" and (1, "occlusion", None) in ex.cache
    ex.close()


def test_explorer_segmenter(xb):
    from gynlab.widgets import Explorer
    torch.manual_seed(0)
    seg = TinySeg().eval()
    masks = torch.utils.data.TensorDataset(xb, torch.zeros(3, 16, 16).long())
    ex = Explorer(seg, masks, class_names=["background", "lesion"])
    v = ex.show(case=1, method="gradcam", target=1)
    assert ex.segmenter and v.ok and v.overlay.shape == (16, 16) and v.probs.shape == (2,)


def test_explorer_needs_an_existing_target_column(trained):
    from gynlab.widgets import Explorer
    model, _, classes, cyto = trained
    with pytest.raises(UsageError, match="not a column"):
        Explorer(model, cyto["validation"].select(range(3)), target="diagnosis")
    # no target: no truth
    ex = Explorer(model, cyto["validation"].select(range(3)), class_names=classes, background=False)
    assert ex.errors() == [] and all("truth" not in label and "✗" not in label for label, _ in ex.case_w.options)
    ex.close()


def test_explorer_marks_exactly_the_models_mistakes(trained):
    "The ✗ marks come from the column the model was trained on (bethesda), not from another label column."
    from gynlab.widgets import Explorer
    _, _, classes, cyto = trained
    valid = cyto["validation"].select(range(20))
    truth, other = np.array(valid["bethesda"]), np.array(valid["label"])
    mistakes = [i for i in range(len(valid)) if truth[i] != 0]
    assert mistakes and mistakes != [i for i in range(len(valid)) if other[i] != 0], "the columns must disagree here"
    ex = Explorer(AlwaysNILM(), valid, class_names=classes, target="bethesda", image_size=48, background=False)
    marked = [i for label, i in ex.case_w.options if "✗" in label]
    assert ex.errors() == marked == mistakes
    for label, i in ex.case_w.options: assert f"truth {classes[truth[i]]}, pred NILM" in label
    v = ex.show(case=2, method="saliency", target=None)
    assert f"truth <b>{classes[truth[2]]}</b>" in v.html and f"truth {classes[truth[2]]} ·" in v.message
    ex.close()




def test_explorer_from_run_reads_the_target_from_the_config(run):
    from gynlab.data import load
    from gynlab.runs import load_run
    from gynlab.train import predict
    from gynlab.transforms import to_torch
    from gynlab.widgets import Explorer
    model, cfg = load_run(run)
    assert cfg["target"] == "bethesda"
    valid = load("phantom-cytology", n=80, image_size=32, seed=1)["validation"]
    ex = Explorer.from_run(run, valid, background=False)
    assert ex.class_names == cfg["classes"] == ["NILM", "LSIL", "HSIL"]
    pred = predict(model, to_torch(valid, 32, 3, "bethesda", mean=cfg["mean"], std=cfg["std"])).argmax(1)
    assert ex.errors() == np.flatnonzero(pred != np.array(valid["bethesda"])).tolist()
    assert [i for label, i in ex.case_w.options if "✗" in label] == ex.errors()
    assert ex.show(case=1, method="gradcam", target=None).ok
    ex.close()




# ---- run folders ----

def test_from_run_opens_the_runs_own_validation_cases(run):
    "Without a dataset: the run's own validation split (dataset, size, subset, seed from its config), first n cases."
    from gynlab.runs import load_run
    from gynlab.tasks import run_splits
    from gynlab.train import predict
    from gynlab.transforms import to_torch
    model, cfg = load_run(run)
    valid = run_splits(cfg["dataset"], image_size=cfg["image_size"], seed=cfg["seed"], subset=cfg["subset"])[1]
    ex = Explorer.from_run(run, n=20, background=False)
    assert ex.n == 20 and ex.class_names == cfg["classes"] and ex.name == "cells"
    first = valid.select(range(20))
    ref = to_torch(first, cfg["image_size"], cfg["channels"], "bethesda", mean=cfg["mean"], std=cfg["std"])
    assert torch.allclose(ex._item(7)[0], ref[7][0]) and ex._item(7)[1] == int(ref[7][1])   # the run's preprocessing
    pred = predict(model, ref).argmax(1)
    assert ex.errors() == np.flatnonzero(pred != np.array(first["bethesda"])).tolist()
    assert [i for label, i in ex.case_w.options if "✗" in label] == ex.errors()
    assert Explorer.from_run(run, split="train", n=5, background=False).n == 5
    with pytest.raises(UsageError, match="split"): Explorer.from_run(run, split="test")
    ex.close()


def test_from_run_with_a_dataset_by_name_or_dict(run):
    from gynlab.data import load
    dd = load("phantom-cytology", n=60, image_size=32, seed=3)
    ex = Explorer.from_run(run, dd, split="validation", n=6, background=False)
    assert ex.n == 6 and ex.split["index"] == dd["validation"].select(range(6))["index"]
    ex2 = Explorer.from_run(run, "phantom-cytology", n=4, background=False)
    assert ex2.n == 4 and ex2.class_names == ["NILM", "LSIL", "HSIL"]


def test_from_run_on_a_segmentation_run(seg_run):
    "A segmentation run: its classes, its mask column as truth (Dice in the case label), a region's score explained."
    from gynlab.runs import load_run
    _, cfg = load_run(seg_run)
    ex = Explorer.from_run(seg_run, n=4, background=False)
    assert ex.segmenter and ex.class_names == cfg["classes"] and len(ex.class_names) == 4
    assert all("Dice" in label for label, _ in ex.case_w.options), ex.case_w.options
    assert ex.errors() == []                                  # no class truth for a whole image
    v = ex.show(case=1, method="gradcam", target=None)
    assert v.ok and v.overlay.shape == (32, 32) and v.probs.shape == (4,) and "region" in v.message
    empty = [k for k in range(4) if not (ex._pred_masks[1] == k).any()]
    if empty: assert "no pixel is predicted" in ex.show(case=1, method="saliency", target=empty[0]).message


def test_from_run_of_a_fold_opens_that_fold(tmp_path):
    "A cross-validation run (`--fold I/K`) opens on the fold it was scored on ('validation') and trained on ('train')."
    from gynlab.segment import segmentation_data, train_segmenter
    from gynlab.tasks import run_splits, train_classifier
    train_classifier("phantom-cytology", out=tmp_path / "c", epochs=1, image_size=32, target="bethesda",
                     progress=False, fold="2/3")
    rest, held, _ = run_splits("phantom-cytology", image_size=32, fold="2/3", target="bethesda")
    assert Explorer.from_run(tmp_path / "c", n=None, background=False).split["index"] == held["index"]
    assert Explorer.from_run(tmp_path / "c", split="train", n=None, background=False).split["index"] == rest["index"]
    train_segmenter("phantom-uterus-mri", epochs=1, image_size=32, out=tmp_path / "s", progress=False, fold="1/3")
    rest, held, _ = segmentation_data("phantom-uterus-mri", image_size=32, fold="1/3")
    assert Explorer.from_run(tmp_path / "s", n=None, background=False).split["index"] == held["index"]


# ---- speed paths: preview, background, cancellation ----

def test_ig_preview_then_the_full_map(trained):
    "In the widget IG first shows a few-step preview (never cached), then the full map replaces it."
    model, _, classes, cyto = trained
    ex = Explorer(model, cyto["validation"].select(range(4)), class_names=classes, target="bethesda", image_size=48)
    v = ex._request(2, "integrated_gradients", 1)
    assert v.ok and not v.final and "preview" in v.message and "4 steps" in v.message
    assert (2, "integrated_gradients", 1) not in ex.cache
    x = ex._item(2)[0][None]
    assert np.allclose(v.overlay, attribute(model, x, 1, "integrated_gradients", n_steps=4)[0].numpy(), atol=1e-5)
    ex._future.result(timeout=60)
    final = ex.last_view
    assert final.ok and final.final and final.case == 2 and "preview" not in final.message
    assert np.allclose(final.overlay, attribute(model, x, 1, "integrated_gradients")[0].numpy(), atol=1e-5)
    assert ex.cache.get((2, "integrated_gradients", 1)) is not None and ex.status_w.value.count("data-state=\"ok\"")
    assert ex.show(2, "integrated_gradients", 1).cached
    assert set(PREVIEW) == {"integrated_gradients", "smoothgrad", "gradient_shap"}
    ex.close()


def test_moving_on_cancels_background_work():
    "A slow background computation stops within about one layer when the user picks something else."
    torch.manual_seed(0)
    model = Slow(0.05).eval()
    data = torch.utils.data.TensorDataset(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]))
    ex = Explorer(model, data, class_names=["a", "b", "c"], batch_size=1)   # occlusion: ~50 passes of 50 ms
    ex._request(1, "occlusion", None)
    time.sleep(0.3)
    t0 = time.perf_counter()
    v = ex.show(2, "saliency", None)
    waited = time.perf_counter() - t0
    assert v.ok and ex.last_view.method == "saliency" and ex.last_view.case == 2
    assert ex._future.result(timeout=10) is None                  # cancelled: nothing drawn
    assert (1, "occlusion", None) not in ex.cache
    assert waited < 1.5, f"the fast request waited {waited:.2f} s for stale background work"
    ex.close()


def test_stale_result_is_not_drawn(trained):
    model, _, classes, cyto = trained
    ex = Explorer(model, cyto["validation"].select(range(4)), class_names=classes, target="bethesda", image_size=48)
    ex._request(1, "occlusion", None); ex.show(3, "gradcam", None)
    ex._pool.shutdown(wait=True)
    assert ex.last_view.case == 3 and ex.last_view.method == "gradcam" and "gradcam" in ex.message
    ex.close()


# ---- messages, pictures, layout ----

def test_message_is_plain_text(explorer):
    v = explorer.show(case=2, method="input_x_gradient", target=1)
    print(explorer.message)
    assert explorer.message == v.message and "<" not in explorer.message and "case 2" in explorer.message
    assert "<b>" in v.html and "(red: for, blue: against)" in v.message
    bad = explorer.show(case=2, method="saliency", target=9)
    assert explorer.message == bad.message and "<" not in explorer.message and "out of range" in explorer.message


def test_compare_methods_runs_and_snapshot(run, tmp_path):
    ex = Explorer.from_run(run, n=8, background=False)
    pic = ex.compare_methods(case=2)
    assert isinstance(pic, Picture) and [v.method for v in pic.views] == list(FAST_METHODS)
    assert all(v.case == 2 and v.ok for v in pic.views) and pic.image.width <= 900
    assert pic.png()[:8] == b"\x89PNG\r\n\x1a\n"
    other = Explorer.from_run(run, ex.split, n=None, background=False)           # the same run: the same maps
    pic = ex.compare_runs(other, case=3, method="gradcam", target=1)
    a, b = pic.views
    assert a.case == b.case == 3 and a.target == b.target == 1 and np.allclose(a.overlay, b.overlay)
    assert pic.image.width <= 900 and "gradcam" in pic.message
    ex.show(case=4, method="saliency", target=None)
    snap = ex.snapshot()
    assert snap.views[0].case == 4 and snap.image.width <= 900 and snap.message == ex.message
    snap.save(tmp_path / "snap.png")
    from PIL import Image
    assert Image.open(tmp_path / "snap.png").size == snap.image.size


def test_compare_runs_view_in_the_widget(run):
    ex = Explorer.from_run(run, n=6, compare=run, background=False)
    assert "compare runs" in ex.view_w.options and ex.other.n == ex.n
    ex.view_w.value = "compare runs"
    assert ex.picture_w.value[:4] == b"\x89PNG" and ex.fig_box.layout.display == "none"
    assert ex.picture_w.layout.display != "none" and "cells" in ex.message
    ex.view_w.value = "compare methods"
    assert "side by side" in ex.message
    ex.show(case=1, method="saliency")                       # back to one method
    assert ex.view_w.value == "one method" and ex.fig_box.layout.display != "none"


def test_layout_and_colour_scale(explorer):
    "Controls wrap; the widget is at most 900 px wide; the case's full label is its tooltip; every overlay a scale."
    controls = explorer.widget.children[0]
    assert controls.layout.flex_flow == "row wrap" and explorer.widget.layout.max_width == "900px"
    assert explorer.fig.layout.width <= 900 and explorer.fig_box.layout.overflow == "auto hidden"
    explorer.show(case=4, method="saliency", target=None)
    assert explorer.case_w.tooltip == explorer.case_w.label and explorer.case_w.label.startswith("#4")
    scale = explorer.fig.data[4].marker
    assert scale.showscale and scale.colorscale[0][1] != scale.colorscale[-1][1] and scale.cmin == 0
    explorer.show(case=4, method="input_x_gradient", target=None)           # signed: a diverging scale around 0
    assert explorer.fig.data[4].marker.cmin == -1 and list(explorer.fig.data[4].marker.colorbar.tickvals) == [-1, 0, 1]
    assert explorer.fig.data[3].orientation == "h"                          # class names readable, not rotated
