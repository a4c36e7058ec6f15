# Every target works alone on a fresh machine with Python 3.11: the first one
# that needs the environment creates .venv and installs the package into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test docs docs-check bench clean

# Re-run only when the dependency list changes.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test,docs,data,viewpoints]'
	touch $(STAMP)

.venv venv: $(STAMP)

# Retrains from scratch each time (--overwrite replaces runs/demo; --resume would continue it).
demo: $(STAMP)
	$(BIN)/dgl-capsules demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

# The site with every tutorial executed (tutorials/**/plot_*.py); warnings fail it. conf.py first
# generates the Results section with its plots, the API reference and the included fragments
# (tools/docgen: docs/results/, docs/api/, docs/_generated/, all git-ignored).
docs: $(STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -b html docs docs/_build/html

# Open the built site in headless Chromium (installed with apt-get when missing): console errors,
# broken images, animations or links fail; screenshots in docs/_build/screenshots.
docs-check: $(STAMP) docs/_build/html/index.html
	$(BIN)/python tools/check_site.py

docs/_build/html/index.html:
	$(MAKE) docs

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info runs docs/_build docs/auto_tutorials docs/api docs/results docs/_generated \
		docs/sg_execution_times.rst
