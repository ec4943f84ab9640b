# Two commands on a fresh machine (only Python 3.11 and pip needed):
#   make demo   - create .venv, install wildreid, run the default (fusion) preset on the generated demo
#   make test   - create .venv, install wildreid with the test extras, run ruff (lint, format), mypy (types) and the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-test demo test benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	# wildlife-datasets (the reference metric, test-only) pulls the GUI build of OpenCV, which
	# shares the cv2 folder with the headless build and needs libGL: put the headless one back.
	$(PY) -m pip uninstall --quiet -y opencv-python
	$(PY) -m pip install --quiet --force-reinstall --no-deps opencv-python-headless
	bash scripts/install-browser.sh
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

demo: setup
	$(PY) -m wildreid demo --out demo-out --data demo-data

test: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

benchmark: setup
	$(PY) benchmarks/real_data.py

clean:
	rm -rf demo-out demo-data bench-out test-artifacts
