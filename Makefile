# haven: `make demo` runs a local 3-node cluster; `make test` passes the tests. Both install what they need.
SHELL := /bin/bash
VENV ?= $(shell scripts/venv-dir)
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help setup setup-test demo test lint unit test-long bench clean

help:
	@echo "make demo       set up, then run a local 3-node cluster on the embedded Raft DCS (Ctrl-C stops it)"
	@echo "make test       set up, then run the linters and every test (what CI runs)"
	@echo "make test-long  repetitions and long fault matrices"
	@echo "make bench      failover, switchover and footprint benchmarks"

setup:
	scripts/setup.sh --venv "$(VENV)"

setup-test:
	scripts/setup.sh --venv "$(VENV)" --test

demo: setup
	$(PY) scripts/demo.py

lint:
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

unit:
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

test: setup-test lint
	CI=$${CI:-true} $(PY) -m pytest -q -m "not long" $(PYTEST_ARGS) tests

test-long: setup-test
	CI=$${CI:-true} $(PY) -m pytest -q -m long $(PYTEST_ARGS) tests

bench: setup-test
	scripts/setup.sh --venv "$(VENV)" --bench
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache
