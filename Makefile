# gynlab: one command to set up and run. `make lab` for the lessons, `make test` for everything CI runs.
SHELL := /bin/bash
PY    := .venv/bin/python
PIP   := .venv/bin/pip
PORT  ?= 8888
# jupyter refuses to run as root without --allow-root (containers, CI)
ROOT_ARGS := $(if $(filter 0,$(shell id -u)),--allow-root)
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1
export PLOTLY_RENDERER ?=

.PHONY: lab test nbtest pytest lint sync-check docs readme bench student export clean-nbs install

# The venv is rebuilt only when the pins or the package metadata change; a second run skips it.
.venv/.installed: settings.ini setup.py constraints.txt
	@test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $@

# JupyterLab settings kept inside the venv (sys-prefix level): no news/announcements popup.
.venv/.lab-configured: .venv/.installed
	.venv/bin/jupyter labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements"
	.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name python3
	@touch $@

install: .venv/.installed

lab: .venv/.lab-configured
	.venv/bin/jupyter lab --no-browser --ServerApp.ip=127.0.0.1 --port $(PORT) --notebook-dir=nbs $(ROOT_ARGS) $(LAB_ARGS)

nbtest: .venv/.installed
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} .venv/bin/nbdev_test --n_workers 2 --timing $(NBTEST_ARGS)

pytest: .venv/.lab-configured
	.venv/bin/python -m pytest tests -q --durations=15 $(PYTEST_ARGS)

# House rules a machine checks: ruff (ruff.toml: lines <= 120, no undefined/unused names) and the layer contract
# (.importlinter: an import goes down, never up).
lint: .venv/.installed
	.venv/bin/ruff check .
	.venv/bin/lint-imports

# The package is what the notebooks generate, and the notebooks are stored clean.
sync-check: .venv/.installed
	$(PY) tools/sync_check.py

# Every part runs even if an earlier one fails, so one CI run reports everything; the exit code is non-zero if any failed.
test: .venv/.lab-configured
	@rc=0; for t in sync-check lint nbtest pytest; do $(MAKE) --no-print-directory $$t || rc=1; done; exit $$rc

export: .venv/.installed
	.venv/bin/nbdev_export && .venv/bin/nbdev_clean

# README.md and nbs/sidebar.yml are generated from the notebooks (tools/lessons.py, tools/readme.py).
readme: .venv/.installed
	$(PY) tools/lessons.py
	$(PY) tools/readme.py

# The site, in _docs/: notebooks executed (cached in .cache/docs-exec), rendered by Quarto if present, else smalldocs.
docs: readme
	$(PY) tools/docs.py $(DOCS_ARGS)

# Copies of the lessons without the solution cells, in student/.
student: .venv/.installed
	$(PY) tools/student.py $(STUDENT_ARGS)

bench: .venv/.installed
	@shopt -s nullglob; for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done
