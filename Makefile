# Quick start: `make run` (sets up .venv and opens the app on the demo), `make test` (sets up and runs the tests).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: setup run test lint bench screenshots fuzz package package-test clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/workbench

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) bench/run_all.py

screenshots: $(STAMP)
	command -v xvfb-run >/dev/null || (apt-get install -y -q xvfb >/dev/null)
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) bench/screenshots.py docs/screenshots

fuzz: $(STAMP)
	QT_QPA_PLATFORM=offscreen WORKBENCH_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests -k fuzz

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
