# gynlab: one command to set up and run. `make lab` for the lessons, `make test` for everything CI runs.
SHELL := /bin/bash
PY    := .venv/bin/python
PIP   := .venv/bin/pip
PORT  ?= 8888
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1
export PLOTLY_RENDERER ?=

.PHONY: lab test nbtest pytest docs bench student export clean-nbs install

# The venv is rebuilt only when the pins or the package metadata change; a second run skips it.
.venv/.installed: settings.ini setup.py constraints.txt
	@test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $@

install: .venv/.installed

lab: .venv/.installed
	.venv/bin/jupyter lab --no-browser --ServerApp.ip=127.0.0.1 --port $(PORT) --notebook-dir=nbs $(LAB_ARGS)

nbtest: .venv/.installed
	.venv/bin/nbdev_test --n_workers 2 --timing $(NBTEST_ARGS)

pytest: .venv/.installed
	.venv/bin/python -m pytest tests -q $(PYTEST_ARGS)

test: .venv/.installed
	$(MAKE) --no-print-directory nbtest
	$(MAKE) --no-print-directory pytest

export: .venv/.installed
	.venv/bin/nbdev_export && .venv/bin/nbdev_clean

docs: .venv/.installed
	$(PY) -m gynlab._docs

bench: .venv/.installed
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done
