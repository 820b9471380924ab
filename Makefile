# The two README commands. Both create or reuse .venv (see scripts/bootstrap.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo demo-ijepa demo-video test lint setup

setup:
	bash scripts/bootstrap.sh dev,text,video

## Main job (about 25 minutes on 2 CPU cores): I-JEPA and TC-JEPA on the built-in scenes, one probe table.
demo: setup
	bash scripts/demo.sh

## I-JEPA alone (about 11 minutes on 2 CPU cores): pretraining + the calibrated probe report.
demo-ijepa: setup
	$(VENV)/bin/openjepa pretrain configs/ijepa/demo.yaml --out runs/demo-ijepa --overwrite

## V-JEPA (17 min on 2 CPU cores with its probe report), then SALT's two stages at the same training FLOPs (17 min).
demo-video: setup
	bash scripts/demo_video.sh

## The whole test suite (what CI runs) plus the linter.
test: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/lint-imports
