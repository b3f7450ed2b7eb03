"""The lesson list, in one place: the planned lessons (DESIGN.md) merged with the notebooks present in nbs/.

Writes nbs/sidebar.yml and the lesson map in nbs/index.ipynb, so a new lesson appears in both by itself.

    python tools/lessons.py          # update both
    python tools/lessons.py --check  # exit 1 if either is out of date (used by the tests)
"""
from __future__ import annotations
import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"

# (notebook stem, what it teaches, module) — the plan; a notebook with the same number replaces its entry.
PLAN = [
    ("00_data", "imaging modalities, dataset cards, grouped splits, data quality", "gynlab.data"),
    ("01_phantoms", "synthetic data with known truth: how it is made and why", "gynlab.phantoms"),
    ("02_transforms", "normalisation, augmentation for ultrasound (speckle) and cytology (stain)", "gynlab.transforms"),
    ("05_from_zero", "a neuron, a loss, gradient descent and backpropagation by hand, checked against autograd", ""),
    ("09_exercises", "how the self-checking exercises work", "gynlab.exercises"),
    ("10_cnn", "convolution, pooling, fully connected layers, receptive fields", "gynlab.models.cnn"),
    ("11_training", "the training loop, metrics, early stopping, checkpoints, seeds, DDP", "gynlab.train"),
    ("20_transfer", "pretrained features, linear probe vs fine-tuning", "gynlab.models.pretrained"),
    ("21_domain", "generalisation and domain adaptation (Doppler vs grey-scale, scanner shift)", "gynlab.domain"),
    ("30_segmentation", "U-Net built step by step, Dice/CE losses, training on fibroids, ovarian lesions, "
     "fetal skulls, nuclei", "gynlab.models.unet"),
    ("31_seg_metrics", "Dice, IoU, 95% Hausdorff and their edge cases; ellipse fit and head circumference",
     "gynlab.metrics"),
    ("40_attention", "channel/spatial attention, attention gates, a small ViT and its attention maps",
     "gynlab.models.attention"),
    ("50_interpret", "attribution methods and how to judge an explanation", "gynlab.interpret"),
    ("51_explorer", "the interactive explorer widget", "gynlab.widgets"),
    ("60_cad", "end-to-end CAD: calibration, operating points, uncertainty and referral, case reports", "gynlab.cad"),
    ("61_biometry", "fetal biometry: head circumference from a segmented skull, gestational age", "gynlab.biometry"),
    ("70_generative", "autoencoders (denoising, anomaly), GANs (synthesis, augmentation)", "gynlab.models.generative"),
    ("71_sequence", "RNNs over ultrasound cine loops", "gynlab.models.sequence"),
    ("80_responsible", "shortcut learning, subgroup audit, model cards, regulation and ethics", "gynlab.audit"),
    ("81_cervical_screening", "cervical screening: nucleus segmentation, cytologist's features vs end-to-end CNN, "
     "slide-level operating point", "gynlab.apps.cervical"),
    ("82_ovarian_triage", "ovarian tumour triage: calibrated benign/malignant/needs-expert decisions "
     "against IOTA-style rules", "gynlab.apps.ovarian"),
    ("83_endometriosis", "endometrioma against other benign cysts, and whether the model looks at the cyst content",
     "gynlab.apps.endometriosis"),
    ("84_fibroids", "uterine fibroids: segmentation to count, volume and a FIGO-like position, each error measured",
     "gynlab.apps.fibroids"),
    ("85_placenta_accreta", "placenta accreta spectrum on a phantom with planted signs: classifier, segmenter, "
     "attribution checks", "gynlab.placenta"),
    ("90_cli", "the `gynlab` command line: runs, predictions, reports, exit codes, your own command", "gynlab.cli"),
]
SECTIONS = {"0": "Foundations", "1": "Networks and training", "2": "Transfer and domain shift", "3": "Segmentation",
            "4": "Attention", "5": "Interpretability", "6": "Computer-aided diagnosis",
            "7": "Generative and sequence models", "8": "Responsible use and clinical applications", "9": "Tools"}
START, END = "<!-- lesson-map:start -->", "<!-- lesson-map:end -->"
# Pages that are not lessons (no number, no module): listed after the lessons in the sidebar when present in nbs/.
PAGES = [("results", "Results: baselines on real data"), ("glossary", "Glossary"), ("instructor", "Instructor guide")]
PAGES_SECTION = "Reference"
LIBRARY_SECTION = "Library"  # nbs/lib/*.ipynb: the plumbing the lessons import (flattened into the site's root)


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def notebook_info(path: Path) -> dict:
    "Title, summary and exported module of a lesson notebook."
    nb = json.loads(path.read_text(encoding="utf-8"))
    title, summary, module = path.stem, "", ""
    for c in nb["cells"]:
        s = _src(c)
        if c["cell_type"] == "code" and not module:
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", s, re.M)
            if m: module = "gynlab." + m.group(1)
        if c["cell_type"] == "markdown" and title == path.stem:
            m = re.search(r"^#\s+(.+)$", s, re.M)
            if m:
                title = m.group(1).strip()
                m2 = re.search(r"^>\s*(.+)$", s, re.M)
                summary = m2.group(1).strip() if m2 else ""
    return {"stem": path.stem, "file": path.name, "title": title, "summary": summary, "module": module}


def library() -> list[Path]:
    "The library notebooks (nbs/lib/), in order."
    return sorted((NBS / "lib").glob("*.ipynb"))


def present() -> list[dict]:
    "The lesson notebooks in nbs/ (NN_name.ipynb), in order."
    return [notebook_info(p) for p in sorted(NBS.glob("[0-9][0-9]_*.ipynb"))]


def lessons() -> list[dict]:
    "Planned and present lessons merged, in order; `exists` says which are written."
    have = {l["stem"][:2]: l for l in present()}
    out, seen = [], set()
    for stem, teaches, module in PLAN:
        n = stem[:2]
        if n in have:
            l = have[n]
            out.append({**l, "teaches": teaches if l["stem"] == stem else (l["summary"] or teaches),
                        "module": l["module"] or module, "exists": True})
        else:
            out.append({"stem": stem, "file": stem + ".ipynb", "title": stem, "teaches": teaches, "module": module,
                        "exists": False})
        seen.add(n)
    out += [{**l, "teaches": l["summary"], "exists": True} for n, l in have.items() if n not in seen]
    return sorted(out, key=lambda l: l["stem"])


def lesson_map_md() -> str:
    rows = ["| lesson | what it teaches | module | status |", "|---|---|---|---|"]
    for l in lessons():
        name = f"[{l['title']}]({l['file']})" if l["exists"] else f"`{l['stem']}`"
        rows.append(f"| {name} | {l['teaches']} | `{l['module']}` | {'available' if l['exists'] else 'planned'} |")
    return "\n".join(rows)


def sidebar_yml() -> str:
    lines = ["# generated by tools/lessons.py from the notebooks in nbs/: do not edit", "website:", "  sidebar:",
             "    contents:", "      - index.ipynb"]
    section = None
    for l in (l for l in lessons() if l["exists"]):
        s = SECTIONS.get(l["stem"][0], "More")
        if s != section:
            lines += [f"      - section: {s}", "        contents:"]
            section = s
        lines.append(f"          - {l['file']}")
    lib = [p.name for p in library()]
    if lib: lines += [f"      - section: {LIBRARY_SECTION}", "        contents:"] + [f"          - {p}" for p in lib]
    pages = [f"{stem}.ipynb" for stem, _ in PAGES if (NBS / f"{stem}.ipynb").exists()]
    if pages: lines += [f"      - section: {PAGES_SECTION}", "        contents:"] + [f"          - {p}" for p in pages]
    return "\n".join(lines) + "\n"


def index_with_map(index_text: str) -> str:
    "index.ipynb's text with the lesson map between the markers replaced by the current one."
    nb = json.loads(index_text)
    hits = 0
    for c in nb["cells"]:
        s = _src(c)
        if c["cell_type"] == "markdown" and START in s and END in s:
            pre, rest = s.split(START, 1)
            post = rest.split(END, 1)[1]
            new = f"{pre}{START}\n{lesson_map_md()}\n{END}{post}"
            c["source"] = new.splitlines(keepends=True)
            hits += 1
    if hits != 1: raise SystemExit(f"nbs/index.ipynb: expected one markdown cell with {START} ... {END}, found {hits}")
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"  # as nbdev_clean writes it


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if nbs/sidebar.yml or the index's lesson map is stale")
    a = ap.parse_args(argv)
    targets = {NBS / "sidebar.yml": sidebar_yml()}
    idx = NBS / "index.ipynb"
    old_idx = idx.read_text(encoding="utf-8")
    new_idx = index_with_map(old_idx)
    # compare the notebook by content, not by JSON formatting
    if json.loads(new_idx) != json.loads(old_idx): targets[idx] = new_idx
    stale = [p for p, t in targets.items() if not p.exists() or p.read_text(encoding="utf-8") != t]
    if a.check:
        for p in stale: print(f"{p.relative_to(ROOT)} is out of date: run `make readme`", file=sys.stderr)
        return 1 if stale else 0
    for p in stale: p.write_text(targets[p], encoding="utf-8"); print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
