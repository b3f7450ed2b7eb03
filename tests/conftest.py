"Shared pytest fixtures for gynlab (kept generic: any test module may use them)."
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    "The real data folder ../shared/data; the test is skipped when it is absent."
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def gynlab_cache(tmp_path, monkeypatch) -> Path:
    "A private, empty GYNLAB_CACHE for one test (conversions and downloads go there)."
    cache = tmp_path / "gynlab-cache"
    monkeypatch.setenv("GYNLAB_CACHE", str(cache))
    return cache


def pytest_sessionfinish(session, exitstatus):
    "Close the explorer widgets the tests made while Python can still do it (else each prints a traceback at exit)."
    import sys
    widget_module = sys.modules.get("ipywidgets.widgets.widget")
    for w in list(getattr(widget_module, "_instances", {}).values()):
        try: w.close()
        except Exception: pass   # its comm is already gone: nothing left to close
