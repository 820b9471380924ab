#!/usr/bin/env bash
# GPU timing of TC-JEPA's step against I-JEPA's (issue #3): ViT-L/16 and ViT-B/16 at 224 px, batch 128,
# cached caption embeddings (N=8 captions x 32 words, 384-d), eager and with regional torch.compile. The eager
# ViT-L/16 TC-JEPA run also reports its 25 costliest operators. JSON lines in $OUT/bench.jsonl.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
B="$PY benchmarks/train_step.py configs/ijepa/vitb16-in1k.yaml --device cuda --json --steps 10 --warmup 3"
L="model.arch=vit_large model.pred_depth=12"
for size in "$L" ""; do
  for c in "" "--compile"; do
    for m in ijepa tcjepa; do
      prof=""; [ "$m$c" = tcjepa ] && [ -n "$size" ] && prof="--profile 2"
      # shellcheck disable=SC2086
      timeout 150 $B $c $prof method=$m text.num_captions=8 $size | tee -a "$OUT/bench.jsonl"
    done
  done
done
