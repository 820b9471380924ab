#!/usr/bin/env bash
# The experiments of docs/RESULTS.md, run one after the other on the CPU.
#   bash scripts/experiments.sh [group...]
#   scenes (images):  cpu-small seeds ablations stability stability-context   (about 3 hours on 2 cores)
#   sprites (video):  video-seeds frames-seeds salt-seeds salt-teachers salt-split
#   (default: the scenes groups)
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
    video-seeds)  # V-JEPA demo, 3 seeds (its report carries random init, raw pixels, supervised ceiling)
      for s in 0 1 2; do run vjepa-s$s configs/vjepa/demo.yaml train.seed=$s; done ;;
    frames-seeds)  # the single-frame reference: an image encoder of the sprites frames, same budget
      for s in 0 1 2; do run frames-s$s configs/ijepa/sprites-frames.yaml train.seed=$s; done ;;
    salt-seeds)  # SALT at V-JEPA's training FLOPs: V-Pixel teacher, then the student, 3 seeds
      for s in 0 1 2; do
        run salt-teacher-s$s configs/salt/demo-teacher.yaml train.seed=$s eval.after_pretrain=false
        run salt-s$s configs/salt/demo-student.yaml train.seed=$s teacher.checkpoint="$OUT/salt-teacher-s$s"
      done ;;
    *) echo "unknown group $g"; exit 2 ;;
  esac
done
