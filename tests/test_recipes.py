"""Every recipe of `gynlab train --recipe` (gynlab.tasks.RECIPES) in a fast form: a tiny subset, one epoch, small
images. The full runs, which the recipes' figures come from, are `bench/baselines.py` only."""
import json

import pytest

from gynlab.core import DataError
from gynlab.data import find_data
from gynlab.tasks import RECIPES, recipe
from test_cli_bad_input import gynlab   # `gynlab ARGV...` in-process: (exit code, stdout, stderr)


def _have(dataset: str) -> bool:
    try: find_data(dataset); return True
    except DataError: return False


FAST = {"--epochs": 1, "--subset": 16, "--image-size": 32}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_trains_and_records_itself(name, tmp_path):
    "The recipe's settings reach config.json (with its name); the flags given on the command line win."
    r = recipe(name)
    if not _have(r["dataset"]): pytest.skip(f"{r['dataset']} is not on this machine")
    extra = ["--freeze-epochs", 0] if r.get("freeze_epochs") else []
    argv = ["train", "--recipe", name, "--out", tmp_path / "run", "--quiet", *extra,
            *[x for kv in FAST.items() for x in kv]]
    code, out, err = gynlab(*argv)
    assert code == 0, err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["recipe"] == name and cfg["task"] == r["task"] and cfg["dataset"] == r["dataset"]
    assert cfg["model"] == r["model"]
    assert (cfg["epochs"], cfg["image_size"], cfg["subset"]) == (1, 32, 16)          # the flags win
    kept = {k: v for k, v in r.items() if k not in ("task", "dataset", "model", "epochs", "image_size",
                                                    "freeze_epochs", "budget_cpu_min")}
    assert {k: cfg[k] for k in kept} == kept                                          # the rest is the recipe's
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_recipes_state_a_budget():
    "Each recipe says what it costs, in CPU-minutes on 2 cores."
    for name, r in RECIPES.items():
        assert 0 < r["budget_cpu_min"] <= 15, name


def test_unknown_recipe_is_refused(tmp_path):
    code, out, err = gynlab("train", "--recipe", "no-such-recipe", "--out", tmp_path / "x")
    assert code == 2 and "no-such-recipe" in err and "mmotu-classify" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
