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
	@# Keras defaults to TensorFlow, which the venv does not have: its Keras uses the torch backend (docs/BUILDING.md)
	$(PY) -c "import site; open(site.getsitepackages()[0] + '/workbench_keras_backend.pth', 'w').write('import os; os.environ.setdefault(\"KERAS_BACKEND\", \"torch\")\n')"
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
	for screen in 1600x1000 1366x768; do QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 $${screen}x24" \
		$(PY) bench/first_run_screenshots.py docs/screenshots || exit 1; done

fuzz: $(STAMP)
	QT_QPA_PLATFORM=offscreen WORKBENCH_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests -k fuzz

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache

# Packaging (packaging/README.md): the wheel and the PyInstaller one-folder bundle in dist/, rebuilt only when a
# source changed. build and pyinstaller are installed here, not in the dev extra, to keep `make test` setup fast.
PKG_SOURCES := pyproject.toml $(shell find workbench plugins resources packaging/pyinstaller -type f \
                 -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)
PKG_TOOLS   := $(VENV)/.packaging-tools
WHEEL_STAMP := dist/.wheel-built
BUNDLE_EXE  := dist/workbench/workbench

$(PKG_TOOLS): $(STAMP)
	$(PY) -m pip install -q build pyinstaller
	@touch $@

$(WHEEL_STAMP): $(PKG_TOOLS) $(PKG_SOURCES) README.md
	rm -f dist/workbench_nn-*.whl
	$(PY) -m build --wheel --outdir dist .
	@touch $@

$(BUNDLE_EXE): $(PKG_TOOLS) $(PKG_SOURCES)
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
		packaging/pyinstaller/workbench.spec
	@touch $@

package: $(WHEEL_STAMP) $(BUNDLE_EXE)

package-test: package
	PYTHON=$(PYTHON) bash packaging/package_test.sh
