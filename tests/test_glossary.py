"""The glossary and the instructor guide: every link points at a notebook that exists (or is planned), every lesson is
linked."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
sys.path.insert(0, str(ROOT / "tools"))
import lessons  # noqa: E402

LINK = re.compile(r"\]\(([^)\s]+?\.ipynb)(#[^)\s]*)?\)")


def _markdown(nb: Path) -> str:
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in cells if c["cell_type"] == "markdown")


def _known() -> set[str]:
    return {p.name for p in NBS.glob("*.ipynb")} | {stem + ".ipynb" for stem, _, _ in lessons.PLAN}


@pytest.mark.parametrize("page", ["glossary.ipynb", "instructor.ipynb"])
def test_page_links_point_at_notebooks(page):
    text = _markdown(NBS / page)
    links = [m.group(1) for m in LINK.finditer(text)]
    assert links, f"{page} has no links to lessons"
    bad = sorted({l for l in links if l not in _known()})
    assert not bad, f"{page} links to notebooks that neither exist in nbs/ nor are planned: {bad}"


def test_every_planned_lesson_is_in_the_glossary():
    linked = {m.group(1) for m in LINK.finditer(_markdown(NBS / "glossary.ipynb"))}
    missing = [stem for stem, _, _ in lessons.PLAN if stem + ".ipynb" not in linked]
    assert not missing, f"no glossary term links to these lessons: {missing}"


def test_glossary_terms_have_definitions_and_links():
    text = _markdown(NBS / "glossary.ipynb")
    assert text.lstrip().startswith("# Glossary")
    terms = re.findall(r"^- \*\*(.+?)\*\*:(.*?)(?=^- \*\*|^#|\Z)", text, re.M | re.S)
    assert len(terms) >= 60, f"only {len(terms)} terms"
    names = [t for t, _ in terms]
    assert len(set(names)) == len(names), "a term is defined twice"
    for name, body in terms:
        assert LINK.search(body), f"glossary term {name!r} links to no lesson"
        words = len(re.sub(r"→.*", "", body, flags=re.S).split())
        assert 5 <= words <= 80, f"glossary term {name!r}: definition of {words} words (keep it to 1-3 sentences)"
    required = ["CNN", "Convolution", "Pooling", "Receptive field", "Transfer learning", "Fine-tuning", "Linear probe",
                "Segmentation", "U-Net", "Dice", "IoU", "Hausdorff", "Self-attention", "ViT", "Autoencoder", "GAN",
                "LSTM", "CAD", "Calibration", "ECE", "Temperature scaling", "Operating point", "Sensitivity",
                "Specificity", "ROC", "AUC", "End-to-end", "Domain adaptation", "AdaBN", "DANN", "Shortcut",
                "Saliency", "Grad-CAM", "Integrated gradients", "MC dropout", "Data leakage", "Model card",
                "Pap smear", "Bethesda", "Colposcopy", "Transvaginal", "Colour Doppler", "Head circumference",
                "Gestational age", "High-grade serous", "Fibroid"]
    missing = [r for r in required if not any(r.lower() in n.lower() for n in names)]
    assert not missing, f"glossary lacks {missing}"


def test_pages_are_in_the_sidebar():
    side = lessons.sidebar_yml()
    for page, _ in lessons.PAGES:
        if (NBS / f"{page}.ipynb").exists(): assert f"- {page}.ipynb" in side
    # after the lessons
    assert side.index("glossary.ipynb") > max(side.index(nb.name) for nb in NBS.glob("[0-9][0-9]_*.ipynb"))


DATA_PAGES = {"results"}   # reads measured figures (bench/results/*.json) with a few cells of code; trains nothing


def test_pages_are_markdown_only_and_titled():
    for page, title in lessons.PAGES:
        nb = json.loads((NBS / f"{page}.ipynb").read_text(encoding="utf-8"))
        code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        if page in DATA_PAGES:
            assert "fit(" not in code and "train_" not in code, f"{page}.ipynb must only read results, not train"
        else: assert not code, f"{page}.ipynb must hold only markdown"
        assert lessons.notebook_info(NBS / f"{page}.ipynb")["title"] == title
