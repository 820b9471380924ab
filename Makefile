# The two README commands. Both create or reuse .venv (see scripts/bootstrap.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint setup

setup:
	bash scripts/bootstrap.sh dev,text

## Main job: demo pretraining of I-JEPA on the built-in scenes data, then the probe report.
demo: setup
	$(VENV)/bin/openjepa demo --out runs/demo

## The whole test suite (what CI runs) plus the linter.
test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
