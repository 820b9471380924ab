#!/usr/bin/env bash
# `make demo-compare`: TC-JEPA and CLIP on the demo's images (with their captions) at the I-JEPA demo's
# training FLOPs, then one side-by-side table. The I-JEPA demo run is reused when `make demo` left it and no
# overrides are given; the reference rows (pixels, supervised ceiling) are read from the evaluation cache.
set -euo pipefail
cd "$(dirname "$0")/.."
OJ=${OJ:-.venv/bin/openjepa}
if [ $# -eq 0 ] && [ -f runs/demo-ijepa/eval.json ]; then
  echo "(reusing the I-JEPA demo in runs/demo-ijepa)"
else
  $OJ pretrain configs/ijepa/demo.yaml --out runs/demo-ijepa --overwrite "$@"
fi
$OJ pretrain configs/tcjepa/demo.yaml --out runs/demo-tcjepa --overwrite eval.random_baseline=false "$@"
$OJ pretrain configs/clip/demo.yaml --out runs/demo-clip --overwrite eval.random_baseline=false "$@"
echo
$OJ compare runs/demo-ijepa runs/demo-tcjepa runs/demo-clip --names I-JEPA TC-JEPA CLIP --out runs/demo-comparison.txt
echo "(table saved to runs/demo-comparison.txt; curves in runs/demo-*/training_curves.png)"
