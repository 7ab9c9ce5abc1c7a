# The whole set-up on a fresh machine is `make demo` or `make test`: each
# creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FUZZ_SECONDS ?= 300
# What mypy --strict checks.
TYPED := protocol circles scripts bench examples

.PHONY: demo test lint typecheck unit bench fuzz vectors docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/circles demo --buyers 5 --vendors 2

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(VENV)/bin/ruff check protocol circles tests bench examples scripts
	$(VENV)/bin/ruff format --check protocol circles

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(TYPED)

unit: $(STAMP)
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/bench_protocol.py
	$(PY) bench/bench_circle.py
	$(PY) bench/bench_network.py
	$(PY) bench/negmas_compare.py
	$(PY) bench/simulator.py --sizes 1000 --signatures both

fuzz: $(STAMP)
	$(PY) -m pip install --quiet -e '.[fuzz]'
	$(PY) tests/fuzz/fuzz_decode.py -max_total_time=$(FUZZ_SECONDS) tests/fuzz/corpus

docs: $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	$(VENV)/bin/mkdocs build --strict

vectors: $(STAMP)
	$(PY) scripts/make_vectors.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
