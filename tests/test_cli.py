"The `gynlab` console script, run for real in a subprocess, and how modules plug commands into it."
import configparser
import json
import os
import subprocess
import sys
import types
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
GYNLAB = Path(sys.executable).parent / "gynlab"
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
ENV.pop("GYNLAB_DATA", None)


def gynlab(*args, cwd=ROOT):
    return subprocess.run([str(GYNLAB), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def _cards():
    data = pytest.importorskip("gynlab.data", reason="gynlab.data (nbs/00_data.ipynb) is not exported yet")
    return data.cards()


def test_console_script_and_version():
    assert GYNLAB.exists(), f"{GYNLAB} missing: is gynlab installed (pip install -e .)?"
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    r = gynlab("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"gynlab {cfg['DEFAULT']['version']}", r.stdout + r.stderr


def test_help_and_bad_command():
    r = gynlab("--help")
    assert r.returncode == 0 and "data" in r.stdout and "not for clinical use" in r.stdout
    r = gynlab("no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def test_data_list_shows_every_card():
    cards = _cards()
    r = gynlab("data", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["name", "modality"] and len(lines) == len(cards) + 2
    rows = {l.split()[0]: l for l in lines[2:]}
    assert set(rows) == set(cards)
    for name, c in cards.items():
        assert str(len(c.classes)) in rows[name].split()
        if not c.real: assert rows[name].endswith("built-in"), rows[name]
        elif c.folder and (DATA / c.folder).is_dir(): assert rows[name].endswith(" found"), rows[name]


def test_data_list_json_and_real_data_found():
    cards = _cards()
    got = {d["name"]: d for d in json.loads(gynlab("data", "list", "--json").stdout)}
    assert set(got) == set(cards)
    real_here = [n for n, c in cards.items() if c.real and c.folder and (DATA / c.folder).is_dir()]
    if not DATA.is_dir(): pytest.skip(f"{DATA} is absent: cannot check that real data is found")
    assert real_here, "shared data is present but no card's folder matches it"
    for n in real_here: assert got[n]["available"] == "found"


def test_data_info_with_root(tmp_path):
    cards = _cards()
    real = [c for c in cards.values() if c.real and c.folder]
    if not real: pytest.skip("no real dataset card registered")
    c = real[0]
    (tmp_path / c.folder).mkdir()
    r = gynlab("data", "info", c.name, "--root", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["name"] == c.name and d["citation"] == c.citation and d["found_at"] == str(tmp_path / c.folder)
    text = gynlab("data", "info", c.name, "--root", str(tmp_path)).stdout
    assert text.startswith(f"{c.name}: {c.title}") and f"found at {tmp_path / c.folder}" in text


def test_data_info_unknown_name_is_a_clean_error():
    cards = _cards()
    r = gynlab("data", "info", "no-such-dataset")
    assert r.returncode == 2 and r.stdout == ""
    assert "no-such-dataset" in r.stderr and "Traceback" not in r.stderr
    assert any(n in r.stderr for n in cards), f"the error should list the known names: {r.stderr}"


def test_data_bad_root_is_a_clean_error(tmp_path):
    _cards()
    r = gynlab("data", "list", "--root", str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such folder" in r.stderr and "Traceback" not in r.stderr


def test_plugin_modules_register_commands(monkeypatch, capsys):
    from gynlab import cli
    mod = types.ModuleType("gynlab_test_cmds")
    def _add_cli(sp): sp.add_parser("hello").set_defaults(func=lambda a: print("hi"))
    mod._add_cli = _add_cli
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(cli, "PLUGIN_MODULES", [mod.__name__])
    assert cli.main(["hello"]) == 0 and capsys.readouterr().out == "hi\n"


def test_broken_plugin_surfaces(tmp_path, monkeypatch):
    "A plugin that cannot import is an error, not a silently missing command."
    from gynlab import cli
    (tmp_path / "gynlab_broken_cmds.py").write_text("import some_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="some_dependency_that_is_missing"):
        cli.build_parser(["gynlab_broken_cmds"])


def test_errors_become_exit_codes(monkeypatch, capsys):
    "A GynlabError: exit 2 and its message; a bug: exit 1, one line, no traceback unless --debug; Ctrl-C: exit 130."
    from gynlab import cli
    from gynlab.core import UsageError
    mod = types.ModuleType("gynlab_test_fail")
    def boom(kind):
        def f(a):
            if kind == "user": raise UsageError("--thing must be positive")
            if kind == "bug": raise ZeroDivisionError("division by zero")
            raise KeyboardInterrupt
        return f
    def _add_cli(sp):
        for k in ("user", "bug", "stop"): sp.add_parser(k).set_defaults(func=boom(k))
    mod._add_cli = _add_cli
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(cli, "PLUGIN_MODULES", [mod.__name__])
    assert cli.main(["user"]) == 2 and capsys.readouterr().err == "gynlab: error: --thing must be positive\n"
    assert cli.main(["bug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gynlab: internal error: ZeroDivisionError") and "Traceback" not in err and "--debug" in err
    assert cli.main(["stop"]) == 130 and "interrupted" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError): cli.main(["--debug", "bug"])
