# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install what is
# needed first; nothing but python3 (>= 3.11) is assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test lint demo bench testbed clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The real-component tests need QEMU and a guest kernel; scripts/testbed.sh installs and caches them.
testbed:
	bash scripts/testbed.sh

lint: $(STAMP)
	$(PY) -m ruff check wsrl tests benchmarks

test: $(STAMP) testbed
	$(PY) -m ruff check wsrl tests benchmarks
	$(PY) -m pytest -q

demo: $(STAMP)
	bash scripts/demo.sh

bench: $(STAMP)
	$(PY) benchmarks/bench_trace.py

clean:
	rm -rf $(VENV) .cache out
