# `make test` is the whole set-up: it creates .venv if missing, installs the pinned
# requirements and this package into it, and runs the test suite.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test install clean demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

install: $(STAMP)

# `make demo` trains a plain and an FWL model on Shakespeare and compares them (minutes on
# a CPU; the GPU when JAX sees one). A second run reuses everything; FRESH=1 starts over.
demo: $(STAMP)
	$(VENV)/bin/python demo.py $(if $(FRESH),--fresh,)

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache demo_out
