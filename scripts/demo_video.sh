#!/usr/bin/env bash
# `make demo-video`: V-JEPA and SALT (a V-Pixel teacher, then a student of the frozen teacher) on the built-in
# sprites videos with the same encoder, masks, data and total training FLOPs (SALT's teacher + student =
# V-JEPA), each evaluated by frozen probes (attentive probe beside the average-pooled linear probe; motion
# direction, speed, digit, count), then one side-by-side table.
set -euo pipefail
cd "$(dirname "$0")/.."
OJ=${OJ:-.venv/bin/openjepa}
$OJ pretrain configs/vjepa/demo.yaml --out runs/demo-vjepa --overwrite "$@"
$OJ pretrain configs/salt/demo-teacher.yaml --out runs/salt-demo-teacher --overwrite --no-eval "$@"
$OJ pretrain configs/salt/demo-student.yaml --out runs/demo-salt --overwrite teacher.checkpoint=runs/salt-demo-teacher "$@"
echo
$OJ compare runs/demo-vjepa runs/demo-salt --names V-JEPA SALT --out runs/demo-video-comparison.txt
echo "(table saved to runs/demo-video-comparison.txt; curves in runs/demo-vjepa/ and runs/demo-salt/)"
