# telacd — the two quickstart commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SOURCES_THAT_NEED_A_REBUILD := pyproject.toml setup.py $(shell find protocols acd_core -name '*.pyx' -o -name '*.pxd' -o -name '_*.py' 2>/dev/null)

.PHONY: all venv compile debug test testinstalled lint run clean

all: compile

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

# Install the project editable with its test extras; the editable install builds
# the Cython extensions in place, next to their .pyx sources.
$(STAMP): $(PY) $(SOURCES_THAT_NEED_A_REBUILD)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) setup.py -q build_ext --inplace
	touch $(STAMP)

venv: $(STAMP)

compile: $(STAMP)
	$(PY) setup.py -q build_ext --inplace

debug: $(PY)
	TELACD_DEBUG=1 $(PY) setup.py -q build_ext --inplace --force

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check protocols acd_core gateway bench tests

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Run the suite from outside the tree against the installed package.
testinstalled: $(STAMP)
	cd $(HOME) && $(CURDIR)/$(PY) -m pytest -q $(CURDIR)/tests

run: $(STAMP)
	$(VENV)/bin/telacd demo

clean:
	rm -rf build $(VENV) *.egg-info
	find protocols acd_core -name '*.so' -delete -o -name '*.c' -delete
