# The two README commands. Both create or reuse .venv (see scripts/bootstrap.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo demo-compare demo-video test lint setup

setup:
	bash scripts/bootstrap.sh dev,text,video

## Main job (13.5 minutes on an idle 2-core CPU): I-JEPA on the built-in scenes, then the calibrated probe report.
demo: setup
	bash scripts/demo.sh

## TC-JEPA and CLIP at the I-JEPA demo's training FLOPs (22.5 minutes more), then one side-by-side table.
demo-compare: setup
	bash scripts/demo_compare.sh

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
