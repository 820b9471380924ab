#!/usr/bin/env bash
# GPU timing of TC-JEPA's step against I-JEPA's (issue #3): ViT-B/16 and ViT-L/16 at 224 px, batch 128,
# cached caption embeddings (N=8 captions x 32 words, 384-d), eager and with regional torch.compile;
# plus the ViT-H/14 I-JEPA step with `fixed` masks. JSON lines in $OUT/bench.jsonl.
set -uo pipefail
OUT=${OUT:-/tmp/openjepa-gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
B="$PY benchmarks/train_step.py configs/ijepa/vitb16-in1k.yaml --device cuda --json --steps 10 --warmup 3"
L="model.arch=vit_large model.pred_depth=12"
for c in "" "--compile"; do
  for m in ijepa tcjepa; do
    timeout 120 $B $c method=$m text.num_captions=8 | tee -a "$OUT/bench.jsonl"
    timeout 150 $B $c method=$m text.num_captions=8 $L | tee -a "$OUT/bench.jsonl"
  done
done
timeout 150 $PY benchmarks/train_step.py configs/ijepa/vith14-in1k.yaml --device cuda --json --steps 15 --warmup 8 \
  --compile --mask-mode fixed | tee -a "$OUT/bench.jsonl"
