#!/usr/bin/env bash
# The GPU checks of issue #2, as one script for a short lease of a GPU machine:
#   1. a short real training run on CUDA (bf16 autocast, fused AdamW, regional torch.compile, loader workers);
#   2. the I-JEPA step benchmark at the ViT-H/14 recipe (224 px, batch 128, faithful masks), eager and compiled,
#      with the host-synchronization check.
# Usage: OUT=/tmp/out bash benchmarks/gpu_check.sh   (results as JSON lines in $OUT/bench.jsonl)
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

echo "== 1. short CUDA training run"
echo "{}" > "$OUT/empty.yaml"
timeout 240 $PY -m openjepa pretrain "$OUT/empty.yaml" --out "$OUT/run" --no-eval --overwrite \
  model.arch=vit_tiny model.patch_size=8 data.image_size=64 data.train_size=4096 data.batch_size=128 \
  data.num_workers=6 train.epochs=2 optim.warmup_epochs=0.5 train.compile=true train.log_every=8 \
  train.rankme_every=32 train.progress=false mask.min_keep=4 2>&1 | tail -5
tail -n 2 "$OUT/run/metrics.jsonl"

echo "== 2. ViT-H/14 I-JEPA step, batch 128, faithful masks"
B="$PY benchmarks/train_step.py configs/ijepa/vith14-in1k.yaml --device cuda --mask-mode faithful --json"
timeout 150 $B --steps 10 --warmup 3 --check-sync | tee -a "$OUT/bench.jsonl"
timeout 300 $B --steps 15 --warmup 8 --compile | tee -a "$OUT/bench.jsonl"
