#!/usr/bin/env bash
# The README's main job: I-JEPA and TC-JEPA pretrained on the built-in scenes data with the same encoder,
# masks, data and number of steps, each evaluated by frozen probes, then one side-by-side table.
set -euo pipefail
cd "$(dirname "$0")/.."
OJ=${OJ:-.venv/bin/openjepa}
$OJ pretrain configs/ijepa/demo.yaml --out runs/demo-ijepa --overwrite "$@"
$OJ pretrain configs/tcjepa/demo.yaml --out runs/demo-tcjepa --overwrite eval.random_baseline=false "$@"
echo
$OJ compare runs/demo-ijepa runs/demo-tcjepa --names I-JEPA TC-JEPA --out runs/demo-comparison.txt
echo "(table saved to runs/demo-comparison.txt; curves in runs/demo-*/training_curves.png)"
