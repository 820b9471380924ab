#!/usr/bin/env bash
# The scenes experiments of docs/RESULTS.md, run one after the other on the CPU (about 3 hours on 2 cores).
#   bash scripts/experiments.sh [group...]    groups: cpu-small seeds ablations stability stability-context
#                                             (default: all)
# Each run folder lands in runs/exp/<name>; scripts/summarize_runs.py turns them into tables and plots.
set -uo pipefail
cd "$(dirname "$0")/.."
OJ=${OJ:-.venv/bin/openjepa}
OUT=${OUT:-runs/exp}
common=(train.progress=false)

run() {  # run NAME CONFIG [overrides...]: skipped when the run already has its evaluation
  local name=$1 cfg=$2; shift 2
  if [ -f "$OUT/$name/eval.json" ]; then echo "[exp] $name: done already"; return; fi
  echo "[exp] $name: $cfg $*"
  $OJ pretrain "$cfg" --out "$OUT/$name" --overwrite "${common[@]}" "$@" > "$OUT/$name.log" 2>&1 \
    || echo "[exp] $name FAILED (see $OUT/$name.log)"
}

mkdir -p "$OUT"
groups=("$@"); [ ${#groups[@]} -eq 0 ] && groups=(cpu-small seeds ablations stability stability-context)
for g in "${groups[@]}"; do
  case $g in
    cpu-small)
      run ijepa-cpu-small configs/ijepa/cpu-small.yaml ;;
    seeds)
      for s in 0 1 2; do
        run ijepa-s$s configs/ijepa/demo.yaml train.seed=$s
        run tcjepa-s$s configs/tcjepa/demo.yaml train.seed=$s
        run clip-s$s configs/clip/demo.yaml train.seed=$s
      done ;;
    ablations)  # TC-JEPA variants, seed 0 (compare with tcjepa-s0)
      run tc-noreg configs/tcjepa/demo.yaml tcjepa.sparse_weight=0 tcjepa.consistency_weight=0
      run tc-onelayer configs/tcjepa/demo.yaml "tcjepa.layers=[3]"
      run tc-n1 configs/tcjepa/demo.yaml text.num_captions=1
      run tc-n8 configs/tcjepa/demo.yaml text.num_captions=8
      run tc-meanpool configs/tcjepa/demo.yaml tcjepa.pooling=mean ;;
    stability)  # context / target block-scale ranges, I-JEPA vs TC-JEPA, seed 0 (the default is the seeds row)
      for m in ijepa tcjepa; do
        run $m-small-targets configs/$m/demo.yaml "mask.target_scale=[0.05,0.1]"
        run $m-large-targets configs/$m/demo.yaml "mask.target_scale=[0.25,0.35]"
      done ;;
    stability-context)  # a smaller context block (the default is [0.85, 1.0])
      for m in ijepa tcjepa; do
        run $m-small-context configs/$m/demo.yaml "mask.context_scale=[0.4,0.6]"
      done ;;
    *) echo "unknown group $g"; exit 2 ;;
  esac
done
