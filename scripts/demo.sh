#!/usr/bin/env bash
# The README's main job (`make demo`): I-JEPA pretrained on the built-in scenes images, then its calibrated
# probe report (pretrained beside a random-init encoder, raw pixels and a supervised ceiling).
set -euo pipefail
cd "$(dirname "$0")/.."
OJ=${OJ:-.venv/bin/openjepa}
$OJ pretrain configs/ijepa/demo.yaml --out runs/demo-ijepa --overwrite "$@"
echo "(report saved to runs/demo-ijepa/eval.txt; curves in runs/demo-ijepa/training_curves.png;"
echo " I-JEPA vs TC-JEPA vs CLIP at the same training FLOPs: make demo-compare)"
